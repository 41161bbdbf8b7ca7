"""Schedules as short strings, and replaying them.

A schedule is the list of labels chosen, one per step. Its string form
groups runs of the same label: ``unbind*4,irq34@cpu1,unbind*2`` means four
steps of ``unbind``, the delivery of vector 34 on CPU1, two more of
``unbind``. Labels are thread names and interrupt deliveries; a name may not
contain ``,`` or ``*``.
"""

from __future__ import annotations

from vmdsim.check.program import Execution, Program, World, run_once
from vmdsim.errors import VmdsimError
from vmdsim.kernel.controlled import ControlledScheduler


class ScheduleError(VmdsimError):
    """A schedule string that does not parse or does not fit the program."""


def encode(labels: list[str]) -> str:
    out: list[str] = []
    i = 0
    while i < len(labels):
        j = i
        while j < len(labels) and labels[j] == labels[i]:
            j += 1
        n = j - i
        out.append(labels[i] if n == 1 else f"{labels[i]}*{n}")
        i = j
    return ",".join(out)


def decode(text: str) -> list[str]:
    labels: list[str] = []
    for pos, part in enumerate(p.strip() for p in text.split(",")):
        if not part:
            raise ScheduleError(f"schedule item {pos + 1} is empty")
        name, star, count = part.partition("*")
        if star:
            if not count.isdigit() or int(count) < 1:
                raise ScheduleError(f"schedule item {pos + 1} ({part!r}): the count after "
                                    "'*' must be a positive number")
            labels.extend([name] * int(count))
        else:
            labels.append(name)
    return labels


def replay(program: Program, schedule: str | list[str], world: World | None = None
           ) -> Execution:
    """Run ``program`` along ``schedule``; once it is used up, the first enabled choice."""
    labels = decode(schedule) if isinstance(schedule, str) else list(schedule)

    def chooser(s: ControlledScheduler, choices: list) -> int:
        d = len(s.trace)
        names = [c.label for c in choices]
        if d < len(labels):
            if labels[d] not in names:
                raise ScheduleError(f"step {d + 1}: {labels[d]!r} cannot run here; "
                                    f"enabled: {', '.join(names)}")
            return names.index(labels[d])
        return 0

    return run_once(program, world or World(program), chooser)


def replay_loose(program: Program, labels: list[str], world: World | None = None) -> Execution:
    """Follow ``labels`` where they can run, skipping those that cannot; then the first
    enabled choice. For searching nearby schedules, not for reproducing one."""
    todo = list(labels)

    def chooser(s: ControlledScheduler, choices: list) -> int:
        names = [c.label for c in choices]
        while todo:
            lab = todo.pop(0)
            if lab in names:
                return names.index(lab)
        return 0

    return run_once(program, world or World(program), chooser)
