"""``vmdsim run``, ``lspci``, ``interrupts``, ``balance``, ``policies``: the system commands."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING

import click

from vmdsim.cli_history import (
    KERNEL,
    VARIANT,
    announce_variants,
    check_era_devices,
    era_options,
)
from vmdsim.errors import VmdsimError

if TYPE_CHECKING:
    from vmdsim.sim.measure import Measurements
    from vmdsim.sim.system import System
    from vmdsim.sim.workload import Load, Outcome

TOPOLOGY = click.argument("topology", required=False, type=click.Path(dir_okay=False))


def _system(topology: str | None, protocol: str | None = None, policy: str | None = None,
            desc_free: str | None = None, lockdep: bool = False,
            vmd_params: tuple[str, ...] = (), announce: bool = True) -> System:
    """Boot TOPOLOGY (as the --kernel release would); every declared device that did not
    come up bound is said on stderr."""
    from vmdsim import boot

    protocol, policy, desc, vmd_options = era_options(protocol, policy, desc_free,
                                                      _vmd_options(vmd_params))
    try:
        system = boot(topology, protocol=protocol, policy=policy, desc_free=desc,
                      lockdep=lockdep, vmd_options=vmd_options)
    except VmdsimError as e:
        kind = getattr(e, "kind", None)
        if kind is None:
            raise  # the input: exit 2
        # The kernel found a bug of its own while booting (a --variant's or a release's
        # code): a finding about the machine, exit 1.
        announce_variants()
        click.echo(f"vmdsim: the kernel failed while booting ({kind}):", err=True)
        for line in str(e).splitlines():
            click.echo(f"  {line}", err=True)
        sys.exit(1)
    check_era_devices(system.machine)
    if announce:
        announce_variants()
    for u in system.unbound:
        click.echo(f"vmdsim: warning: {u}", err=True)
    return system


VMD_PARAM = click.option(
    "--vmd-param", "vmd_params", multiple=True, metavar="NAME=VALUE",
    help="a vmd module option selecting the RFC v3's code: handler=chained, "
         "remove=rfc-v3, parent=linear (repeatable)")


def _vmd_options(params: tuple[str, ...]) -> dict[str, str]:
    out = {}
    for p in params:
        name, eq, value = p.partition("=")
        if not eq or not name or not value:
            raise VmdsimError(f"--vmd-param {p!r}: write NAME=VALUE, e.g. handler=chained")
        out[name.strip()] = value.strip()
    return out


def _exit_if_unbound(system: System, allow: bool) -> None:
    if system.unbound and not allow:
        announce_variants()  # a finding, not a refusal: say what code found it
        click.echo(f"vmdsim: {len(system.unbound)} declared device(s) are not bound to their "
                   "driver (see above; --allow-unbound runs anyway)", err=True)
        sys.exit(1)


ALLOW_UNBOUND = click.option("--allow-unbound", is_flag=True,
                             help="go on when declared devices did not bind (else exit 1)")


def _load_options(fn: Callable[..., None]) -> Callable[..., None]:
    for opt in reversed([
        click.option("--rate", default=2000.0, show_default=True,
                     help="completions per second per I/O queue (simulated time)"),
        click.option("--duration", "duration_ms", default=20.0, show_default=True,
                     help="simulated milliseconds"),
        click.option("--interrupts", type=int, default=None,
                     help="stop after this many completions in all"),
        click.option("--hotplug", default="", metavar="SCRIPT",
                     help="e.g. '5:remove:vmd0.rp1,12:insert:vmd0.rp1'"),
        click.option("--seed", default=0, show_default=True),
    ]):
        fn = opt(fn)
    return fn


def _load(rate: float, duration_ms: float, interrupts: int | None, hotplug: str,
          seed: int) -> Load:
    from vmdsim.sim.workload import Load, check_load_options, parse_hotplug

    load = Load(rate=rate, duration_ms=duration_ms, interrupts=interrupts, seed=seed,
                hotplug=parse_hotplug(hotplug))
    check_load_options(load)  # what no machine can run is refused before booting one
    return load


def _run_with_progress(system: System, load: Load, quiet: bool) -> Outcome:
    from vmdsim.sim.workload import run_load

    if quiet or not sys.stderr.isatty():
        return run_load(system, load)
    from rich.progress import Progress

    with Progress(transient=True) as bar:
        task = bar.add_task("interrupt load", total=load.duration_ms)
        return run_load(system, load, progress=lambda now: bar.update(task, completed=now))


def _check_plot_path(plot: str) -> None:
    """Refuse a --plot file that cannot be written, before anything runs."""
    from pathlib import Path

    from matplotlib.figure import Figure

    p = Path(plot)
    if not p.parent.is_dir():
        raise VmdsimError(f"--plot {plot}: no folder {str(p.parent)!r} to write it in")
    kinds = Figure().canvas.get_supported_filetypes()
    if p.suffix.lstrip(".").lower() not in kinds:
        raise VmdsimError(f"--plot {plot}: the name must end in one of "
                          f"{', '.join('.' + k for k in sorted(kinds))}")


def _lockdep_reports(system: System) -> list[str]:
    lockdep = system.k.sched.lockdep
    return [str(r) for r in lockdep.reports] if lockdep is not None else []


def _exit_if_lockdep(system: System) -> None:
    reports = _lockdep_reports(system)
    for text in reports:
        click.echo(f"vmdsim: lockdep: {text}", err=True)
    if reports:
        sys.exit(1)


def _kernel_errors(system: System) -> list[str]:
    from vmdsim.kernel.printk import KERN_ERR, dmesg

    return dmesg(system.k, range(KERN_ERR + 1))


def _exit_if_lost(m: Measurements) -> None:
    if m.lost_interrupts:
        where = ", ".join(f"{x.queue} {x.count}" for x in m.accounting.lost_by_queue)
        click.echo(f"vmdsim: {m.lost_interrupts} completion(s) lost: {where}", err=True)
        sys.exit(1)


def register(main: click.Group) -> None:
    @main.command()
    @TOPOLOGY
    @click.option("--protocol", help="VMD demux teardown protocol (srcu, kfree-rcu, "
                  "synchronize-rcu, rfc-v3, spinlock)")
    @click.option("--policy", help="VMD vector-assignment policy (see `vmdsim policies`)")
    @click.option("--desc-free", "desc_free", type=click.Choice(["rcu", "immediate"]),
                  help="IRQ descriptor freeing [default: rcu, or the --kernel release's]")
    @_load_options
    @click.option("--json", "as_json", is_flag=True, help="machine-readable output")
    @click.option("--lockdep", is_flag=True,
                  help="validate lock order (exit 1 on a possible deadlock)")
    @VMD_PARAM
    @VARIANT
    @KERNEL
    @ALLOW_UNBOUND
    def run(topology: str | None, protocol: str | None, policy: str | None,
            desc_free: str | None, rate: float, duration_ms: float, interrupts: int | None,
            hotplug: str, seed: int, as_json: bool, lockdep: bool, vmd_params: tuple[str, ...],
            variants: tuple[str, ...], kernel: str | None, allow_unbound: bool) -> None:
        """Boot TOPOLOGY (default: the built-in machine), drive interrupt load, show the result.

        Exit status 1 if a declared device did not come up bound to its driver (unless
        --allow-unbound), or if any completion was lost (each one is listed)."""
        from vmdsim.sim.measure import measure
        from vmdsim.views.interrupts import proc_interrupts, queue_table, summary, vector_table
        from vmdsim.views.lspci import lspci

        load = _load(rate, duration_ms, interrupts, hotplug, seed)
        system = _system(topology, protocol, policy, desc_free, lockdep, vmd_params,
                         announce=False)
        _exit_if_unbound(system, allow_unbound)
        out = _run_with_progress(system, load, as_json)
        announce_variants()
        m = measure(system, out)
        if not out.posted:
            click.echo("vmdsim: warning: no completion was posted: the load was empty "
                       "(raise --rate or --duration)", err=True)
        if as_json:
            d = m.as_dict()
            d.update(lspci=lspci(system.k).splitlines(), simulated_ms=round(out.sim_ms, 3),
                     hotplug={"removed": out.removed, "inserted": out.inserted},
                     variants=list(variants), kernel=kernel or "6.16",
                     kernel_errors=_kernel_errors(system))
            if lockdep:
                d.update(lockdep=_lockdep_reports(system))
            click.echo(json.dumps(d, indent=2))
            _exit_if_lockdep(system)
            _exit_if_lost(m)
            return
        click.echo(lspci(system.k, as_tree=True))
        click.echo("")
        click.echo(proc_interrupts(system.k))
        click.echo("")
        click.echo(vector_table(m))
        click.echo("")
        click.echo(queue_table(m))
        click.echo("")
        if kernel is not None:
            click.echo(f"kernel {kernel} (--kernel; `vmdsim kernels` says what it changes)")
        click.echo(summary(m))
        errors = _kernel_errors(system)
        if errors:  # what a user would find with `dmesg --level emerg,alert,crit,err`
            click.echo("")
            click.echo(f"kernel log at err and above ({len(errors)} lines):")
            for line in errors:
                click.echo(f"  {line}")
        _exit_if_lockdep(system)
        _exit_if_lost(m)

    @main.command(name="lspci")
    @TOPOLOGY
    @click.option("-t", "as_tree", is_flag=True, help="tree (with -v: names; -n: IDs)")
    @click.option("-v", "verbose", count=True, help="verbose (-vv, -vvv: not modelled yet)")
    @click.option("-n", "numeric", count=True, help="numeric IDs; -nn: names and IDs")
    @click.option("-k", "kernel_drivers", is_flag=True,
                  help="the kernel driver in use and its module")
    @click.option("-x", "hexdump", count=True,
                  help="config space in hex: 64 bytes, -xxx 256, -xxxx 4096")
    @click.option("-s", "slot", metavar="[[[[DOMAIN]:]BUS]:][SLOT][.[FUNC]]",
                  help="only the devices in that place")
    @click.option("-d", "ids", metavar="[VENDOR]:[DEVICE][:CLASS]",
                  help="only the devices with those IDs")
    @click.option("-D", "domains", is_flag=True,
                  help="show domain numbers (shown anyway: a VMD domain is not 0)")
    @VARIANT
    @KERNEL
    def lspci_cmd(topology: str | None, as_tree: bool, verbose: int, numeric: int,
                  kernel_drivers: bool, hexdump: int, slot: str | None, ids: str | None,
                  domains: bool, variants: tuple[str, ...], kernel: str | None) -> None:
        """lspci of TOPOLOGY once booted with every driver bound (pciutils' formats)."""
        from vmdsim.views.lspci import check_flags, lspci

        check_flags(as_tree=as_tree, verbose_=verbose, hexdump_=hexdump, slot=slot, ids=ids)
        k = _system(topology).k
        text = lspci(k, as_tree=as_tree, verbose_=verbose, numeric=numeric,
                     kernel=kernel_drivers, hexdump_=hexdump, slot=slot, ids=ids)
        if text:  # (a selection that matches nothing prints nothing, as lspci)
            click.echo(text + ("\n" if verbose or hexdump else ""))

    @main.command()
    @TOPOLOGY
    @click.option("-l", "--level", "level", metavar="LIST",
                  help="only these levels, e.g. err,warn (emerg alert crit err warn notice "
                       "info debug)")
    @VARIANT
    @KERNEL
    def dmesg(topology: str | None, level: str | None, variants: tuple[str, ...],
              kernel: str | None) -> None:
        """The kernel log of booting TOPOLOGY: what each driver found, bound or refused."""
        from vmdsim.kernel.printk import dmesg as kernel_log
        from vmdsim.kernel.printk import parse_levels

        try:
            levels = parse_levels(level) if level is not None else None
        except ValueError as e:
            raise VmdsimError(f"--level {level}: {e}") from None
        for line in kernel_log(_system(topology).k, levels):
            click.echo(line)

    @main.command()
    @TOPOLOGY
    @click.option("--policy", help="VMD vector-assignment policy")
    @VMD_PARAM
    @VARIANT
    @KERNEL
    def interrupts(topology: str | None, policy: str | None,
                   vmd_params: tuple[str, ...], variants: tuple[str, ...],
                   kernel: str | None) -> None:
        """/proc/interrupts of TOPOLOGY once booted, with each child IRQ's VMD vector."""
        from vmdsim.views.interrupts import proc_interrupts

        click.echo(proc_interrupts(_system(topology, policy=policy, vmd_params=vmd_params).k))

    @main.command(name="sysfs")
    @TOPOLOGY
    @VARIANT
    @KERNEL
    def sysfs_cmd(topology: str | None, variants: tuple[str, ...],
                  kernel: str | None) -> None:
        """The links of /sys/bus/pci of TOPOLOGY once booted: devices, drivers, and each
        VMD's domain link."""
        from vmdsim.views.sysfs import sysfs

        click.echo(sysfs(_system(topology).k))

    @main.command(name="irq-domains")
    @TOPOLOGY
    @VMD_PARAM
    @VARIANT
    @KERNEL
    def irq_domains_cmd(topology: str | None, vmd_params: tuple[str, ...],
                        variants: tuple[str, ...], kernel: str | None) -> None:
        """/sys/kernel/debug/irq/domains/* of TOPOLOGY once booted (and what an RFC parent
        domain, --vmd-param parent=linear, costs)."""
        from vmdsim.views.irq_domains import irq_domains

        click.echo(irq_domains(_system(topology, vmd_params=vmd_params).k))

    @main.command()
    def policies() -> None:
        """The VMD vector-assignment policies and teardown protocols."""
        from vmdsim.drivers.vmd.demux import DEFAULT_PROTOCOL, PROTOCOLS
        from vmdsim.drivers.vmd.policies import DEFAULT_POLICY, POLICIES

        click.echo("policies (--policy):")
        for name, pol in POLICIES.items():
            default = " (default)" if name == DEFAULT_POLICY else ""
            click.echo(f"  {name}{default}: {pol.summary}")
        click.echo("protocols (--protocol):")
        for name, proto in PROTOCOLS.items():
            default = " (default)" if name == DEFAULT_PROTOCOL else ""
            click.echo(f"  {name}{default}: {proto.summary}")

    @main.command()
    @TOPOLOGY
    @click.option("--policy", "policies_", default="modulo,least-loaded,affinity,rebalance",
                  show_default=True, help="comma-separated policies to compare")
    @_load_options
    @click.option("--plot", type=click.Path(dir_okay=False), help="write a PNG comparison")
    @click.option("--json", "as_json", is_flag=True, help="machine-readable output")
    @ALLOW_UNBOUND
    def balance(topology: str | None, policies_: str, rate: float, duration_ms: float,
                interrupts: int | None, hotplug: str, seed: int, plot: str | None,
                as_json: bool, allow_unbound: bool) -> None:
        """Run the same load and hot-plug churn under each policy and compare them.

        Exit status 1 as for ``run``: devices that did not bind, or completions lost
        under any policy."""
        from vmdsim.sim.balance import compare, comparison_table, plot_comparison

        names = [p.strip() for p in policies_.split(",") if p.strip()]
        if not names:
            raise VmdsimError("--policy: name at least one policy")
        if plot:
            _check_plot_path(plot)
        load = _load(rate, duration_ms, interrupts, hotplug, seed)
        first = _system(topology, policy=names[0])
        _exit_if_unbound(first, allow_unbound)
        rows = compare(topology, names, load, first=first)
        if plot:
            plot_comparison(rows, plot)
        if as_json:
            click.echo(json.dumps([m.as_dict() | {"vectors": None, "queues": None}
                                   for m in rows], indent=2))
        else:
            click.echo(comparison_table(rows))
            if plot:
                click.echo(f"plot written to {plot}")
        for m in rows:
            _exit_if_lost(m)
