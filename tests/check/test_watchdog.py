"""Code that never reaches a scheduling point ends as a livelock or a setup error,
never as a hang: a periodic timer sees that the step count stopped moving."""

from __future__ import annotations

import time
from types import SimpleNamespace

import pytest

from vmdsim.check.explore import explore
from vmdsim.check.program import Program, SetupError, World
from vmdsim.kernel.core import Kernel
from vmdsim.kernel.shared import KObject, shared


class Flag(KObject):
    flag = shared()

    def __init__(self) -> None:
        self.__dict__.update(flag=0)


def _spins_on_a_local(w) -> None:
    w.f.flag = 1  # one step, then a loop that touches nothing shared
    n = 0
    while True:
        n += 1


def test_a_thread_that_loops_without_a_scheduling_point_is_a_livelock():
    prog = Program("local-loop", lambda: SimpleNamespace(k=Kernel(1), f=Flag()),
                   lambda w: [(0, lambda: _spins_on_a_local(w), "looper")])
    prog.step_seconds = 1.0
    t0 = time.monotonic()
    r = explore(prog, minimize=False)
    assert r.verdict == "livelock"
    assert "looper ran for 1 s without reaching a scheduling point" in str(
        r.counterexample.failure)
    assert time.monotonic() - t0 < 30


def test_a_setup_that_never_returns_is_a_setup_error():
    def forever():
        while True:
            pass

    prog = Program("stuck-setup", forever, lambda w: [])
    prog.setup_seconds = 1.0
    with pytest.raises(SetupError, match="did not finish within 1 s"):
        World(prog)


def test_a_run_that_ends_normally_is_not_touched():
    prog = Program("plain", lambda: SimpleNamespace(k=Kernel(1), f=Flag()),
                   lambda w: [(0, lambda: setattr(w.f, "flag", 1), "writer")])
    prog.step_seconds = 0.5
    assert explore(prog).verdict == "safe"
