"""How corpus entries look for a bug: by exploring a scenario, or by running a machine.

``explored`` runs a named scenario under the default strategy (optimal DPOR:
every schedule). The others boot a small machine (the scenarios'
``small_topology``, or one written out where it is used) and look at what Linux
would show: a kernel log line, an IRQ disabled, a device unbound, an error out
of a driver's remove.
"""

from __future__ import annotations

from vmdsim.check.explore import explore
from vmdsim.check.scenario import find
from vmdsim.errors import VmdsimError
from vmdsim.history.corpus import Finding
from vmdsim.kernel.printk import dmesg
from vmdsim.sim.system import System, boot
from vmdsim.topology import parse


def explored(scenario: str, *, max_steps: int | None = None, **options: str) -> Finding:
    """The scenario's verdict over every schedule (optimal DPOR); ``max_steps``: the
    budget of one execution, past which it is a livelock."""
    program = find(scenario).program(**options)
    if max_steps is not None:
        program.max_steps = max_steps
    r = explore(program, "dpor", minimize=False)  # the verdict is all a probe needs
    if r.verdict == "safe":
        return Finding("safe", f"{r.stats.executions} executions, every schedule")
    return Finding(r.verdict, _first_line(str(r.as_dict()["message"])))


def _first_line(text: str) -> str:
    return text.strip().splitlines()[0] if text.strip() else ""


def booted(text: str, name: str, **kwargs: object) -> System:
    """Boot a topology given as TOML text (``name`` is what errors call it)."""
    return boot(parse(text, name), **kwargs)  # type: ignore[arg-type]


def logged(system: System, *needles: str) -> list[str]:
    """The kernel log lines that contain any of ``needles``."""
    return [line for line in dmesg(system.k) if any(n in line for n in needles)]


def failure(e: VmdsimError) -> Finding:
    """A model error raised by the code under test, as a finding."""
    kind = getattr(e, "kind", None) or type(e).__name__
    return Finding(str(kind), _first_line(str(e)))
