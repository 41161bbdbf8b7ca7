"""Two more ways to pick schedules: preemption bounding (CHESS) and PCT.

*Preemption-bounded* search (Musuvathi & Qadeer, 2007) runs every schedule
that switches away from a thread that could have gone on at most ``bound``
times. Most concurrency bugs need very few preemptions, so a small bound
finds them fast, and the schedules it finds are short to read.

*PCT* (Burckhardt et al., ASPLOS 2010) gives each thread a random priority,
always runs the highest-priority enabled thread, and at ``depth - 1`` random
steps drops the running thread below everyone. A bug of depth d is found by
one run with probability at least 1/(n k^(d-1)) for n threads and k steps.
Runs are reproducible from the seed.
"""

from __future__ import annotations

import random
from collections.abc import Callable

from vmdsim.check.dpor import Stats
from vmdsim.check.program import Execution, Program, World, run_once
from vmdsim.kernel.controlled import ControlledScheduler


def _preemptive(s: ControlledScheduler, labels: list[str], pick: str) -> bool:
    """Choosing ``pick`` preempts if the thread of the previous step could have gone on."""
    if not s.trace:
        return False
    last = s.trace[-1].thread
    return pick != last and last in labels


def bounded(program: Program, bound: int, *,
            on_execution: Callable[[Execution], bool] | None = None,
            max_executions: int | None = None) -> Stats:
    """Every schedule with at most ``bound`` preemptions, depth first, fewest first."""
    world = World(program)
    stats = Stats()
    todo: list[list[str]] = [[]]
    while todo:
        prefix = todo.pop()
        record: list[tuple[str, list[str], int]] = []  # (chosen, enabled, preemptions so far)

        def chooser(s: ControlledScheduler, choices: list, prefix=prefix, record=record):
            labels = [c.label for c in choices]
            d = len(record)
            used = record[-1][2] if record else 0
            if d < len(prefix):
                pick = prefix[d]
            else:  # go on with the same thread if it can, else the first enabled
                last = s.trace[-1].thread if s.trace else None
                pick = last if last in labels else labels[0]
            used += _preemptive(s, labels, pick)
            record.append((pick, labels, used))
            return labels.index(pick)

        ex = run_once(program, world, chooser)
        stats.executions += 1
        stats.steps += len(ex.trace)
        if on_execution is not None and on_execution(ex) is False:
            return stats
        if max_executions is not None and stats.executions >= max_executions:
            return stats
        for pos in range(len(prefix), len(record)):
            pick, labels, used = record[pos]
            before = record[pos - 1][2] if pos else 0
            last = ex.trace[pos - 1].thread if pos else None
            for alt in labels:
                if alt == pick:
                    continue
                cost = before + (pos > 0 and alt != last and last in labels)
                if cost <= bound:
                    todo.append([r[0] for r in record[:pos]] + [alt])
    return stats


def pct(program: Program, runs: int, depth: int = 2, seed: int = 0, *,
        on_execution: Callable[[Execution], bool] | None = None) -> Stats:
    """``runs`` PCT executions with bug depth ``depth``, seeded."""
    rng = random.Random(seed)
    world = World(program)
    stats = Stats()
    length = 50  # a first estimate of k, refined by what runs take
    for _ in range(runs):
        prio: dict[str, float] = {}
        changes = sorted(rng.sample(range(1, max(length, depth) + 1), depth - 1))
        low = [float(-i) for i in range(depth - 1, 0, -1)]

        def chooser(s: ControlledScheduler, choices: list, prio=prio, changes=changes,
                    low=low) -> int:
            labels = [c.label for c in choices]
            for lab in labels:
                if lab not in prio:
                    prio[lab] = rng.random() + depth
            if changes and len(s.trace) == changes[0] and s.trace:
                changes.pop(0)
                prio[s.trace[-1].thread] = low.pop()
            best = max(labels, key=lambda lab: prio[lab])
            return labels.index(best)

        ex = run_once(program, world, chooser)
        stats.executions += 1
        stats.steps += len(ex.trace)
        length = max(length, len(ex.trace))
        if on_execution is not None and on_execution(ex) is False:
            break
    return stats
