"""Exploration over several processes, with the same verdict and counts as one.

DPOR and bounded search split at the first step: the subtree under each
first choice is explored by itself (``only_root``), exactly as one process
explores it, and the results are added up in first-choice order. PCT splits
its runs, each of which has its own random stream. When the search stops at
a violation, only the work one process would have done before stopping is
counted: subtrees (or runs) before the violating one in full, the violating
one up to its violation. Work done past that by other processes is dropped.

Processes are forked, so a program needs no pickling; the counterexample
comes back as its schedule and is replayed here.
"""

from __future__ import annotations

import multiprocessing
from typing import Any

from vmdsim.check.dpor import Stats, dpor, root_steps
from vmdsim.check.program import Execution, Program, World
from vmdsim.check.schedule import replay
from vmdsim.check.strategies import bounded, pct

_job: dict[str, Any] = {}


def _stop(found: list) -> Any:
    def on_execution(ex: Execution) -> bool:
        if ex.complete and ex.verdict != "safe":
            found.append((ex.labels, ex.verdict))
            return False
        return True
    return on_execution


def _subtree(k: int) -> tuple[Stats, tuple[list[str], str] | None]:
    program, strategy, opts = _job["program"], _job["strategy"], _job["opts"]
    found: list = []
    if strategy == "source-dpor":
        stats = dpor(program, on_execution=_stop(found), only_root=k, reduce=opts["reduce"])
    else:
        stats = bounded(program, opts["bound"], on_execution=_stop(found), only_root=k)
    return stats, (found[0] if found else None)


def _pct_slice(w: int) -> list[tuple[int, int, tuple[list[str], str] | None]]:
    program, opts = _job["program"], _job["opts"]
    out = []
    for run in range(w, opts["runs"], opts["jobs"]):
        found: list = []
        stats = pct(program, opts["runs"], opts["depth"], opts["seed"],
                    on_execution=_stop(found), which=range(run, run + 1))
        out.append((run, stats.steps, found[0] if found else None))
        if found:
            break
    return out


def explore_parallel(program: Program, strategy: str, jobs: int, **opts: Any
                     ) -> tuple[Stats, Execution | None]:
    """Run ``strategy`` over ``jobs`` processes; the stats and the first violation."""
    ctx = multiprocessing.get_context("fork")
    _job.update(program=program, strategy=strategy, opts=dict(opts, jobs=jobs))
    try:
        if strategy == "pct":
            with ctx.Pool(jobs) as pool:
                runs = sorted(r for part in pool.map(_pct_slice, range(jobs)) for r in part)
            stats, first = Stats(), None
            for _run, steps, hit in runs:
                stats.executions += 1
                stats.steps += steps
                if hit is not None:
                    first = hit
                    break
        else:
            n = len(root_steps(program, World(program)))
            with ctx.Pool(min(jobs, max(n, 1))) as pool:
                parts = pool.map(_subtree, range(n))
            stats, first = Stats(), None
            for part, hit in parts:
                stats.add(part)
                if hit is not None:
                    first = hit
                    break
    finally:
        _job.clear()
    if first is None:
        return stats, None
    return stats, replay(program, first[0], exact=False)
