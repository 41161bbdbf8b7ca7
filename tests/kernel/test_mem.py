"""The allocator: poisoning, KASAN-style reports, leaks and fault injection."""

from __future__ import annotations

import pytest

from vmdsim.kernel.core import Kernel
from vmdsim.kernel.mem import DoubleFree, MemoryLeak, UseAfterFree, is_freed
from vmdsim.kernel.rcu import rcu_read_lock, rcu_read_unlock
from vmdsim.kernel.shared import KObject, shared


class vmd_irq(KObject):
    virq = shared()

    def __init__(self, virq: int) -> None:
        self.virq = virq
        self.note = "plain field"


def alloc_it(k):
    return k.mem.kzalloc(vmd_irq, 42, owner="vmd")


def free_it(k, obj):
    k.mem.kfree(obj)


def test_a_live_object_is_plain_and_counted():
    k = Kernel(1)
    obj = alloc_it(k)
    assert obj.virq == 42 and obj.note == "plain field"
    assert k.mem.leaks("vmd") == [obj] and k.mem.owner_counts() == {"vmd": 1}


def test_touching_a_freed_object_names_object_field_and_both_sites():
    k = Kernel(1)
    obj = alloc_it(k)
    free_it(k, obj)
    assert is_freed(obj)
    with pytest.raises(UseAfterFree) as e:
        obj.virq  # noqa: B018 - the access is the test
    msg = str(e.value)
    assert msg.startswith("BUG: KASAN: use-after-free in test_touching_a_freed_object")
    assert "read of vmd_irq#" in msg and ".virq" in msg
    assert "allocated by alloc_it (test_mem.py:" in msg
    assert "freed by free_it (test_mem.py:" in msg
    with pytest.raises(UseAfterFree, match="write of vmd_irq#.*note"):
        obj.note = "x"
    assert "freed" in repr(obj)


def test_double_free_and_kfree_null():
    k = Kernel(1)
    obj = alloc_it(k)
    k.mem.kfree(None)
    free_it(k, obj)
    with pytest.raises(DoubleFree, match="first freed by free_it"):
        k.mem.kfree(obj)


def test_leak_report_lists_what_an_owner_still_holds():
    k = Kernel(1)
    a, b = alloc_it(k), alloc_it(k)
    k.mem.kfree(a)
    with pytest.raises(MemoryLeak, match=r"1 unreferenced object\(s\) of vmd") as e:
        k.mem.check_leaks("vmd")
    assert e.value.objects == [b]
    k.mem.check_leaks("nobody")


def test_fail_nth_fails_exactly_that_allocation():
    k = Kernel(1)
    k.mem.fail_nth(2)
    assert alloc_it(k) is not None
    assert alloc_it(k) is None
    assert alloc_it(k) is not None
    assert k.mem.failed == 1


def test_kfree_rcu_waits_for_a_reader_that_began_before_it():
    k = Kernel(1)
    obj = alloc_it(k)
    with k.on_cpu(0):
        rcu_read_lock()
        k.mem.kfree_rcu(obj)
        k.sched.quiesce()  # a softirq run inside the section frees nothing
        assert obj.virq == 42
        rcu_read_unlock()
    assert is_freed(obj)  # the task's exit let RCU run its callbacks
