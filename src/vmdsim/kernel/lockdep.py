"""The lock validator (``kernel/locking/lockdep.c``): lock classes and the order they are taken in.

Every lock belongs to a *class*: Linux keys it by the static ``lock_class_key``
of the place the lock is initialised, so all ``irq_desc`` locks are one class
(``irq_desc_lock_class``) and each NVMe controller's ``shutdown_lock`` is the
same class as every other's. Here a lock's class is its ``key``
(``raw_spinlock_t(name, key=...)``), its name when it has none.

Each time a context takes a lock while holding others, the validator records
an edge from each held class to the new one, with who took it (the
dependency graph). Before adding ``held -> new`` it looks for a path ``new
->* held`` already in the graph: if there is one, the two orders can deadlock
on some schedule, even when this execution did not; that is Linux's

    WARNING: possible circular locking dependency detected

and the report shows both chains: the one about to be made and the existing
one, each edge with the context that made it. Taking a second lock of a class
the context already holds is ``possible recursive locking detected`` (Linux
reports it too unless the code annotates the nesting, which the model's
kernel never does).

A report is raised as a :class:`LockdepReport` (a verdict under the
explorer: ``circular-locking`` or ``recursive-locking``) or, in a free run,
printed to the kernel log at KERN_WARNING, after which the validator turns
itself off as Linux's does (``debug_locks_off``); ``reports`` keeps them.

Simplifications: held locks are per context (an interrupt handler's locks do
not include those of the task it interrupted, which Linux's lockdep counts);
no hardirq-safe/unsafe or softirq inversion checks, no read/write locks, no
``lock_class_key`` nesting annotations, no stack traces (the context's name
and the step number stand for them).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from vmdsim.errors import VmdsimError
from vmdsim.kernel.printk import KERN_WARNING, printk

if TYPE_CHECKING:
    from vmdsim.kernel.core import Kernel
    from vmdsim.kernel.sched import Context


class Lock(Protocol):
    """What lockdep needs of a lock: its name and its class (spinlocks, mutexes and
    rw_semaphores have both)."""

    name: str
    key: str


class LockdepReport(VmdsimError):
    """What lockdep would print: a lock order that can deadlock, or recursive locking."""

    def __init__(self, kind: str, message: str) -> None:
        self.kind = kind
        super().__init__(message)


@dataclass(frozen=True)
class lock_edge:
    """``held -> taken``, first made by ``who`` at step ``at``."""

    held: str
    taken: str
    who: str
    at: int


def lock_class(lock: Lock) -> str:
    return lock.key


class Lockdep:
    """One kernel's dependency graph of lock classes. ``raise_reports``: raise a
    :class:`LockdepReport` (the explorer) instead of logging it to ``k``'s log."""

    def __init__(self, k: Kernel | None = None, *, raise_reports: bool = False) -> None:
        self.k = k
        self.raise_reports = raise_reports
        self.edges: dict[str, dict[str, lock_edge]] = {}  # held class -> taken class -> edge
        self.reports: list[LockdepReport] = []
        self.enabled = True

    # -- the check made at each acquisition (lock_acquire -> validate_chain) ----------------
    def acquire(self, ctx: Context, lock: Lock, step: int) -> None:
        if not self.enabled:
            return
        new = lock_class(lock)
        for held in ctx.locks_held:
            if lock_class(held) == new:
                self._report("recursive-locking", _recursive(ctx, lock, held))
                return
        for held in ctx.locks_held:
            h = lock_class(held)
            if new in self.edges.get(h, {}):
                continue  # a known dependency: checked when it was first made
            chain = self._path(new, h)
            if chain is not None:
                self._report("circular-locking", _circular(ctx, lock, held, chain))
                return
            self.edges.setdefault(h, {})[new] = lock_edge(h, new, ctx.name, step)

    def _path(self, frm: str, to: str) -> list[lock_edge] | None:
        """The edges of a dependency path ``frm ->* to``, if the graph has one (BFS)."""
        seen = {frm}
        queue: list[tuple[str, list[lock_edge]]] = [(frm, [])]
        while queue:
            node, path = queue.pop(0)
            for nxt, edge in sorted(self.edges.get(node, {}).items()):
                if nxt == to:
                    return path + [edge]
                if nxt not in seen:
                    seen.add(nxt)
                    queue.append((nxt, path + [edge]))
        return None

    def _report(self, kind: str, text: str) -> None:
        report = LockdepReport(kind, text)
        self.reports.append(report)
        self.enabled = False  # debug_locks_off(): one splat, then lockdep is off
        if self.raise_reports:
            raise report
        if self.k is not None:
            printk(self.k, KERN_WARNING, text)  # one record per line


def _recursive(ctx: Context, lock: Lock, held: Lock) -> str:
    return "\n".join([
        "WARNING: possible recursive locking detected",
        f"{ctx.name} is trying to acquire lock:",
        f"  ({lock_class(lock)}) {lock.name}",
        "but task is already holding lock:",
        f"  ({lock_class(held)}) {held.name}",
        "*** DEADLOCK *** (May be due to missing lock nesting notation)",
    ])


def _circular(ctx: Context, lock: Lock, held: Lock,
              chain: list[lock_edge]) -> str:
    lines = [
        "WARNING: possible circular locking dependency detected",
        f"{ctx.name} is trying to acquire lock:",
        f"  ({lock_class(lock)}) {lock.name}",
        "but task is already holding lock:",
        f"  ({lock_class(held)}) {held.name}",
        "which lock already depends on the new lock.",
        "the existing dependency chain (in reverse order) is:",
    ]
    for i, edge in enumerate(reversed(chain)):
        at = f" at step {edge.at}" if edge.at >= 0 else ""  # free-running: no steps
        lines.append(f"-> #{i} ({edge.taken}): taken by {edge.who}{at} "
                     f"while holding ({edge.held})")
    cycle = " -> ".join([lock_class(held), lock_class(lock)] + [e.taken for e in chain])
    lines += [f"the new dependency: ({lock_class(held)}) -> ({lock_class(lock)}), by {ctx.name}",
              f"possible unsafe locking scenario: {cycle}",
              "*** DEADLOCK ***"]
    return "\n".join(lines)
