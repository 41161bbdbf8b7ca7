"""Enumerate every schedule of a small program under the controlled scheduler.

A plain depth-first walk of the choice tree, with no reduction: the reference
the tests count by hand (and, later, what the explorer's reductions are
measured against).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from vmdsim.kernel.controlled import ControlledScheduler


def every_schedule(run_one: Callable[[Callable], Any]) -> list[Any]:
    """Call ``run_one(chooser)`` once per distinct choice sequence; return the results."""
    results = []
    todo: list[list[int]] = [[]]
    while todo:
        prefix = todo.pop()
        record: list[tuple[int, int]] = []

        def chooser(sched: ControlledScheduler, choices: list, prefix=prefix, record=record):
            i = len(record)
            pick = prefix[i] if i < len(prefix) else 0
            record.append((pick, len(choices)))
            return pick

        results.append(run_one(chooser))
        for pos in range(len(prefix), len(record)):
            taken = [p for p, _ in record[:pos]]
            todo.extend(taken + [alt] for alt in range(1, record[pos][1]))
    return results
