"""The happens-before order kept across executions, the replay check it makes, and the
estimate of the executions in all.

The explorer keeps the order of the last execution and only extends it with
the steps a new execution adds after their shared prefix. That must give the
same order and the same races as computing it from scratch, and a prefix
that did not repeat (a program that is not deterministic) must stop the
explorer rather than let it reason about steps that never happened.
"""

from __future__ import annotations

import random
from types import SimpleNamespace

import pytest
from randprog import generate

from vmdsim.check.dependence import (
    ExplorerError,
    HappensBefore,
    execution_races,
    happens_before,
    races,
)
from vmdsim.check.dpor import dpor
from vmdsim.check.odpor import odpor
from vmdsim.check.program import Program
from vmdsim.kernel.core import Kernel
from vmdsim.kernel.shared import KObject, shared


def _executions(seed: int, limit: int = 40) -> list:
    out: list = []
    dpor(generate(seed).program(), on_execution=lambda ex: out.append(ex) or len(out) < limit,
         reduce=False)
    return out


@pytest.mark.parametrize("seed", range(12))
def test_extending_after_a_cut_gives_the_order_computed_from_scratch(seed):
    rng = random.Random(seed)
    order = HappensBefore()
    for ex in _executions(seed):
        order.truncate(rng.randint(0, len(order)))
        keep = len(order)
        order.truncate(0)
        order.extend(ex.trace[:keep])
        order.extend(ex.trace[keep:])
        hb, preds = happens_before(ex.trace)
        assert order.hb == hb and order.preds == preds


@pytest.mark.parametrize("seed", range(12))
def test_races_of_the_new_steps_are_those_found_from_scratch(seed):
    order = HappensBefore()
    previous: list = []
    for ex in _executions(seed):
        shared_steps = 0
        while (shared_steps < min(len(previous), len(ex.trace))
               and previous[shared_steps].accesses == ex.trace[shared_steps].accesses
               and previous[shared_steps].thread == ex.trace[shared_steps].thread):
            shared_steps += 1
        trace, hb, found = execution_races(ex.trace, ex.pending, order, shared_steps)
        full_trace, full_hb, full = execution_races(ex.trace, ex.pending)
        assert hb == full_hb and trace == full_trace
        assert found == [(i, j) for i, j in full if j >= shared_steps]
        assert len(order) == len(ex.trace)  # the pending steps are not kept
        previous = ex.trace
    assert races(trace, hb, happens_before(trace)[1], start=len(trace)) == []


class Flag(KObject):
    x = shared()
    y = shared()

    def __init__(self) -> None:
        self.__dict__.update(x=0, y=0)


def test_a_program_that_does_not_repeat_itself_gets_no_verdict():
    runs = {"n": 0}  # outside the world: it survives from one execution to the next

    def setup():
        return SimpleNamespace(k=Kernel(2), f=Flag())

    def writer(w):
        runs["n"] += 1
        w.f.x = 1
        if runs["n"] % 2:
            w.f.y = 1  # every other execution takes another step first
        w.f.x = 2

    def reader(w):
        return w.f.x

    prog = Program("drifts", setup, lambda w: [(0, lambda: writer(w), "W"),
                                               (1, lambda: reader(w), "R")])
    with pytest.raises(ExplorerError, match="not deterministic"):
        odpor(prog)


@pytest.mark.parametrize("seed", range(15))
def test_the_estimate_of_the_total_is_exact_once_the_tree_is_explored(seed):
    from vmdsim.check.dpor import Stats

    stats = Stats()
    seen: list[float] = []
    odpor(generate(seed).program(), stats=stats,
          on_execution=lambda ex: seen.append(stats.estimate) or True)
    assert seen and all(e >= 1 for e in seen)
    assert seen[-1] == pytest.approx(stats.executions + stats.blocked)
