"""RCU and SRCU semantics, checked over every schedule of small programs.

Each program is the seed's race in miniature: a writer unpublishes an
object and frees it, a reader on another CPU looks it up and reads it.
"""

from __future__ import annotations

import pytest
from explore_all import every_schedule

from vmdsim.kernel.controlled import ControlledScheduler
from vmdsim.kernel.core import Kernel
from vmdsim.kernel.mem import UseAfterFree
from vmdsim.kernel.rcu import (
    RcuError,
    rcu_read_lock,
    rcu_read_unlock,
    synchronize_rcu,
)
from vmdsim.kernel.rculist import (
    list_add_tail_rcu,
    list_del_rcu,
    list_entries,
    list_for_each_entry_rcu,
    list_head,
)
from vmdsim.kernel.shared import KObject, shared
from vmdsim.kernel.srcu import (
    cleanup_srcu_struct,
    init_srcu_struct,
    srcu_read_lock,
    srcu_read_unlock,
    srcu_struct,
    synchronize_srcu,
)


class Obj(list_head):
    virq = shared()

    def __init__(self, virq: int) -> None:
        super().__init__()
        self.__dict__["virq"] = virq


class Slot(KObject):
    ptr = shared()


def verdict(s: ControlledScheduler) -> str:
    if s.run():
        return "safe"
    if isinstance(s.failure, UseAfterFree):
        return "use-after-free"
    raise s.failure


def publish_and_retire(chooser, protection: str):
    """CPU0 retires the object in ``slot`` (protection: none, sync, kfree_rcu, srcu,
    srcu-other); CPU1 reads it under the matching read lock."""
    k = Kernel(2)
    slot = Slot()
    obj = k.mem.kzalloc(Obj, 7)
    slot.__dict__["ptr"] = obj
    ssp, other = srcu_struct("vec0"), srcu_struct("vec1")
    init_srcu_struct(ssp)
    init_srcu_struct(other)
    s = ControlledScheduler(2, chooser)
    k.install_scheduler(s)
    srcu = protection.startswith("srcu")

    def writer():
        p = slot.ptr
        slot.ptr = None
        if protection == "sync":
            synchronize_rcu()
        elif srcu:
            synchronize_srcu(other if protection == "srcu-other" else ssp)
        if protection == "kfree_rcu":
            k.mem.kfree_rcu(p)
        else:
            k.mem.kfree(p)

    def reader():
        idx = srcu_read_lock(ssp) if srcu else rcu_read_lock()
        q = slot.ptr
        if q is not None:
            q.virq  # noqa: B018
        srcu_read_unlock(ssp, idx) if srcu else rcu_read_unlock()

    s.spawn(0, writer, name="writer")
    s.spawn(1, reader, name="reader")
    v = verdict(s)
    if v == "safe":
        assert k.mem.leaks() == [], "every retired object is freed by the end"
    return v


@pytest.mark.parametrize("protection,expected", [
    ("none", {"safe", "use-after-free"}),
    ("sync", {"safe"}),
    ("kfree_rcu", {"safe"}),
    ("srcu", {"safe"}),
    ("srcu-other", {"safe", "use-after-free"}),  # the wrong srcu_struct protects nothing
])
def test_grace_periods_over_every_schedule(protection, expected):
    assert set(every_schedule(lambda ch: publish_and_retire(ch, protection))) == expected


def test_synchronize_rcu_does_not_wait_for_a_reader_that_began_after_it():
    finished_inside = []

    def run(chooser):
        k = Kernel(2)
        s = ControlledScheduler(2, chooser)
        k.install_scheduler(s)
        slot = Slot()
        slot.__dict__["ptr"] = 0
        state = {"inside": False}

        def writer():
            slot.ptr = 1
            synchronize_rcu()
            slot.ptr  # noqa: B018 - a point after the grace period
            finished_inside.append(state["inside"])

        def reader():
            rcu_read_lock()
            state["inside"] = True
            slot.ptr  # noqa: B018
            slot.ptr  # noqa: B018
            state["inside"] = False
            rcu_read_unlock()

        s.spawn(0, writer)
        s.spawn(1, reader)
        assert s.run()

    every_schedule(run)
    assert True in finished_inside and False in finished_inside


def list_race(chooser, wait: bool):
    """The RFC's demux list: CPU1 walks it under rcu_read_lock, CPU0 deletes and frees."""
    k = Kernel(2)
    head = list_head()
    a, b = k.mem.kzalloc(Obj, 1), k.mem.kzalloc(Obj, 2)
    list_add_tail_rcu(a, head)
    list_add_tail_rcu(b, head)
    s = ControlledScheduler(2, chooser)
    k.install_scheduler(s)
    seen = []

    def remove():
        list_del_rcu(a)
        if wait:
            synchronize_rcu()
        k.mem.kfree(a)

    def walk():
        rcu_read_lock()
        for e in list_for_each_entry_rcu(head):
            seen.append(e.virq)
        rcu_read_unlock()

    s.spawn(0, remove)
    s.spawn(1, walk)
    v = verdict(s)
    assert list_entries(head) == [b]
    return v, str(s.failure or "")


def test_freeing_a_list_entry_without_a_grace_period_is_found_and_named():
    results = every_schedule(lambda ch: list_race(ch, False))
    bad = [msg for v, msg in results if v == "use-after-free"]
    assert bad and any("Obj#" in m for m in bad)
    assert all(v == "safe" for v, _ in every_schedule(lambda ch: list_race(ch, True)))


def test_rcu_misuse_is_reported():
    k = Kernel(1)
    with pytest.raises(RcuError, match="without rcu_read_lock"):
        k.run_on(0, rcu_read_unlock)
    with pytest.raises(RcuError, match="inside an RCU read-side critical section"):
        k.run_on(0, rcu_read_lock)

    def sync_inside():
        rcu_read_lock()
        synchronize_rcu()

    k2 = Kernel(1)
    with pytest.raises(RcuError, match="wait for itself"):
        k2.run_on(0, sync_inside)


def test_srcu_structs_are_independent_and_cleanup_checks_readers():
    k = Kernel(2)
    a, b = srcu_struct("a"), srcu_struct("b")
    init_srcu_struct(a)
    init_srcu_struct(b)
    idx = srcu_read_lock(a)  # the harness holds a reader of a
    k.run_on(0, synchronize_srcu, b)  # returns: b has no readers
    with pytest.raises(RcuError, match="active readers: harness"):
        cleanup_srcu_struct(a)
    srcu_read_unlock(a, idx)
    cleanup_srcu_struct(a)
    with pytest.raises(RcuError, match="not initialised"):
        srcu_read_lock(a)
