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

from vmdsim.check.dpor import Stats, root_steps
from vmdsim.check.program import Execution, Program, World, run_once
from vmdsim.kernel.controlled import Choice, ControlledScheduler


def preemptive(s: ControlledScheduler, labels: list[str], pick: str) -> bool:
    """Choosing ``pick`` preempts if the thread of the previous step could have gone on."""
    if not s.trace:
        return False
    last = s.trace[-1].thread
    return pick != last and last in labels


def bounded(program: Program, bound: int, *,
            on_execution: Callable[[Execution], bool] | None = None,
            max_executions: int | None = None, only_root: int | None = None,
            world: World | None = None) -> Stats:
    """Every schedule with at most ``bound`` preemptions, depth first, one first choice
    after another (``only_root`` explores just the subtree of that first choice)."""
    world = world or World(program)
    stats = Stats()
    roots = [lab for lab, _ in root_steps(program, world)]
    for k, label in enumerate(roots):
        if only_root is not None and k != only_root:
            continue
        if _bounded_subtree(program, world, bound, label, stats, on_execution, max_executions):
            break
    return stats


def _bounded_subtree(program: Program, world: World, bound: int, first: str, stats: Stats,
                     on_execution: Callable[[Execution], bool] | None,
                     max_executions: int | None) -> bool:
    todo: list[list[str]] = [[first]]
    while todo:
        prefix = todo.pop()
        record: list[tuple[str, list[str], int]] = []  # (chosen, enabled, preemptions so far)

        def chooser(s: ControlledScheduler, choices: list[Choice], prefix: list[str] = prefix,
                    record: list[tuple[str, list[str], int]] = record) -> int:
            labels = [c.label for c in choices]
            d = len(record)
            used = record[-1][2] if record else 0
            if d < len(prefix):
                pick = prefix[d]
            else:  # go on with the same thread if it can, else the first enabled
                last = s.trace[-1].thread if s.trace else None
                pick = last if last in labels else labels[0]
            used += preemptive(s, labels, pick)
            record.append((pick, labels, used))
            return labels.index(pick)

        ex = run_once(program, world, chooser)
        stats.executions += 1
        stats.steps += len(ex.trace)
        if on_execution is not None and on_execution(ex) is False:
            return True
        if max_executions is not None and stats.executions >= max_executions:
            return True
        for pos in range(max(len(prefix), 1), len(record)):
            pick, labels, used = record[pos]
            before = record[pos - 1][2]
            last = ex.trace[pos - 1].thread
            for alt in reversed(labels):
                if alt == pick:
                    continue
                cost = before + (alt != last and last in labels)
                if cost <= bound:
                    todo.append([r[0] for r in record[:pos]] + [alt])
    return False


def pct_run(program: Program, world: World, depth: int, seed: int, run: int,
            length: int) -> Execution:
    """PCT run number ``run`` of ``seed``: its own random stream, so runs split cleanly."""
    rng = random.Random(seed * 1_000_003 + run)
    prio: dict[str, float] = {}
    changes = sorted(rng.sample(range(1, max(length, depth) + 1), depth - 1))
    low = [float(-i) for i in range(depth - 1, 0, -1)]

    def chooser(s: ControlledScheduler, choices: list) -> int:
        labels = [c.label for c in choices]
        for lab in labels:
            if lab not in prio:
                prio[lab] = rng.random() + depth
        if changes and len(s.trace) == changes[0] and s.trace:
            changes.pop(0)
            prio[s.trace[-1].thread] = low.pop()
        best = max(labels, key=lambda lab: prio[lab])
        return labels.index(best)

    return run_once(program, world, chooser)


def pct_length(program: Program, world: World) -> int:
    """k, the number of steps PCT spreads its change points over: one plain run's length."""
    return max(len(run_once(program, world, lambda s, c: 0).trace), 1)


def pct(program: Program, runs: int, depth: int = 2, seed: int = 0, *,
        on_execution: Callable[[Execution], bool] | None = None,
        which: range | None = None, world: World | None = None) -> Stats:
    """``runs`` PCT executions with bug depth ``depth``, seeded (``which``: a subset)."""
    world = world or World(program)
    length = pct_length(program, world)
    stats = Stats()
    for run in which if which is not None else range(runs):
        ex = pct_run(program, world, depth, seed, run, length)
        stats.executions += 1
        stats.steps += len(ex.trace)
        if on_execution is not None and on_execution(ex) is False:
            break
    return stats
