"""Verdicts, minimal counterexamples, drawings and replay, on the seed's race in miniature."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from vmdsim.check.explore import explore
from vmdsim.check.program import Program
from vmdsim.check.schedule import ScheduleError, decode, encode, replay
from vmdsim.kernel.core import Kernel
from vmdsim.kernel.rcu import rcu_read_lock, rcu_read_unlock, synchronize_rcu
from vmdsim.kernel.shared import KObject, shared


class vmd_irq(KObject):
    virq = shared()

    def __init__(self, virq: int) -> None:
        self.__dict__["virq"] = virq


class vector(KObject):
    entry = shared()


def miniature(wait: bool) -> Program:
    """CPU0 unpublishes a mapping and frees it (after synchronize_rcu if ``wait``);
    CPU1, the demux handler, reads it under rcu_read_lock."""
    def setup():
        k = Kernel(2)
        vec = vector()
        vec.__dict__["entry"] = k.mem.kzalloc(vmd_irq, 33, owner="vmd")
        return SimpleNamespace(k=k, vec=vec)

    def teardown(w):
        irq = w.vec.entry
        w.vec.entry = None
        if wait:
            synchronize_rcu()
        w.k.mem.kfree(irq)

    def handler(w):
        rcu_read_lock()
        irq = w.vec.entry
        if irq is not None:
            irq.virq  # noqa: B018 - generic_handle_irq(irq->virq)
        rcu_read_unlock()

    def check(w):
        assert not w.k.mem.leaks("vmd"), "the mapping leaked"

    return Program("miniature", setup,
                   lambda w: [(0, lambda: teardown(w), "teardown"),
                              (1, lambda: handler(w), "handler")], check)


@pytest.mark.parametrize("strategy", ["dpor", "bounded", "pct"])
def test_each_strategy_finds_the_use_after_free(strategy):
    r = explore(miniature(False), strategy, runs=200, seed=1)
    assert r.verdict == "use-after-free"
    assert r.counterexample is not None and r.schedule


def test_the_counterexample_is_minimal_and_drawn_as_cpu_columns():
    r = explore(miniature(False))
    drawing = r.drawing()
    head = drawing.splitlines()[0]
    assert head.startswith("CPU0") and "CPU1" in head
    assert "kfree(vmd_irq#" in drawing and "read vmd_irq#" in drawing
    assert "<-- USE-AFTER-FREE: BUG: KASAN: use-after-free in handler" in drawing
    assert "allocated by setup" in drawing and "freed by teardown" in drawing
    # handler reads the entry, teardown runs to the free, handler touches it: two switches
    assert r.as_dict()["context_switches"] == 2


def test_replaying_the_schedule_string_reproduces_the_counterexample():
    r = explore(miniature(False))
    again = replay(miniature(False), r.schedule)
    assert again.verdict == "use-after-free"
    assert str(again.failure) == str(r.counterexample.failure)
    assert [s.thread for s in again.trace] == [s.thread for s in r.counterexample.trace]


def test_with_a_grace_period_every_schedule_is_safe_and_counted():
    r = explore(miniature(True))
    assert r.verdict == "safe" and r.bound == "every schedule"
    full = explore(miniature(True), reduce=False)
    assert full.verdict == "safe"
    assert 0 < r.stats.executions < full.stats.executions


def test_schedule_strings():
    labels = ["a", "a", "a", "irq34@cpu1", "b", "a"]
    assert encode(labels) == "a*3,irq34@cpu1,b,a"
    assert decode("a*3,irq34@cpu1,b,a") == labels
    with pytest.raises(ScheduleError, match="positive number"):
        decode("a*x")
    with pytest.raises(ScheduleError, match="'nobody' cannot run here"):
        replay(miniature(False), "nobody")


@pytest.mark.parametrize("strategy", ["source-dpor", "bounded", "pct"])
@pytest.mark.parametrize("wait", [False, True])
def test_several_processes_give_the_same_verdict_and_counts(strategy, wait):
    # (the default, optimal DPOR, runs in one process; --jobs runs source-DPOR)
    one = explore(miniature(wait), strategy, runs=40, seed=3, minimize=False)
    two = explore(miniature(wait), strategy, runs=40, seed=3, minimize=False, jobs=2)
    assert (two.verdict, two.stats) == (one.verdict, one.stats)
    assert two.schedule == one.schedule


def test_a_snapshot_copy_delivers_interrupts_to_its_own_kernel():
    # The explorer deep-copies the post-setup world; the interrupt controller's sink
    # must follow the copy, or a copied machine would interrupt the original kernel.
    import copy

    from vmdsim.hw.machine import Machine
    from vmdsim.kernel.boot import boot

    m = Machine.load()
    k = Kernel(m.ncpus)
    boot(k, m)
    world = copy.deepcopy(SimpleNamespace(k=k, m=m))
    seen = []
    world.k.sched.handle_irq = lambda v: seen.append(v)
    k.sched.handle_irq = lambda v: seen.append(("original", v))
    world.m.rc.apic.message(0xFEE00000, 0x40)
    assert seen == [0x40]


def test_a_world_tied_to_its_original_by_a_closure_is_set_up_again_instead():
    from vmdsim.check.program import World

    def setup():
        k = Kernel(1)
        box = {"n": 0}
        k.bump = lambda: box.__setitem__("n", box["n"] + 1)  # closes over box
        return SimpleNamespace(k=k, box=box)

    prog = Program("closure", setup, lambda w: [])
    assert not World(prog).copies
    plain = Program("plain", lambda: SimpleNamespace(k=Kernel(1), box={"n": 0}), lambda w: [])
    assert World(plain).copies


class Flag(KObject):
    flag = shared()
    busy = shared()

    def __init__(self) -> None:
        self.__dict__["flag"] = 0
        self.__dict__["busy"] = 0


def _spinner(with_writer: bool, body: str = "reads") -> Program:
    def setup():
        return SimpleNamespace(k=Kernel(2), f=Flag())

    def spin(w):
        while not w.f.flag:
            if body == "stores what is there":
                w.f.busy = 1  # after the first turn a silent store: nothing changes
            elif body == "counts":
                w.f.busy += 1  # the state changes on every turn

    def write(w):
        if with_writer:
            w.f.flag = 1

    return Program("spinner", setup, lambda w: [(0, lambda: spin(w), "spinner"),
                                                (1, lambda: write(w), "writer")])


@pytest.mark.parametrize("body", ["reads", "stores what is there"])
def test_a_spin_loop_that_nothing_ends_is_a_livelock_within_its_spin_budget(body):
    r = explore(_spinner(False, body))
    assert r.verdict == "livelock"
    assert "spinner spins re-reading Flag#" in str(r.counterexample.failure)
    turns = 2 if body == "reads" else 3
    assert len(r.counterexample.trace) < turns * 100 + 10  # its budget, not 200,000 steps


@pytest.mark.parametrize("body", ["reads", "stores what is there"])
def test_a_spin_loop_that_a_write_ends_is_safe(body):
    assert explore(_spinner(True, body)).verdict == "safe"


def test_a_loop_that_changes_state_on_every_turn_ends_at_the_step_budget():
    """Whether such a loop ends is not decidable from its steps: it runs to max_steps."""
    prog = _spinner(False, "counts")
    prog.max_steps = 500
    r = explore(prog)
    assert r.verdict == "livelock" and len(r.counterexample.trace) == 500


def test_the_spin_budget_is_per_program():
    prog = _spinner(False)
    prog.spin_limit = 5
    r = explore(prog)
    assert r.verdict == "livelock" and "(5 repeated steps)" in str(r.counterexample.failure)


def test_a_replay_is_exact_or_an_error_naming_the_step():
    r = explore(miniature(False))
    labels = decode(r.schedule)
    with pytest.raises(ScheduleError, match=rf"ends after step {len(labels) - 1} but the "
                                            "program goes on .*cut short"):
        replay(miniature(False), labels[:-1])
    with pytest.raises(ScheduleError, match=rf"ended after step {len(labels)} "
                                            r"\(use-after-free\) but the schedule goes on for 3"):
        replay(miniature(False), labels + [labels[-1]] * 3)
    # an explorer extending a prefix asks for the loose kind
    assert replay(miniature(False), labels[:1], exact=False).complete


def test_schedules_too_long_for_any_execution_are_refused_before_they_are_expanded():
    with pytest.raises(ScheduleError, match="longer than any execution"):
        decode("a*999999999")
    with pytest.raises(ScheduleError, match="positive number"):
        decode("a*" + "9" * 5000)
    with pytest.raises(ScheduleError, match="names no thread"):
        decode("*3")


@pytest.mark.parametrize("name", ["a,b", "a*2", "irq34@cpu1", "two words", "tab\there"])
def test_thread_names_that_would_not_replay_are_refused(name):
    from vmdsim.kernel.controlled import ControlledScheduler
    from vmdsim.kernel.sched import SchedError

    sched = ControlledScheduler(2, lambda s, c: 0)
    with pytest.raises(SchedError, match="thread name"):
        sched.spawn(0, lambda: None, name=name)
