"""``vmdsim regressions`` and the ``--variant`` option: the driver's history as commands."""

from __future__ import annotations

import json
import sys

import click


def _apply_variants(ctx: click.Context, param: click.Parameter,
                    value: tuple[str, ...]) -> tuple[str, ...]:
    """Load the variants named and keep them applied until the command returns."""
    if not value:
        return value
    from vmdsim.history import resolve_variants
    from vmdsim.variants import applied

    variants = resolve_variants(value)
    ctx.with_resource(applied(variants))
    for v in variants:
        click.echo(f"vmdsim: variant: {v.target} replaced by {v.where}", err=True)
    return value


VARIANT = click.option(
    "--variant", "variants", multiple=True, metavar="FILE.py|before:NAME",
    callback=_apply_variants, expose_value=True, is_eager=True,
    help="run with these functions replaced: a Python file of @variant functions, or "
         "before:NAME, the code before a corpus entry's fix (repeatable)")


def register(main: click.Group) -> None:
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
            for e in entries:
                click.echo(f"{e.name:<18} {e.commit:<13} {e.fixed_in:<10} {e.subject}")
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
