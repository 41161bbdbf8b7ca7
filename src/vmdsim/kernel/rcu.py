"""RCU: read-side sections, grace periods, callbacks, and RCU-safe lists.

The semantics are the ones RCU guarantees, tracked exactly rather than
approximated: ``synchronize_rcu()`` returns only once every read-side section
that had begun before the call has ended, and a ``call_rcu``/``kfree_rcu``
callback runs only after such a grace period. Sections are tracked per
context (a task, or one invocation of an interrupt handler); nesting counts.

Which code counts as a reader: only ``rcu_read_lock()`` sections, as in a
``CONFIG_PREEMPT_RCU`` kernel. (In a non-preemptible kernel, and in every
kernel since 4.20, regions with interrupts or preemption disabled are
readers too; the model leaves them out, so it never hides a race that an
explicit reader would not cover.)

Callbacks: free-running, ready callbacks run in order when a CPU's outermost
interrupt or task exits (as RCU_SOFTIRQ does on irq exit). Under the
controlled scheduler each callback is a context of its own on the
housekeeping CPU (as with ``rcu_nocbs`` offloading), enabled once its grace
period has elapsed, so the explorer can run it at any moment after that.

Lists: entries embed their links (``class foo(list_head)``), as Linux embeds
a ``struct list_head``; freeing an entry frees its links, so a reader that
follows a freed entry's ``next`` hits the allocator's poison.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from typing import Any

from vmdsim.errors import VmdsimError
from vmdsim.kernel.sched import HARNESS, Context, current
from vmdsim.kernel.shared import RCU_LOCK, RCU_UNLOCK, WAIT, KObject, sched_point, shared


class RcuError(VmdsimError):
    """An RCU usage bug (what lockdep's RCU checks and sparse report)."""

    kind = "rcu-misuse"


class Rcu(KObject):
    """One kernel's RCU state (``k.rcu``)."""

    def __init__(self) -> None:
        self.nesting: dict[Context, tuple[int, int]] = {}  # ctx -> (depth, section serial)
        self.active: set[int] = set()  # serials of sections in progress
        self._serials = itertools.count(1)
        self.callbacks: list[tuple[frozenset[int], Callable[..., Any], tuple]] = []
        self.gp_completed = 0
        self.callbacks_invoked = 0

    # -- readers -----------------------------------------------------------------
    def read_lock(self) -> None:
        ctx = current()
        depth, serial = self.nesting.get(ctx, (0, 0))
        if depth == 0:
            sched_point(self, "readers", RCU_LOCK)
            serial = next(self._serials)
            self.active.add(serial)
        self.nesting[ctx] = (depth + 1, serial)

    def read_unlock(self) -> None:
        ctx = current()
        depth, serial = self.nesting.get(ctx, (0, 0))
        if depth == 0:
            raise RcuError(f"{ctx.name}: rcu_read_unlock() without rcu_read_lock()")
        if depth == 1:
            sched_point(self, "readers", RCU_UNLOCK)
            del self.nesting[ctx]
            self.active.discard(serial)
        else:
            self.nesting[ctx] = (depth - 1, serial)

    def read_lock_held(self) -> bool:
        return current() in self.nesting

    def check_exit(self, ctx: Context) -> None:
        if ctx in self.nesting:
            raise RcuError(f"{ctx.name} returned inside an RCU read-side critical section")

    # -- grace periods -------------------------------------------------------------
    def _snapshot(self) -> frozenset[int]:
        return frozenset(self.active)

    def _elapsed(self, snap: frozenset[int]) -> bool:
        return snap.isdisjoint(self.active)

    def synchronize(self) -> None:
        ctx = current()
        if ctx in self.nesting:
            raise RcuError(f"{ctx.name}: synchronize_rcu() inside an RCU read-side section "
                           "would wait for itself")
        sched_point(self, "readers", WAIT)
        snap = self._snapshot()
        ctx.cpu.sched.block_until(lambda: self._elapsed(snap), "an RCU grace period",
                                  sleep=True)
        self.gp_completed += 1

    def call(self, fn: Callable[..., Any], *args: Any) -> None:
        """Run ``fn(*args)`` after a grace period."""
        sched_point(self, "readers", WAIT)
        snap = self._snapshot()
        sched = current().cpu.sched
        if sched.controlled and getattr(sched, "root", None) is not None:
            self._spawn(sched, snap, fn, args)
            return
        self.callbacks.append((snap, fn, args))

    def adopt_callbacks(self, sched: Any) -> None:
        """Hand callbacks queued while free-running to a controlled scheduler."""
        queued, self.callbacks = self.callbacks, []
        for snap, fn, args in queued:
            self._spawn(sched, snap, fn, args)

    def _spawn(self, sched: Any, snap: frozenset[int], fn: Callable[..., Any],
               args: tuple) -> None:
        ctx = sched.spawn(None, self._invoke, fn, args,
                          name=f"rcu_cb:{getattr(fn, '__name__', 'cb')}")
        ctx.wait = lambda: self._elapsed(snap)
        ctx.waiting_for = "an RCU grace period"
        ctx.next = (self.kname(), "readers", WAIT)  # its start reads the reader state

    def _invoke(self, fn: Callable[..., Any], args: tuple) -> None:
        current().wait = None
        self.callbacks_invoked += 1
        fn(*args)

    def process_callbacks(self) -> None:
        """Invoke, in order, the callbacks whose grace period has elapsed (RCU_SOFTIRQ)."""
        while self.callbacks:
            snap, fn, args = self.callbacks[0]
            if not self._elapsed(snap):
                return
            self.callbacks.pop(0)
            self.callbacks_invoked += 1
            fn(*args)

    def barrier(self) -> None:
        """``rcu_barrier()``: wait until every callback queued so far has run."""
        self.process_callbacks()
        ctx = current()
        ctx.cpu.sched.block_until(lambda: not self.callbacks, "RCU callbacks (rcu_barrier)",
                                  sleep=True)


HARNESS.cpu.sched.rcu = Rcu()  # the harness pseudo-CPU's own, never shared with a kernel


def _rcu() -> Rcu:
    return current().cpu.sched.rcu


def rcu_read_lock() -> None:
    _rcu().read_lock()


def rcu_read_unlock() -> None:
    _rcu().read_unlock()


def synchronize_rcu() -> None:
    _rcu().synchronize()


def call_rcu(fn: Callable[..., Any], *args: Any) -> None:
    _rcu().call(fn, *args)


def rcu_barrier() -> None:
    _rcu().barrier()


# -- lists ----------------------------------------------------------------------------
class _Poison:
    """LIST_POISON1/2: what list_del leaves in a removed entry's links."""

    def __init__(self, name: str) -> None:
        self.name = name

    def __getattr__(self, attr: str) -> Any:
        raise RcuError(f"list corruption: followed {self.name}.{attr} of a deleted list entry")

    def __repr__(self) -> str:
        return self.name


LIST_POISON1 = _Poison("LIST_POISON1")
LIST_POISON2 = _Poison("LIST_POISON2")


class list_head(KObject):
    """``struct list_head``: a list head, or the links embedded in an entry."""

    next = shared()
    prev = shared()

    def __init__(self) -> None:
        INIT_LIST_HEAD(self)


def INIT_LIST_HEAD(head: list_head) -> None:  # noqa: N802 - Linux's name
    head.next = head
    head.prev = head


def list_empty(head: list_head) -> bool:
    return head.next is head


def _insert(new: list_head, prev: list_head, nxt: list_head) -> None:
    new.next = nxt
    new.prev = prev
    prev.next = new  # rcu_assign_pointer: the publishing store
    nxt.prev = new


def list_add_tail_rcu(new: list_head, head: list_head) -> None:
    _insert(new, head.prev, head)


def list_add_rcu(new: list_head, head: list_head) -> None:
    _insert(new, head, head.next)


list_add_tail = list_add_tail_rcu
list_add = list_add_rcu


def list_del_rcu(entry: list_head) -> None:
    """Unlink ``entry``; its ``next`` stays valid for readers already on it."""
    nxt, prev = entry.next, entry.prev
    nxt.prev = prev
    prev.next = nxt
    entry.prev = LIST_POISON2


def list_del(entry: list_head) -> None:
    list_del_rcu(entry)
    entry.next = LIST_POISON1


def list_for_each_entry_rcu(head: list_head) -> Iterator[Any]:
    """Yield each entry after ``head`` (call inside a read-side section)."""
    p = head.next
    while p is not head:
        yield p
        p = p.next


list_for_each_entry = list_for_each_entry_rcu


def list_entries(head: list_head) -> list[Any]:
    """The entries as a Python list, without scheduling points (for reports and tests)."""
    out = []
    p = head.__dict__["next"]
    while p is not head:
        out.append(p)
        p = p.__dict__["next"]
    return out
