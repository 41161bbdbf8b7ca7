"""Spinlocks and mutexes: mutual exclusion over every schedule, and lockdep-style reports."""

from __future__ import annotations

import pytest
from explore_all import every_schedule

from vmdsim.kernel.controlled import ControlledScheduler
from vmdsim.kernel.core import Kernel
from vmdsim.kernel.locking import (
    LockError,
    mutex,
    mutex_lock,
    mutex_unlock,
    raw_spin_lock_irqsave,
    raw_spin_unlock_irqrestore,
    raw_spinlock_t,
    spin_lock,
    spin_unlock,
)
from vmdsim.kernel.sched import Deadlock
from vmdsim.kernel.shared import KObject, shared


class Counter(KObject):
    value = shared()

    def __init__(self) -> None:
        self.__dict__["value"] = 0


def increments(chooser, locked: bool, sleeping: bool = False):
    k = Kernel(2)
    s = ControlledScheduler(2, chooser)
    k.install_scheduler(s)
    c = Counter()
    lock = mutex("m") if sleeping else raw_spinlock_t("l")

    def inc():
        if locked:
            mutex_lock(lock) if sleeping else spin_lock(lock)
        v = c.value
        c.value = v + 1
        if locked:
            mutex_unlock(lock) if sleeping else spin_unlock(lock)

    s.spawn(0, inc, name="a")
    s.spawn(1, inc, name="b")
    assert s.run(), s.failure
    return c.__dict__["value"]


def test_unlocked_increments_can_lose_an_update():
    assert set(every_schedule(lambda ch: increments(ch, False))) == {1, 2}


@pytest.mark.parametrize("sleeping", [False, True])
def test_locked_increments_never_do(sleeping):
    results = every_schedule(lambda ch: increments(ch, True, sleeping))
    assert set(results) == {2} and len(results) > 2


def test_recursive_locking_is_reported():
    k = Kernel(1)
    lock = raw_spinlock_t("cfg_lock")

    def twice():
        spin_lock(lock)
        spin_lock(lock)

    with pytest.raises(Deadlock, match="recursive locking of cfg_lock"):
        k.run_on(0, twice)


def test_interrupt_spinning_on_a_lock_its_cpu_holds_is_a_deadlock():
    # The reason raw_spin_lock_irqsave exists: a handler that takes a lock the
    # interrupted task holds can never get it.
    k = Kernel(1)
    lock = raw_spinlock_t("list_lock")
    k.sched.handle_irq = lambda v: spin_lock(lock)

    def task():
        spin_lock(lock)
        k.sched.raise_irq(0, 40)

    with pytest.raises(Deadlock, match="list_lock"):
        k.run_on(0, task)


def test_irqsave_keeps_the_handler_out_until_the_lock_is_dropped():
    k = Kernel(1)
    lock = raw_spinlock_t("list_lock")
    seen = []

    def handler(v):
        flags = raw_spin_lock_irqsave(lock)
        seen.append("handler")
        raw_spin_unlock_irqrestore(lock, flags)

    k.sched.handle_irq = handler

    def task():
        flags = raw_spin_lock_irqsave(lock)
        k.sched.raise_irq(0, 40)
        seen.append("task")
        raw_spin_unlock_irqrestore(lock, flags)

    k.run_on(0, task)
    assert seen == ["task", "handler"]


def test_unlocking_a_lock_someone_else_holds():
    k = Kernel(1)
    lock = raw_spinlock_t("l")
    with pytest.raises(LockError, match="held by nobody"):
        k.run_on(0, spin_unlock, lock)


def test_mutex_in_interrupt_context_is_a_bug():
    k = Kernel(1)
    m = mutex("m")
    k.sched.handle_irq = lambda v: mutex_lock(m)
    with pytest.raises(LockError, match="sleeping function"):
        k.run_on(0, k.sched.raise_irq, 0, 40)


def test_a_new_kernel_starts_from_a_clean_harness_after_an_error_unwound_a_run():
    from vmdsim.kernel.sched import HARNESS

    k = Kernel(1)
    lock = raw_spinlock_t("left_held")

    def fails_holding_a_lock():
        raw_spin_lock_irqsave(lock)
        raise LockError("a report stops the kernel where it stood")

    with pytest.raises(LockError):
        fails_holding_a_lock()  # on the harness context: nothing releases the lock
    assert lock in HARNESS.locks_held and not HARNESS.cpu.irqs_enabled
    assert k is not None
    Kernel(1)
    assert HARNESS.locks_held == [] and HARNESS.cpu.irqs_enabled
