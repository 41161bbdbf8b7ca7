"""Workqueues (``kernel/workqueue.c``): work a hard-IRQ handler hands to process context.

In Linux the port services defer everything that sleeps: pciehp and AER
install a threaded handler (``request_threaded_irq(irq, pciehp_isr,
pciehp_ist, ...)``; the hard half returns ``IRQ_WAKE_THREAD`` and the IRQ
thread ``irq/<n>-pciehp`` runs the rest), PME queues a work item on the
system workqueue (``schedule_work``). Slot enable/disable takes
``pci_lock_rescan_remove`` (a mutex) and unbinds drivers, which no hard
handler may do.

The model's IRQ core refuses thread functions (``request_threaded_irq`` with
a ``thread_fn``), so the services do the waking themselves: the hard handler
returns ``IRQ_HANDLED`` and calls :func:`schedule_work` on a
:class:`work_struct` holding the thread function. Both Linux mechanisms have
the same semantics here: queuing a work that is already pending does
nothing (an IRQ thread woken twice before it runs runs once); queuing it
while it runs makes it run once more.

Where the work runs:

* **Free-running**: as a task of its own (named like Linux's thread, e.g.
  ``irq/24-pciehp``) on the CPU that queued it, as soon as nothing else is
  running — when the outermost interrupt or task returns to the harness (a
  hook on ``k.sched.quiescent_hooks``, the same place RCU callbacks run).
  So ``rp.unpopulate()`` in a test or workload delivers the hot-plug
  interrupt, and the slot is torn down before the call returns. Work queued
  while a task runs waits for that task to finish (the task may hold the
  locks the work needs; free-running code cannot interleave).
  :func:`flush_scheduled_work` runs what is pending explicitly.
* **Controlled** (the explorer): each queuing spawns a context of its own on
  the housekeeping CPU (``sched.defer``, which ``Rcu.call`` uses for callbacks
  too), so the explorer interleaves the thread with everything else.

Simplifications: no priorities, CPU affinity beyond "the CPU that queued
it", workqueue concurrency management or delayed work (the attention
button's 5 s delay is handled by pciehp itself).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from vmdsim.kernel.sched import HARNESS, current
from vmdsim.kernel.shared import KObject, init_private, peek, shared

if TYPE_CHECKING:
    from vmdsim.kernel.core import Kernel

WorkFn = Callable[[Any], None]


class work_struct(KObject):
    """``struct work_struct`` (or an IRQ thread's wake-up): ``fn(data)`` run in a task.

    Linux embeds it in the owner's structure; here it is constructed by the
    owner, not allocated from ``k.mem``. ``pending`` and ``running`` are
    touched by the hard handler that queues it, the worker and the teardown
    that cancels it.
    """

    pending = shared()
    running = shared()

    def __init__(self, k: Kernel, fn: WorkFn, data: Any, name: str) -> None:
        init_private(self, pending=False, running=False)
        self.k = k
        self.fn = fn
        self.data = data
        self.name = name
        self.cpu = 0  # where it was last queued
        self.runs = 0

    def __repr__(self) -> str:
        return f"<work {self.name}>"


def INIT_WORK(k: Kernel, fn: WorkFn, data: Any, name: str) -> work_struct:  # noqa: N802
    return work_struct(k, fn, data, name)


class workqueue_struct(KObject):
    """``system_wq``: one kernel's pending work (``k.system_wq``, made with the kernel)."""

    def __init__(self, k: Kernel) -> None:
        self.k = k
        self.queue: list[work_struct] = []
        self.flushing = False
        k.sched.quiescent_hooks.append(self.run_pending)

    def run_pending(self) -> None:
        """The quiescent hook: free-running, at the outermost level, run what is queued."""
        if self.flushing or not self.queue or current() is not HARNESS or HARNESS.locks_held:
            return
        if self.k.sched.controlled:
            return
        self.flush()

    def flush(self) -> None:
        """Run every queued work (and any it queues) to completion, each as a task."""
        if self.flushing:
            return
        self.flushing = True
        try:
            while self.queue:
                work = self.queue.pop(0)
                if work.pending:
                    self.k.run_on(work.cpu, _run_work, work, name=work.name)
        finally:
            self.flushing = False


def _run_work(work: work_struct) -> None:
    if not work.pending:
        return  # cancelled before it ran
    work.pending = False
    work.running = True
    try:
        work.fn(work.data)
    finally:
        work.running = False
        work.runs += 1



def schedule_work(work: work_struct) -> bool:
    """Queue ``work``; False if it was already pending (it runs once)."""
    if work.pending:
        return False
    work.pending = True
    cpu = current().cpu.id
    work.cpu = cpu if cpu >= 0 else 0
    if not work.k.sched.defer(_run_work, work, name=work.name):
        work.k.system_wq.queue.append(work)
    return True


def cancel_work_sync(work: work_struct) -> bool:
    """Dequeue ``work`` and wait for a running instance to finish; True if it was pending."""
    was = work.pending
    work.pending = False
    q = work.k.system_wq.queue
    if work in q:
        q.remove(work)
    if work.running:
        current().cpu.sched.block_until(lambda: not peek(work, "running"),
                                        f"{work.name} to finish (cancel_work_sync)",
                                        sleep=True)
    return was


def flush_scheduled_work(k: Kernel) -> None:
    """Run every pending work now, each as a task on the CPU that queued it.

    Free-running only, and from outside any task (the harness): a busy CPU cannot start
    another task. Normally unnecessary: pending work runs by itself as soon as the
    outermost interrupt or task returns."""
    k.system_wq.flush()
