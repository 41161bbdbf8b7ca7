"""The ``vmdsim`` command."""

from __future__ import annotations

import sys
import traceback
from pathlib import Path

import click

from vmdsim.cli_check import register as register_check_commands
from vmdsim.cli_history import TARGETS
from vmdsim.cli_history import register as register_history_commands
from vmdsim.cli_run import register as register_run_commands
from vmdsim.errors import VmdsimError


class _Group(click.Group):
    """Turns vmdsim's own errors, and click's errors about the command line (an unknown
    command or option, a bad value), into one line on stderr and exit status 2."""

    def invoke(self, ctx: click.Context) -> object:
        try:
            return super().invoke(ctx)
        except VmdsimError as e:
            click.echo(f"vmdsim: error: {e}", err=True)
            sys.exit(2)
        except click.ClickException as e:
            where = getattr(e, "ctx", None) or ctx
            message = " ".join(e.format_message().split())
            click.echo(f"{where.command_path}: error: {message} "
                       f"(see '{where.command_path} --help')", err=True)
            sys.exit(2)
        except Exception as e:
            taken = ctx.meta.get(TARGETS)
            if not taken:
                raise  # vmdsim's own bug: let it show
            # With functions replaced (--variant, a --kernel's code before later fixes), the
            # replaced code is the suspect.
            tb = traceback.extract_tb(e.__traceback__)[-1]
            by = ", ".join(sorted(set(taken.values())))
            click.echo(f"vmdsim: error: with the functions of {by} replaced, the run failed: "
                       f"{type(e).__name__}: {e} in {tb.name} "
                       f"({Path(tb.filename).name}:{tb.lineno})", err=True)
            sys.exit(2)


@click.group(cls=_Group)
def main() -> None:
    """A register-level model of the Intel VMD and the Linux machinery that drives it."""


@main.group()
def topology() -> None:
    """Topology files."""


@topology.command()
@click.argument("file", type=click.Path(dir_okay=False))
def validate(file: str) -> None:
    """Check FILE, build the machine it describes and boot it once with every driver:
    every declared device must come up bound to its driver (else exit status 2)."""
    from vmdsim.hw.machine import Machine
    from vmdsim.hw.regs import PCI_DEVICE_ID
    from vmdsim.sim.bindings import as_topology_errors
    from vmdsim.sim.system import boot

    trial = boot(machine=Machine.load(file))
    m = trial.machine  # booting changes no slot, card or vector counted below
    problems = trial.unbound
    if problems:
        for line in as_topology_errors(trial, problems):
            click.echo(f"vmdsim: error: {line}", err=True)
        click.echo(f"vmdsim: error: {file}: {len(problems)} declared device(s) would not "
                   "come up bound to their driver", err=True)
        sys.exit(2)
    empty = sum(1 for rp in m.root_ports if rp.card is None)
    click.echo(f"{file}: ok: {m.ncpus} CPUs, {len(m.vmds)} VMD(s), "
               f"{len(m.root_ports)} root port(s) ({empty} empty slot(s)), "
               f"{len(m.nvmes)} NVMe drive(s)")
    for vmd in m.vmds:
        ports = [rp for rp in m.root_ports if rp.bus is vmd.hidden_bus]
        click.echo(f"  {vmd.name}: device {vmd.cfg.hw_read(PCI_DEVICE_ID, 2):#06x}, "
                   f"{vmd.msix.nvec} MSI-X vectors, {len(ports)} root port(s)")


@topology.command(name="import")
@click.argument("files", nargs=-1, required=True, type=click.Path(dir_okay=False))
@click.option("--cpus", type=click.IntRange(1, 64), default=None,
              help="the machine's CPU count (lspci does not say; 4 otherwise)")
@click.option("-o", "--output", type=click.Path(dir_okay=False), default=None,
              help="write the TOML there (default: standard output)")
def import_(files: tuple[str, ...], cpus: int | None, output: str | None) -> None:
    """A topology of the VMD side of a real machine, from its `lspci -nn` text (or -vnn,
    -nnk, -nnvvv; several FILES are one machine). A comment block at the top lists what
    was guessed and what the model does not build; the result is booted once and every
    device that would not bind is named on stderr."""
    from vmdsim.errors import TopologyError
    from vmdsim.sim.system import boot
    from vmdsim.topology import parse
    from vmdsim.topology_import import import_topology

    sources = []
    for f in files:
        try:
            sources.append((f, Path(f).read_text()))
        except (OSError, ValueError) as e:  # ValueError: a NUL in the name, not UTF-8
            raise TopologyError(f, None, "file", f"cannot read it: {e}") from None
    text = import_topology(sources, cpus)
    trial = boot(parse(text, output or "<imported>"))
    for u in trial.unbound:
        click.echo(f"vmdsim: warning: {u}", err=True)
    if output is None:
        click.echo(text, nl=False)
        return
    try:
        Path(output).write_text(text)
    except (OSError, ValueError) as e:
        raise TopologyError(output, None, "--output", f"cannot write it: {e}") from None


@topology.command()
@click.argument("file", required=False, type=click.Path(dir_okay=False))
def show(file: str | None) -> None:
    """The hardware of FILE (default: the built-in machine) as slots and cards, no OS."""
    from vmdsim.hw.describe import describe_machine
    from vmdsim.hw.machine import Machine

    click.echo(describe_machine(Machine.load(file)))


@topology.command()
def default() -> None:
    """Print the built-in default topology (a starting point for your own)."""
    from importlib import resources

    from vmdsim.topology import DEFAULT_TOPOLOGY

    click.echo(resources.files("vmdsim.topologies").joinpath(DEFAULT_TOPOLOGY).read_text(),
               nl=False)


register_check_commands(main)
register_run_commands(main)
register_history_commands(main)


if __name__ == "__main__":
    main()
