"""``vmdsim regressions``, ``vmdsim kernels`` and the ``--variant`` and ``--kernel``
options: the driver's history as commands."""

from __future__ import annotations

import json
import sys

import click

ERA = "vmdsim.era"  # ctx.meta key: the Era --kernel chose
SCHEME = "vmdsim.release-scheme"  # ctx.meta key: the interrupt-domain scheme in force, by whom
TARGETS = "vmdsim.variant-targets"  # ctx.meta key: what is replaced already, by whom
NOTES = "vmdsim.variant-notes"  # ctx.meta key: what --variant replaced, not said yet
ANNOUNCED = "vmdsim.variants-announced"  # ctx.meta key: the command got past its refusals
UNCOUNTED = "vmdsim.variant-calls-elsewhere"  # ctx.meta key: calls ran in other processes


def _keep_applied(ctx: click.Context, variants: list, by: str) -> None:
    """Apply ``variants`` until the command returns; two sources replacing one function
    would hide one of them, so that is refused."""
    from vmdsim.variants import VariantError, applied

    taken: dict[str, str] = ctx.meta.setdefault(TARGETS, {})
    for v in variants:
        if v.target in taken:
            raise VariantError(f"{by} and {taken[v.target]} both replace {v.target}; "
                               "leave one of them out")
        taken[v.target] = by
    # On the root context: a sub-command's context is never closed when a later option
    # fails to parse (click makes it with cleanup off), and the variants would stay.
    ctx.find_root().with_resource(applied(variants))


def _apply_variants(ctx: click.Context, param: click.Parameter,
                    value: tuple[str, ...]) -> tuple[str, ...]:
    """Load the variants named and keep them applied until the command returns."""
    if not value:
        return value
    variants = _keep_variant_specs(ctx, value, "--variant")
    ctx.meta[NOTES] = [f"vmdsim: variant: {v.target} replaced by {v.where}" for v in variants]
    ctx.find_root().call_on_close(lambda: _warn_unreached(variants))
    return value


def _keep_variant_specs(ctx: click.Context, specs: tuple[str, ...] | list[str],
                        by: str, sep: str = " ") -> list:
    """Apply the variants ``specs`` name (files, ``before:NAME``) until the command returns,
    each ``before:`` on the interrupt-domain scheme of its fix's release (named to the
    user as ``by``, ``sep`` and the spec)."""
    from vmdsim.history import resolve_variants, variant_releases

    variants = resolve_variants(specs)
    _keep_applied(ctx, variants, by)
    for spec, scheme in variant_releases(specs).items():
        _keep_scheme(ctx, scheme, f"{by}{sep}{spec}")
    return variants


def _warn_unreached(variants: list) -> None:
    """Say which --variant functions the command never called: its result says nothing
    about them (the run took another path: another release's code, a device that is not
    there). Only for a command that ran, in this process."""
    from vmdsim.variants import calls

    meta = click.get_current_context().find_root().meta
    if not meta.get(ANNOUNCED) or meta.get(UNCOUNTED):
        return
    for v in variants:
        if calls(v) == 0:
            click.echo(f"vmdsim: warning: variant {v.target} ({v.where}) was never called: "
                       "this run does not reach the code it replaces", err=True)


def _keep_scheme(ctx: click.Context, scheme: dict[str, str], by: str) -> None:
    """Boot on ``scheme`` (``sim/release.py``) until the command returns: code of one release
    runs only on its own interrupt-domain scheme, so two sources that disagree are refused."""
    from vmdsim.errors import VmdsimError
    from vmdsim.sim.release import release_settings

    held = ctx.meta.get(SCHEME)
    if held is not None:
        if held[0] != scheme:
            have = " ".join(f"{k}={v}" for k, v in held[0].items())
            want = " ".join(f"{k}={v}" for k, v in scheme.items())
            raise VmdsimError(f"{by} runs on the interrupt-domain scheme {want}, "
                              f"{held[1]} on {have}; leave one of them out")
        return
    ctx.meta[SCHEME] = (scheme, by)
    ctx.find_root().with_resource(release_settings(**scheme))


def announce_variants() -> None:
    """Say on stderr which functions --variant replaced, once, when the command has got
    past everything that could refuse it (a refusal is one error line and nothing else)."""
    ctx = click.get_current_context()
    ctx.find_root().meta[ANNOUNCED] = True
    for note in ctx.meta.pop(NOTES, []):
        click.echo(note, err=True)


def _apply_kernel(ctx: click.Context, param: click.Parameter | None,
                  value: str | None) -> str | None:
    """Choose the era and keep its code before later fixes applied."""
    if value is None:
        return value
    from vmdsim.history import REGRESSIONS
    from vmdsim.history.eras import find_era

    era = find_era(value)
    ctx.meta[ERA] = era
    _keep_applied(ctx, era.variants(REGRESSIONS), f"--kernel {era.name}")
    _keep_scheme(ctx, era.release, f"--kernel {era.name}")
    return era.name


def apply_token_settings(options: dict[str, str]) -> None:
    """A replay token's ``kernel=`` and ``variant=``: the code its schedule was found on,
    applied as --kernel and --variant are."""
    ctx = click.get_current_context()
    if "kernel" in options:
        _apply_kernel(ctx, None, options["kernel"])
    if "variant" in options:
        _keep_variant_specs(ctx, options["variant"].split(";"), "the token's variant=", "")


KERNEL = click.option(
    "--kernel", "kernel", metavar="VERSION", callback=_apply_kernel,
    help="run the vmd driver and IRQ core of that release: rfc-v3, 4.5, 4.9, 6.16, 6.17 "
         "or 6.18 (the default; see `vmdsim kernels`)")


def era_options(protocol: str | None, policy: str | None, desc_free: str | None,
                vmd_options: dict[str, str]) -> tuple[str | None, str | None, str,
                                                      dict[str, str]]:
    """The boot options of the command: those given, merged with the --kernel era's (a
    contradiction is an error); ``desc_free`` defaults to ``rcu``."""
    from vmdsim.history.eras import merge_options
    from vmdsim.sim.system import VMD_OPTIONS

    era = click.get_current_context().meta.get(ERA)
    if era is None:
        return protocol, policy, desc_free or "rcu", vmd_options
    given_scheme = vmd_options.get("msi_domain")
    if given_scheme is not None and given_scheme != era.release["msi_domain"]:
        from vmdsim.history.eras import EraError

        raise EraError(f"--vmd-param msi_domain={given_scheme} contradicts --kernel "
                       f"{era.name}, whose vmd ran msi_domain={era.release['msi_domain']}; "
                       "leave one of them out")
    merged = merge_options(era, {"protocol": protocol, "policy": policy,
                                 "desc_free": desc_free, **vmd_options})
    return (merged.get("protocol"), merged.get("policy"), merged.get("desc_free", "rcu"),
            {k: merged[k] for k in VMD_OPTIONS if k in merged})


def check_era_devices(machine: object) -> None:
    """Refuse a machine whose VMD the --kernel era's driver would not have matched."""
    from vmdsim.history.eras import check_devices
    from vmdsim.hw.regs import PCI_DEVICE_ID

    era = click.get_current_context().meta.get(ERA)
    if era is not None:
        vmds = getattr(machine, "vmds", [])
        check_devices(era, [(v.name, v.cfg.hw_read(PCI_DEVICE_ID, 2)) for v in vmds])


VARIANT = click.option(
    "--variant", "variants", multiple=True, metavar="FILE.py|before:NAME",
    callback=_apply_variants, expose_value=True, is_eager=True,
    help="run with these functions replaced: a Python file of @variant functions, or "
         "before:NAME, the code before a corpus entry's fix (repeatable)")


def register(main: click.Group) -> None:
    @main.command()
    def kernels() -> None:
        """The releases --kernel runs, what each changes, and what the model leaves out."""
        from vmdsim.history.eras import DEFAULT_ERA, ERAS, UNMODELLED_ERAS

        for e in ERAS:
            click.echo(f"{e.name}{' (default)' if e.name == DEFAULT_ERA else ''}: {e.summary}")
            opts = " ".join(f"{k}={v}" for k, v in e.options.items())
            click.echo(f"    options: {opts}")
            scheme = " ".join(f"{k}={v}" for k, v in e.release.items())
            click.echo(f"    interrupt domains: {scheme}")
            if e.before:
                click.echo(f"    code before the fixes of: {', '.join(e.before)}")
            if e.device_ids is not None:
                click.echo("    VMD IDs: " + ", ".join(f"8086:{d:04x}" for d in e.device_ids))
            if e.differs:
                click.echo(f"    model: {e.differs}")
        for (major, minor), why in UNMODELLED_ERAS.items():
            click.echo(f"{major}.{minor} and later: not modelled: {why}")

    @main.command()
    @click.argument("names", nargs=-1, metavar="[NAME|COMMIT]...")
    @click.option("--list", "list_only", is_flag=True, help="list the entries, run nothing")
    @click.option("--json", "as_json", is_flag=True, help="machine-readable output")
    def regressions(names: tuple[str, ...], list_only: bool, as_json: bool) -> None:
        """Run the regression corpus: each review point and merged fix of vmd.c, its
        property on the code before the fix and after.

        Exit status 1 if an entry is not reproduced (its property holds before the fix,
        or fails after it)."""
        from vmdsim.history import REGRESSIONS, UNMODELLED, run_regression, select

        entries = select(REGRESSIONS, names)
        if list_only:
            wide = max(len(e.name) for e in entries)
            fixed = max(len(e.fixed_in) for e in entries)
            for e in entries:
                click.echo(f"{e.name:<{wide}}  {e.commit:<12}  {e.fixed_in:<{fixed}}  "
                           f"{e.subject}")
            return
        results = []
        for e in entries:
            r = run_regression(e)
            results.append(r)
            if not as_json:
                _print_result(r)
        failed = [r for r in results if not r.reproduced]
        if as_json:
            click.echo(json.dumps({
                "entries": [r.as_dict() for r in results],
                "reproduced": len(results) - len(failed), "not_reproduced": len(failed),
                "unmodelled": [{"commit": u.commit, "subject": u.subject, "needs": u.needs}
                               for u in (UNMODELLED if not names else [])]}, indent=2))
        else:
            click.echo(f"{len(results)} entries: {len(results) - len(failed)} reproduced "
                       f"(fail before the fix, hold after), {len(failed)} not")
            if not names and UNMODELLED:
                click.echo("")
                click.echo(f"not modelled yet ({len(UNMODELLED)}):")
                for u in UNMODELLED:
                    click.echo(f"  {u.commit:<13} {u.subject}")
                    click.echo(f"  {'':<13} needs: {u.needs}")
        if failed:
            sys.exit(1)


def _print_result(r: object) -> None:
    from vmdsim.history import Result

    assert isinstance(r, Result)
    e = r.entry
    mark = "reproduced" if r.reproduced else "NOT REPRODUCED"
    click.echo(f"{e.name}  {e.commit}  {e.subject}  [{e.fixed_in}]  {mark}")
    click.echo(f"  property: {e.catches}")
    click.echo(f"  before ({e.before.label}): {r.before.verdict}"
               + (f" - {r.before.detail}" if r.before.detail else ""))
    click.echo(f"  after  ({e.after.label}): {r.after.verdict}"
               + (f" - {r.after.detail}" if r.after.detail else ""))
    if e.note:
        click.echo(f"  model: {e.note}")
    click.echo("")
