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

RCU-safe lists are in ``vmdsim.kernel.rculist``.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from typing import Any

from vmdsim.errors import VmdsimError
from vmdsim.kernel.sched import HARNESS, Context, current
from vmdsim.kernel.shared import RCU_LOCK, RCU_UNLOCK, WAIT, WRITE, KObject, sched_point


class RcuError(VmdsimError):
    """An RCU usage bug (what lockdep's RCU checks and sparse report)."""

    kind = "rcu-misuse"


class Rcu(KObject):
    """One kernel's RCU state (``k.rcu``)."""

    def __init__(self) -> None:
        self.nesting: dict[Context, tuple[int, int]] = {}  # ctx -> (depth, section serial)
        self.active: set[int] = set()  # serials of sections in progress
        self.reader_of: dict[int, str] = {}  # serial -> the name of the reading context
        # (kept after the section ends: a later wait that finds it over still read it)
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
            self.reader_of[serial] = ctx.name
        self.nesting[ctx] = (depth + 1, serial)

    def read_unlock(self) -> None:
        ctx = current()
        depth, serial = self.nesting.get(ctx, (0, 0))
        if depth == 0:
            raise RcuError(f"{ctx.name}: rcu_read_unlock() without rcu_read_lock()")
        if depth == 1:
            sched_point(self, "readers", RCU_UNLOCK)
            # What a grace-period wait for this one reader reads (see _wait_for).
            ctx.cpu.sched.note_effect((self.kname(), f"reader {ctx.name}", WRITE))
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
        self._wait_for(self._snapshot())
        self.gp_completed += 1

    def _wait_for(self, snap: frozenset[int]) -> None:
        """Wait for the readers of ``snap`` to finish, one at a time: each wait ends with
        one reader's ``rcu_read_unlock``, which the explorer needs to know (a wait that
        several steps end together cannot be ordered against each of them)."""
        sched = current().cpu.sched
        for serial in sorted(snap):
            who = self.reader_of[serial]

            def ended(serial: int = serial) -> bool:
                return serial not in self.active

            sched.block_until(ended, "an RCU grace period", sleep=True,
                              access=(self.kname(), f"reader {who}", WAIT))

    def call(self, fn: Callable[..., Any], *args: Any) -> None:
        """Run ``fn(*args)`` after a grace period."""
        sched_point(self, "readers", WAIT)
        snap = self._snapshot()
        if not current().cpu.sched.defer(self._invoke, snap, fn, args, name=_cb_name(fn)):
            self.callbacks.append((snap, fn, args))

    def adopt_callbacks(self, sched: Any) -> None:
        """Hand callbacks queued while free-running to a controlled scheduler."""
        queued, self.callbacks = self.callbacks, []
        for snap, fn, args in queued:
            sched.spawn(None, self._invoke, snap, fn, args, name=_cb_name(fn))

    def _invoke(self, snap: frozenset[int], fn: Callable[..., Any], args: tuple) -> None:
        self._wait_for(snap)
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


def _cb_name(fn: Callable[..., Any]) -> str:
    return f"rcu_cb:{getattr(fn, '__name__', 'cb')}"


HARNESS.cpu.sched.rcu = Rcu()  # the harness pseudo-CPU's own, never shared with a kernel


def _rcu() -> Rcu:
    rcu = current().cpu.sched.rcu
    assert rcu is not None, "the running context's scheduler has no RCU state"
    return rcu


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
