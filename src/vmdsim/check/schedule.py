"""Schedules as short strings, and replaying them.

A schedule is the list of labels chosen, one per step. Its string form
groups runs of the same label: ``unbind*4,irq34@cpu1,unbind*2`` means four
steps of ``unbind``, the delivery of vector 34 on CPU1, two more of
``unbind``. Labels are thread names and interrupt deliveries; the scheduler
refuses thread names with the separators in them, so every printed schedule
parses back. A replay is exact: the schedule must be used up exactly when
the program ends (see :func:`replay`).
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


def decode(text: str, max_steps: int = ControlledScheduler.max_steps) -> list[str]:
    """The labels of ``text``; a schedule longer than ``max_steps`` (no execution can have
    that many steps) is refused before it is expanded."""
    labels: list[str] = []
    for pos, part in enumerate(p.strip() for p in text.split(",")):
        if not part:
            raise ScheduleError(f"schedule item {pos + 1} is empty")
        name, star, count = part.partition("*")
        if not name:
            raise ScheduleError(f"schedule item {pos + 1} ({part!r}) names no thread")
        n = 1
        if star:
            if not count.isdigit() or len(count) > 9 or int(count) < 1:
                raise ScheduleError(f"schedule item {pos + 1} ({part!r}): the count after "
                                    "'*' must be a positive number")
            n = int(count)
        if len(labels) + n > max_steps:
            raise ScheduleError(f"schedule item {pos + 1} ({part!r}): the schedule would be "
                                f"longer than any execution can be ({max_steps} steps)")
        labels.extend([name] * n)
    return labels


def replay(program: Program, schedule: str | list[str], world: World | None = None, *,
           exact: bool = True) -> Execution:
    """Run ``program`` along ``schedule``.

    ``exact`` (what a user's replay is): the schedule must name every step and end
    where the program ends; a schedule cut short, or one with steps left when the
    program is done, is a :class:`ScheduleError` naming the step. Not ``exact`` (a
    prefix an explorer extends): once the schedule is used up, the first enabled
    choice."""
    labels = (decode(schedule, program.max_steps) if isinstance(schedule, str)
              else list(schedule))

    def chooser(s: ControlledScheduler, choices: list) -> int:
        d = len(s.trace)
        names = [c.label for c in choices]
        if d < len(labels):
            if labels[d] not in names:
                raise ScheduleError(f"step {d + 1}: {labels[d]!r} cannot run here; "
                                    f"enabled: {', '.join(names)}")
            return names.index(labels[d])
        if exact:
            raise ScheduleError(f"the schedule ends after step {d} but the program goes on "
                                f"(enabled at step {d + 1}: {', '.join(names)}): it is cut "
                                "short")
        return 0

    ex = run_once(program, world or World(program), chooser)
    if exact and len(ex.trace) < len(labels):
        n = len(ex.trace)
        raise ScheduleError(f"the program ended after step {n} ({ex.verdict}) but the "
                            f"schedule goes on for {len(labels) - n} more, from step {n + 1} "
                            f"({labels[n]!r})")
    return ex


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
