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
    minimize = opts.pop("minimize", False)
    t0 = time.perf_counter()
    r = explore(program, strategy, minimize=minimize, **opts)
    took = time.perf_counter() - t0
    capped = bool(opts.get("max_executions")) and r.verdict == "safe" and \
        r.stats.executions >= opts["max_executions"]
    verdict = f"{r.verdict} (stopped at {CAP})" if capped else r.verdict
    rate = r.stats.steps / took if took else 0.0
    return [label, r.strategy + (", minimised" if minimize else ""), verdict,
            str(r.stats.executions), str(r.stats.blocked), str(r.stats.cut),
            f"{took:.2f}", f"{rate:,.0f}"]


# What source-DPOR printed before issue 10's fixes (README of stop 8), for comparison:
# its "safe" there was not trustworthy (releases were independent of acquisitions, a
# blocked thread's acquisition never entered the analysis).
BEFORE = [
    ["find the seed's race (kfree-rcu, immediate)", "source-dpor, before issue 10",
     "use-after-free", "42", "33", "-", "3.17", "-"],
    ["verify srcu (srcu, rcu descriptors)", "source-dpor, before issue 10", "safe", "451",
     "396", "-", "8.46", "-"],
]
# And at stop 17 (optimal DPOR, before the incremental race analysis and the cut bounded
# search), on this machine: the minimised race 10.3 s, --bound 2 not found in 2000
# executions, srcu verified in 823 executions at about 15,000-19,000 steps/s.
AT_STOP_17 = [
    ["find the seed's race (kfree-rcu, immediate)", "optimal, minimised, at stop 17",
     "use-after-free", "41", "0", "-", "10.3", "-"],
    ["find the seed's race (kfree-rcu, immediate)", "bounded, bound 2, at stop 17",
     f"safe (stopped at {CAP})", "2000", "0", "-", "31.0", "-"],
    ["verify srcu (srcu, rcu descriptors)", "optimal, at stop 17", "safe", "823", "0", "-",
     "15.7", "16,800"],
]

# And at stop 19, the last with device acts' footprints written by hand (one write of
# every BAR and config page on the drive's path): more dependences than the hardware
# has, so more traces.
AT_STOP_19 = [
    ["find the seed's race (kfree-rcu, immediate)", "optimal, minimised, at stop 19",
     "use-after-free", "41", "0", "-", "2.49", "-"],
    ["verify srcu (srcu, rcu descriptors)", "optimal, at stop 19", "safe", "823", "0", "-",
     "12.29", "21,500"],
]


def figures():
    header = ["task", "search", "verdict", "executions", "sleep-set blocked",
              "cut at the bound", "seconds", "steps/s"]
    kaboom = {"protocol": "kfree-rcu", "desc_free": "immediate"}
    today = {"protocol": "srcu", "desc_free": "rcu"}
    find_race = "find the seed's race (kfree-rcu, immediate)"
    verify = "verify srcu (srcu, rcu descriptors)"
    rows = [
        BEFORE[0],
        AT_STOP_17[0],
        AT_STOP_19[0],
        _row(find_race, "optimal", options=kaboom, minimize=True),
        _row(find_race, "optimal", options=kaboom),
        _row(find_race, "source-dpor", options=kaboom),
        _row(find_race, "source-dpor", options=kaboom, reduce=False, max_executions=CAP),
        AT_STOP_17[1],
        _row(find_race, "bounded", options=kaboom, bound=2, max_executions=CAP),
        _row(find_race, "pct", options=kaboom, runs=500),
        BEFORE[1],
        AT_STOP_17[2],
        AT_STOP_19[1],
        _row(verify, "optimal", options=today),
        _row(verify, "source-dpor", options=today),
    ]
    return header, rows


table("explorer: the seed's race and today's protocol", figures)


def estimates():
    """How far optimal DPOR's estimate of the total was from the truth, part way through."""
    from vmdsim.check.dpor import Stats
    from vmdsim.check.odpor import odpor

    header = ["run", "executions in all", "after 1%", "after 10%", "after 50%", "after 90%"]
    rows = []
    for label, opts in (("verify srcu (srcu, rcu descriptors)",
                         {"protocol": "srcu", "desc_free": "rcu"}),
                        ("seed race, no stop at it (kfree-rcu, immediate)",
                         {"protocol": "kfree-rcu", "desc_free": "immediate"})):
        stats, seen = Stats(), []
        odpor(find("seed-teardown").program(**opts), stats=stats,
              on_execution=lambda ex, s=stats, seen=seen: seen.append(s.estimate) or True)
        n = len(seen)
        cells = []
        for share in (0.01, 0.1, 0.5, 0.9):
            guess = seen[max(int(n * share), 1) - 1]
            cells.append(f"{guess:,.0f} ({(guess - n) / n:+.0%})")
        rows.append([label, str(n), *cells])
    return header, rows


table("explorer: the estimate of the total, part way through (optimal DPOR)", estimates)


# One instance of each published family, of a size that takes seconds (the counts are
# checked in tests/check/test_families.py).
FAMILY_SIZES = {"readers": 8, "lastzero": 8, "indexer": 13, "filesystem": 19,
                "fib_bench": 2, "casrot": 6, "n_writers": 4}


def families():
    """Published trace counts beside what optimal DPOR and source-DPOR explore."""
    from vmdsim.check.dpor import dpor
    from vmdsim.check.families import FAMILIES, TRACES
    from vmdsim.check.odpor import odpor

    header = ["program", "published traces", "optimal: executions", "blocked", "s",
              "source-dpor: executions", "blocked", "s"]
    rows = []
    for fam, n in FAMILY_SIZES.items():
        row = [f"{fam}({n})", str(TRACES[fam][n])]
        for explorer in (odpor, dpor):
            t0 = time.perf_counter()
            s = explorer(FAMILIES[fam](n))
            row += [str(s.executions), str(s.blocked), f"{time.perf_counter() - t0:.2f}"]
        rows.append(row)
    return header, rows


table("explorer: the published benchmark families", families)
