"""The explorer on programs whose traces can be counted by hand.

A Mazurkiewicz trace is a class of executions equal up to swapping adjacent
independent steps. With sleep sets the explorer runs exactly one complete
execution per trace; without the reduction it runs every schedule.
"""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from vmdsim.check.dpor import dpor
from vmdsim.check.odpor import odpor
from vmdsim.check.program import Program
from vmdsim.kernel.core import Kernel
from vmdsim.kernel.locking import raw_spinlock_t, spin_lock, spin_unlock
from vmdsim.kernel.shared import KObject, shared


class Vars(KObject):
    x = shared()
    y = shared()
    z = shared()

    def __init__(self) -> None:
        self.__dict__.update(x=0, y=0, z=0)


def program(name, *bodies, ncpus=None):
    """Thread t runs bodies[t](world.v) on CPU t."""
    def setup():
        return SimpleNamespace(k=Kernel(ncpus or len(bodies)), v=Vars(),
                               lock=raw_spinlock_t("l"))

    def threads(w):
        return [(t, (lambda b=b: b(w)), f"T{t}") for t, b in enumerate(bodies)]

    return Program(name, setup, threads)


def count(prog, reduce=True):
    outcomes = []
    stats = dpor(prog, on_execution=lambda ex: (ex.complete and outcomes.append(ex)) or True,
                 reduce=reduce)
    return stats, outcomes


def w(field):
    return lambda wd: setattr(wd.v, field, 1)


def r(field):
    return lambda wd: getattr(wd.v, field)


@pytest.mark.parametrize("name,bodies,traces,schedules", [
    # Two threads writing different variables: everything commutes, one trace.
    # Schedules: each thread takes 2 steps (start, write): C(4,2) = 6.
    ("independent writes", [w("x"), w("y")], 1, 6),
    # Two writes of one variable: two orders, two traces.
    ("write-write", [w("x"), w("x")], 2, 6),
    # A read and a write of one variable: read-before-write or after: two traces.
    ("read-write", [r("x"), w("x")], 2, 6),
    # Two reads: they commute: one trace.
    ("read-read", [r("x"), r("x")], 1, 6),
    # Three writers of x: 3! = 6 orders of the writes.
    ("three writers", [w("x"), w("x"), w("x")], 6, 90),
])
def test_one_execution_per_trace(name, bodies, traces, schedules):
    stats, outs = count(program(name, *bodies))
    assert stats.executions == traces
    assert all(ex.verdict == "safe" for ex in outs)
    full, _ = count(program(name, *bodies), reduce=False)
    assert full.executions == schedules


def _xy(wd):
    wd.v.x = 1
    wd.v.y = 1


def _yx(wd):
    wd.v.y = 2
    wd.v.x = 2


def _locked_increment(wd):
    spin_lock(wd.lock)
    wd.v.x = wd.v.x + 1
    spin_unlock(wd.lock)


def test_two_step_threads_on_a_shared_variable():
    # T0: x=1; y=1   T1: y=2; x=2. A trace is fixed by the order of the two x writes
    # and of the two y writes: 4 combinations, but "T1's x before T0's x" with "T0's y
    # before T1's y" is a cycle (T1.y < T1.x < T0.x < T0.y < T1.y): 3 traces.
    stats, outs = count(program("xy-yx", _xy, _yx))
    assert stats.executions == 3
    finals = {(ex.world.v.__dict__["x"], ex.world.v.__dict__["y"]) for ex in outs}
    assert finals == {(2, 2), (2, 1), (1, 1)}


def test_locked_sections_have_two_traces():
    stats, outs = count(program("locked increments", _locked_increment, _locked_increment))
    assert stats.executions == 2
    assert {ex.world.v.__dict__["x"] for ex in outs} == {2}


@pytest.mark.parametrize("bodies,traces", [
    ([w("x"), w("y")], 1), ([w("x"), w("x")], 2), ([r("x"), w("x")], 2),
    ([r("x"), r("x")], 1), ([w("x"), w("x"), w("x")], 6),
])
def test_optimal_dpor_runs_one_execution_per_trace_and_none_blocked(bodies, traces):
    outs = []
    stats = odpor(program("optimal", *bodies),
                  on_execution=lambda ex: (ex.complete and outs.append(ex)) or True)
    assert stats.executions == traces and stats.blocked == 0
    assert all(ex.verdict == "safe" for ex in outs)


def test_optimal_dpor_on_locked_sections_and_crossed_writes():
    s1 = odpor(program("locked", _locked_increment, _locked_increment))
    s2 = odpor(program("xy-yx", _xy, _yx))
    assert (s1.executions, s1.blocked) == (2, 0)
    assert (s2.executions, s2.blocked) == (3, 0)
