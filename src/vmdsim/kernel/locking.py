"""Spinlocks, mutexes and the CPU interrupt flag, with Linux's names.

``spin_lock_irqsave(lock)`` returns the saved flag (Linux writes it into a
``flags`` variable by macro magic; here it is a return value) and
``spin_unlock_irqrestore(lock, flags)`` takes it back. Taking a lock is a
scheduling point of kind ``acquire``; a contended spinlock spins (its CPU
stays busy), a contended mutex sleeps (its CPU may run another task).

Lockdep-like checks, raised as :class:`LockError` or :class:`Deadlock`:
taking a lock this context already holds, releasing a lock it does not hold,
sleeping on a mutex in interrupt context. A spinlock held by code this CPU
interrupted can never be released while the interrupt spins for it; the
schedulers report that as a deadlock.

Each lock has a class (``key``: the place it is initialised in Linux; its name
when not given), which the lock validator (:mod:`vmdsim.kernel.lockdep`, on
when ``sched.lockdep`` is set) orders.

Simplifications: ``spinlock_t`` and ``raw_spinlock_t`` behave alike (no
PREEMPT_RT). Spinlocks are not fair here: x86's queued spinlocks hand a
released lock to the waiters in arrival order, the model lets any waiter, or
a later attempt, take it, so the explorer also tries orders the hardware
excludes (a schedule whose failure needs a waiter to be overtaken would be a
false alarm; a trial of fair locks left the vmd-remove scenario's verdicts as
they are, but multiplied the executions of preemption-bounded search).
"""

from __future__ import annotations

from vmdsim.errors import VmdsimError
from vmdsim.kernel.sched import Context, Deadlock, current
from vmdsim.kernel.shared import ACQUIRE, RELEASE, KObject, sched_point


class LockError(VmdsimError):
    """A locking bug lockdep would report."""

    kind = "lock-misuse"


class raw_spinlock_t(KObject):
    """A spinning lock word; ``owner`` is the context holding it."""

    sleeps = False

    def __init__(self, name: str = "lock", key: str | None = None) -> None:
        self.name = name
        self.key = key if key is not None else name  # the lock class (lockdep)
        self.owner: Context | None = None
        self.taken_at = -1  # explored runs: the step that took it

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name}>"


class spinlock_t(raw_spinlock_t):
    pass


class mutex(raw_spinlock_t):
    """A sleeping lock."""

    sleeps = True


def _acquire(lock: raw_spinlock_t) -> None:
    ctx = current()
    lockdep = ctx.cpu.sched.lockdep
    if lockdep is not None:
        # lock_acquire(): validated as the context sets out to take the lock, so even an
        # acquisition that will wait forever is checked (the explorer holds a context at
        # an acquisition point until the lock is free).
        lockdep.acquire(ctx, lock, ctx.cpu.sched.now())
    sched_point(lock, lock.name, ACQUIRE)
    if lock.owner is ctx:
        raise Deadlock(f"{ctx.name}: recursive locking of {lock.name} (already held here)")
    if lock.sleeps and ctx.in_irq:
        raise LockError(f"BUG: sleeping function mutex_lock({lock.name}) called from "
                        f"interrupt context {ctx.name}")
    if lock.owner is not None:
        owner = lock.owner
        ctx.cpu.sched.block_until(lambda: lock.owner is None,
                                  f"{lock.name} (held by {owner.name})", sleep=lock.sleeps)
    lock.owner = ctx
    lock.taken_at = ctx.cpu.sched.now()
    ctx.locks_held.append(lock)


def _release(lock: raw_spinlock_t) -> None:
    ctx = current()
    if lock.owner is not ctx:
        holder = lock.owner.name if lock.owner is not None else "nobody"
        raise LockError(f"{ctx.name}: unlock of {lock.name}, which is held by {holder}")
    sched_point(lock, lock.name, RELEASE)
    ctx.cpu.sched.note_release(f"lock {lock.kname()}", lock.taken_at)
    lock.owner = None
    ctx.locks_held.remove(lock)


# -- the interrupt flag ------------------------------------------------------------
def local_irq_save() -> bool:
    """Clear this CPU's interrupt flag; returns what it was."""
    cpu = current().cpu
    flags = cpu.irqs_enabled
    local_irq_disable()
    return flags


def local_irq_restore(flags: bool) -> None:
    cpu = current().cpu
    if flags and not cpu.irqs_enabled:
        cpu.sched.note_release(f"irqflag{cpu.id}", cpu.irqs_off_at)
    cpu.irqs_enabled = flags
    if flags:
        cpu.sched.irqs_changed(cpu)


def local_irq_disable() -> None:
    cpu = current().cpu
    if cpu.irqs_enabled:
        cpu.irqs_off_at = cpu.sched.now()
    cpu.irqs_enabled = False


def local_irq_enable() -> None:
    local_irq_restore(True)


def irqs_disabled() -> bool:
    return not current().cpu.irqs_enabled


# -- spinlocks ----------------------------------------------------------------------
def spin_lock(lock: raw_spinlock_t) -> None:
    _acquire(lock)


def spin_unlock(lock: raw_spinlock_t) -> None:
    _release(lock)


def spin_lock_irqsave(lock: raw_spinlock_t) -> bool:
    flags = local_irq_save()
    _acquire(lock)
    return flags


def spin_unlock_irqrestore(lock: raw_spinlock_t, flags: bool) -> None:
    _release(lock)
    local_irq_restore(flags)


def spin_lock_irq(lock: raw_spinlock_t) -> None:
    local_irq_disable()
    _acquire(lock)


def spin_unlock_irq(lock: raw_spinlock_t) -> None:
    _release(lock)
    local_irq_enable()


raw_spin_lock = spin_lock
raw_spin_unlock = spin_unlock
raw_spin_lock_irqsave = spin_lock_irqsave
raw_spin_unlock_irqrestore = spin_unlock_irqrestore
raw_spin_lock_irq = spin_lock_irq
raw_spin_unlock_irq = spin_unlock_irq


# -- mutexes ------------------------------------------------------------------------
def mutex_lock(lock: mutex) -> None:
    _acquire(lock)


def mutex_unlock(lock: mutex) -> None:
    _release(lock)
