"""The published benchmark families: one complete execution per trace, as many as the
tools that published them report, and none sleep-set blocked.

The counts are GenMC's and Nidhugg's (``vmdsim.check.families.TRACES``); the
programs with a compare-and-exchange are also checked against every schedule,
because a failing exchange only reads and so commutes with another failing
one — a step whose effect depends on the order it runs in, which optimal DPOR
must not take for the effect it had in the order it was first seen.
"""

from __future__ import annotations

import pytest
from randprog import trace_key

from vmdsim.check.dpor import dpor
from vmdsim.check.families import FAMILIES, TRACES, casrot
from vmdsim.check.odpor import odpor

FAST_LIMIT = 300  # traces: the larger instances run with -m slow


def _cases(fast: bool) -> list[tuple[str, int, int]]:
    return [(fam, n, want) for fam, counts in TRACES.items() for n, want in sorted(counts.items())
            if (want <= FAST_LIMIT) == fast and want <= 5000]


@pytest.mark.parametrize("family,n,want", _cases(fast=True))
def test_optimal_dpor_runs_one_execution_per_published_trace(family, n, want):
    stats = odpor(FAMILIES[family](n))
    assert (stats.executions, stats.blocked) == (want, 0)


@pytest.mark.slow
@pytest.mark.parametrize("family,n,want", _cases(fast=False))
def test_optimal_dpor_runs_one_execution_per_published_trace_larger(family, n, want):
    stats = odpor(FAMILIES[family](n))
    assert (stats.executions, stats.blocked) == (want, 0)


@pytest.mark.parametrize("family,n,want", [c for c in _cases(fast=True) if c[2] <= 150])
def test_source_dpor_completes_as_many(family, n, want):
    stats = dpor(FAMILIES[family](n))
    assert stats.executions == want


@pytest.mark.parametrize("n", [2, 3, 4])
def test_exchanges_give_the_traces_of_every_schedule(n):
    every: set = set()
    dpor(casrot(n), on_execution=lambda ex: (ex.complete and every.add(trace_key(ex))) or True,
         reduce=False)
    seen: list = []
    odpor(casrot(n), on_execution=lambda ex: seen.append(trace_key(ex)) or True)
    assert set(seen) == every and len(seen) == len(every) == TRACES["casrot"][n]
