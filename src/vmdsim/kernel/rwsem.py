"""Reader-writer semaphores (``kernel/locking/rwsem.c``): ``down_read``, ``up_read``,
``down_write``, ``up_write``.

Many readers or one writer hold a ``rw_semaphore``; whoever cannot take it
sleeps in a FIFO queue. Linux's rwsem favours a waiting writer over new
readers: a reader that finds anyone queued queues too, even while other
readers hold the lock, so a writer is not starved. Hence taking the same
rwsem for reading twice in one task is a deadlock waiting to happen: if a
writer queues between the two ``down_read``\\ s, the inner one waits behind the
writer, which waits for the outer one (lockdep: "possible recursive locking").
Releasing the lock wakes the head of the queue: a writer once the lock is free,
or every reader queued before the first writer.

Where the model simplifies: no optimistic spinning and no reader lock
stealing (Linux lets a reader take a reader-owned lock in a short window
before it queues; the outcome above does not depend on it), no
``down_read_trylock``/``downgrade_write``.
"""

from __future__ import annotations

from typing import Any

from vmdsim.kernel.locking import (
    raw_spin_lock_irqsave,
    raw_spin_unlock_irqrestore,
    raw_spinlock_t,
)
from vmdsim.kernel.sched import current
from vmdsim.kernel.shared import WAIT, KObject, peek, poke, shared

READER, WRITER = "read", "write"


class rw_semaphore(KObject):
    """``struct rw_semaphore``: ``readers`` holding it, the ``writer`` holding it, and the
    ``waiters`` queued, as (context, READER or WRITER), oldest first; ``wait_lock``
    makes each check-and-queue and each release-and-wake one atomic step, as in Linux
    (else a release between a failed check and the queueing would wake nobody)."""

    readers = shared()
    writer = shared()
    waiters = shared()
    sleeps = True  # a sleeping lock (lockdep and the scheduler's checks ask)

    def __init__(self, name: str, key: str | None = None) -> None:
        poke(self, "readers", 0)
        poke(self, "writer", None)
        poke(self, "waiters", ())
        self.name = name
        self.key = key if key is not None else name  # the lock class (lockdep)
        self.taken_at = -1
        self.wait_lock = raw_spinlock_t(f"{name}.wait_lock")

    def __repr__(self) -> str:
        return f"<rw_semaphore {self.name}>"


def _validate(sem: rw_semaphore) -> Any:
    ctx = current()
    lockdep = ctx.cpu.sched.lockdep
    if lockdep is not None:  # lock_acquire(): checked as the task sets out to take it
        lockdep.acquire(ctx, sem, ctx.cpu.sched.now())
    return ctx


def _queue_and_sleep(sem: rw_semaphore, ctx: Any, kind: str, flags: bool) -> None:
    """Called with ``wait_lock`` held: queue, drop it, sleep until a waker dequeues us."""
    sem.waiters = (*sem.waiters, (ctx, kind))
    raw_spin_unlock_irqrestore(sem.wait_lock, flags)
    what = f"{sem.name} for {'reading' if kind == READER else 'writing'}"
    ctx.cpu.sched.block_until(lambda: all(w[0] is not ctx for w in peek(sem, "waiters")),
                              what, sleep=True, access=(sem.kname(), "waiters", WAIT))


def down_read(sem: rw_semaphore) -> None:
    ctx = _validate(sem)
    flags = raw_spin_lock_irqsave(sem.wait_lock)
    if sem.writer is None and not sem.waiters:
        sem.readers = sem.readers + 1
        raw_spin_unlock_irqrestore(sem.wait_lock, flags)
    else:
        _queue_and_sleep(sem, ctx, READER, flags)  # the waker counted us in
    ctx.locks_held.append(sem)


def down_write(sem: rw_semaphore) -> None:
    ctx = _validate(sem)
    flags = raw_spin_lock_irqsave(sem.wait_lock)
    if sem.writer is None and not sem.readers and not sem.waiters:
        sem.writer = ctx
        raw_spin_unlock_irqrestore(sem.wait_lock, flags)
    else:
        _queue_and_sleep(sem, ctx, WRITER, flags)  # the waker made us the writer
    ctx.locks_held.append(sem)


def up_read(sem: rw_semaphore) -> None:
    ctx = current()
    ctx.locks_held.remove(sem)
    flags = raw_spin_lock_irqsave(sem.wait_lock)
    sem.readers = sem.readers - 1
    if not sem.readers:
        _wake(sem)
    raw_spin_unlock_irqrestore(sem.wait_lock, flags)


def up_write(sem: rw_semaphore) -> None:
    ctx = current()
    ctx.locks_held.remove(sem)
    flags = raw_spin_lock_irqsave(sem.wait_lock)
    sem.writer = None
    _wake(sem)
    raw_spin_unlock_irqrestore(sem.wait_lock, flags)


def _wake(sem: rw_semaphore) -> None:
    """With ``wait_lock`` held: hand the free lock to the head of the queue, one writer
    or the readers before the first writer."""
    queue = list(sem.waiters)
    if not queue:
        return
    if queue[0][1] == WRITER:
        sem.writer = queue.pop(0)[0]
    else:
        while queue and queue[0][1] == READER:
            queue.pop(0)
            sem.readers = sem.readers + 1
    sem.waiters = tuple(queue)
