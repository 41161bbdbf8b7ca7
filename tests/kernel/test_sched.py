"""CPUs, tasks, interrupt delivery and the controlled scheduler, on toy programs."""

from __future__ import annotations

import pytest
from explore_all import every_schedule

from vmdsim.kernel.controlled import ControlledScheduler
from vmdsim.kernel.core import Kernel
from vmdsim.kernel.locking import local_irq_restore, local_irq_save
from vmdsim.kernel.sched import Deadlock, SchedError, current, this_cpu
from vmdsim.kernel.shared import KObject, hook, shared


class Cell(KObject):
    a = shared()
    b = shared()

    def __init__(self) -> None:
        self.__dict__.update(a=0, b=0)


def test_free_running_points_cost_nothing_and_tasks_run_on_their_cpu():
    k = Kernel(ncpus=2)
    assert hook.fn is None
    assert k.run_on(1, lambda: (this_cpu().id, current().name), name="t") == (1, "t")
    with k.on_cpu(0) as ctx:
        assert current() is ctx and this_cpu().id == 0


def test_interrupt_nests_on_its_own_cpu_and_waits_for_code_on_another():
    k = Kernel(ncpus=2)
    seen = []
    k.sched.handle_irq = lambda v: seen.append((v, this_cpu().id, current().kind))

    def task():
        k.sched.raise_irq(0, 41)  # for this CPU, flag set: taken at once, nested
        k.sched.raise_irq(1, 40)  # for CPU1 while CPU0 runs: after this task returns
        seen.append("after")

    k.run_on(0, task)
    assert seen == [(41, 0, "irq"), "after", (40, 1, "irq")]
    k.sched.raise_irq(1, 42)  # from the harness, CPU1 idle: at once
    assert seen[-1] == (42, 1, "irq")


def test_a_handler_on_another_cpu_does_not_deadlock_on_a_lock_this_task_holds():
    from vmdsim.kernel.locking import (
        raw_spin_lock_irqsave,
        raw_spin_unlock_irqrestore,
        raw_spinlock_t,
    )

    k = Kernel(ncpus=2)
    lock = raw_spinlock_t("cfg_lock")
    seen = []

    def handler(v):
        flags = raw_spin_lock_irqsave(lock)
        seen.append(("handler", this_cpu().id))
        raw_spin_unlock_irqrestore(lock, flags)

    k.sched.handle_irq = handler

    def task():
        flags = raw_spin_lock_irqsave(lock)
        k.sched.raise_irq(1, 40)  # e.g. a config write that makes a device signal CPU1
        seen.append("task")
        raw_spin_unlock_irqrestore(lock, flags)

    k.run_on(0, task)
    assert seen == ["task", ("handler", 1)]


def test_interrupt_waits_in_the_irr_while_the_flag_is_clear_and_coalesces():
    k = Kernel(ncpus=1)
    seen = []
    k.sched.handle_irq = lambda v: seen.append(v)

    def task():
        flags = local_irq_save()
        k.sched.raise_irq(0, 40)
        k.sched.raise_irq(0, 40)  # same vector again: one IRR bit
        k.sched.raise_irq(0, 41)
        seen.append("masked")
        local_irq_restore(flags)

    k.run_on(0, task)
    assert seen == ["masked", 40, 41]


def test_a_task_may_not_return_with_interrupts_off():
    k = Kernel(ncpus=1)
    with pytest.raises(SchedError, match="interrupts disabled"):
        k.run_on(0, local_irq_save)


def test_a_busy_cpu_refuses_a_second_task():
    k = Kernel(ncpus=1)
    with pytest.raises(SchedError, match="busy"):
        k.run_on(0, lambda: k.run_on(0, lambda: None))


def two_writers(chooser, same_field: bool):
    """Task A writes c.a twice; task B writes c.a (or c.b) twice."""
    k = Kernel(ncpus=2)
    c = Cell()
    s = ControlledScheduler(2, chooser)
    k.install_scheduler(s)
    order = []

    def writer(tag, field):
        for i in range(2):
            setattr(c, field, (tag, i))
            order.append(tag)

    s.spawn(0, writer, "A", "a", name="A")
    s.spawn(1, writer, "B", "a" if same_field else "b", name="B")
    assert s.run()
    return tuple(order), len(s.trace)


def test_two_tasks_of_two_points_have_twenty_schedules_and_six_orders():
    # Each task takes three steps (start..1st point, 1st..2nd, 2nd..end): C(6,3) = 20
    # schedules. The writes happen in the last two steps of each task, so the visible
    # orders of the four writes are C(4,2) = 6.
    runs = every_schedule(lambda ch: two_writers(ch, True))
    assert len(runs) == 20
    assert {steps for _, steps in runs} == {6}
    assert len({order for order, _ in runs}) == 6


def test_replaying_the_same_choices_gives_the_same_execution():
    script = [1, 0, 1, 1, 0, 0]

    def replay(s, choices):
        return min(script.pop(0), len(choices) - 1)

    first = two_writers(replay, True)
    script[:] = [1, 0, 1, 1, 0, 0]
    assert two_writers(replay, True) == first


def test_controlled_interrupt_delivery_is_a_choice_only_while_the_flag_is_set():
    k = Kernel(ncpus=1)
    s = ControlledScheduler(1)
    k.install_scheduler(s)
    c = Cell()
    seen = []
    s.handle_irq = lambda v: seen.append(("irq", c.b))

    def task():
        flags = local_irq_save()
        c.a = 1
        s.raise_irq(0, 50)
        c.b = 1
        local_irq_restore(flags)
        c.a = 2

    s.spawn(0, task)
    offered = []

    def chooser(sched, choices):
        offered.append([ch.kind for ch in choices])
        kinds = [ch.kind for ch in choices]
        return kinds.index("irq") if "irq" in kinds else 0

    s.chooser = chooser
    assert s.run()
    # While the flag is clear the pending vector is not offered; once set it is taken
    # before the task's next access, and the handler sees c.b already written.
    assert seen == [("irq", 1)]
    assert any("irq" in o for o in offered)
    assert not any("irq" in o for o in offered[:3])


def test_nothing_runnable_but_unfinished_is_a_deadlock():
    k = Kernel(ncpus=1)
    s = ControlledScheduler(1)
    k.install_scheduler(s)
    s.spawn(0, lambda: s.block_until(lambda: False, "Godot", sleep=True), name="waiter")
    assert not s.run()
    assert isinstance(s.failure, Deadlock)
    assert "waiter on CPU0 waits for Godot" in str(s.failure)


def test_a_failure_inside_a_task_is_the_verdict():
    k = Kernel(ncpus=1)
    s = ControlledScheduler(1)
    k.install_scheduler(s)

    def bad():
        raise ValueError("boom")

    s.spawn(0, bad, name="bad")
    assert not s.run()
    assert isinstance(s.failure, ValueError) and s.failed_ctx.name == "bad"


def test_free_running_wait_that_cannot_end_is_a_deadlock():
    k = Kernel(ncpus=1)
    with pytest.raises(Deadlock, match="would wait forever for Godot"):
        k.run_on(0, lambda: k.sched.block_until(lambda: False, "Godot", sleep=True))


def test_a_context_that_never_finishes_is_a_livelock():
    from vmdsim.kernel.controlled import Livelock

    k = Kernel(ncpus=1)
    s = ControlledScheduler(1)
    s.max_steps = 50
    k.install_scheduler(s)
    c = Cell()

    def spin():
        while True:
            c.a = c.a + 1

    s.spawn(0, spin, name="spinner")
    assert not s.run()
    assert isinstance(s.failure, Livelock) and "spinner" in str(s.failure)
