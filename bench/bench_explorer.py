"""The explorer: time and executions to find the seed's race and to verify srcu.

Without partial-order reduction the explorer runs every schedule; the seed's
programs have hundreds of steps, so that search is capped and the table says
where it stopped.
"""

from __future__ import annotations

import time

from run import table
from vmdsim.check.explore import explore
from vmdsim.check.scenario import find

CAP = 2000  # executions a search without reduction may take


def _row(label: str, strategy: str, **opts) -> list[str]:
    seed = find("seed-teardown")
    program = seed.program(**opts.pop("options"))
    t0 = time.perf_counter()
    r = explore(program, strategy, minimize=False, **opts)
    took = time.perf_counter() - t0
    capped = bool(opts.get("max_executions")) and r.verdict == "safe" and \
        r.stats.executions >= opts["max_executions"]
    verdict = f"{r.verdict} (stopped at {CAP})" if capped else r.verdict
    return [label, strategy + ("" if opts.get("reduce", True) else ", no reduction"),
            verdict, str(r.stats.executions), str(r.stats.blocked), f"{took:.2f}"]


def figures():
    header = ["task", "search", "verdict", "executions", "pruned", "seconds"]
    kaboom = {"protocol": "kfree-rcu", "desc_free": "immediate"}
    today = {"protocol": "srcu", "desc_free": "rcu"}
    rows = [
        _row("find the seed's race (kfree-rcu, immediate)", "dpor", options=kaboom),
        _row("find the seed's race (kfree-rcu, immediate)", "dpor", options=kaboom,
             reduce=False, max_executions=CAP),
        _row("find the seed's race (kfree-rcu, immediate)", "bounded", options=kaboom,
             bound=2, max_executions=CAP),
        _row("find the seed's race (kfree-rcu, immediate)", "pct", options=kaboom, runs=500),
        _row("verify srcu (srcu, rcu descriptors)", "dpor", options=today),
        _row("verify srcu (srcu, rcu descriptors)", "dpor", options=today, reduce=False,
             max_executions=CAP),
    ]
    return header, rows


table("explorer: the seed's race and today's protocol", figures)
