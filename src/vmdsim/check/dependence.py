"""When two steps commute, and the happens-before order of an execution.

Two steps are *dependent* when swapping them could change what either sees:
they touch the same field of the same object (``*`` is the whole object: an
allocation or a free) and at least one of them writes. Reads commute, and so
do RCU/SRCU reader entries and exits among themselves (a reader's entry only
matters to a grace-period wait or callback, which reads the reader state).
Every operation on one lock (acquire, release) is dependent on every other:
the lock word is written by both. A release must be dependent on the next
acquisition, because it *enables* it: if it were not, the explorer would
believe a thread blocked on the lock could start a reordering from a state in
which the lock is still held, find it cannot, and silently drop that
reordering (the soundness bug of issue 10). A release-acquire pair cannot be
reversed, so :func:`races` reports it as a race between the acquisition that
release ended and the new acquisition — the two critical sections swap, as
in Nidhugg's and the JACM 2017 paper's treatment of locks.
Every step carries its CPU as a written key, so steps of one CPU never
commute: an interrupt is taken between them, not inside.

Happens-before is the transitive closure of program order (same thread) and
dependence, kept as one bitset per step.
"""

from __future__ import annotations

from collections.abc import Sequence

from vmdsim.errors import VmdsimError
from vmdsim.kernel.controlled import WAITS_ON_CONDITION, Access, Step
from vmdsim.kernel.shared import RCU_LOCK, RCU_UNLOCK, READ, WAIT, WRITE


class ExplorerError(VmdsimError):
    """The explorer found itself inconsistent: its verdict could not be trusted."""


_READS = frozenset({READ, WAIT})
_SECTION = frozenset({RCU_LOCK, RCU_UNLOCK})


def _overlap(f1: str, f2: str) -> bool:
    """Fields of one object meet: equal, ``*`` (all of it), or an address within one of
    the ``lo-hi`` ranges of a comma-separated list (a device's footprint in MMIO)."""
    if f1 == f2 or f1 == "*" or f2 == "*":
        return True
    if "-" not in f1 and "-" not in f2:
        return False
    return any(lo1 <= hi2 and lo2 <= hi1
               for lo1, hi1 in map(_span, f1.split(","))
               for lo2, hi2 in map(_span, f2.split(",")))


def _span(f: str) -> tuple[int, int]:
    lo, dash, hi = f.partition("-")
    try:
        return int(lo, 16), int(hi if dash else lo, 16)
    except ValueError:
        return -1, -2  # not an address: meets no range


def conflict(a: Access, b: Access) -> bool:
    if a[0] != b[0]:
        return False
    if not _overlap(a[1], b[1]):
        return False
    ka, kb = a[2], b[2]
    if ka in _READS and kb in _READS:
        return False
    return not (ka in _SECTION and kb in _SECTION)


def dependent(a: frozenset[Access], b: frozenset[Access]) -> bool:
    objs = {x[0] for x in a}
    return any(y[0] in objs and any(conflict(x, y) for x in a) for y in b)


def _is_cpu_key(acc: Access) -> bool:
    return acc[1] == "" and acc[0].startswith("cpu")


class HappensBefore:
    """Happens-before of a trace, kept as one bitset per step and extended step by step.

    Executions of one exploration share a prefix (they follow the same choices up
    to where a new branch starts), so the explorer keeps one of these, cuts it back
    to the shared prefix (:meth:`truncate`) and extends it with the new steps
    instead of recomputing the whole order for every execution.
    """

    def __init__(self) -> None:
        self.steps: list[Step] = []
        self.hb: list[int] = []  # per step: the steps that happen before it
        self.preds: list[list[int]] = []  # per step: its direct predecessors
        self._by_obj: dict[str, list[int]] = {}
        self._last_on_cpu: dict[str, int] = {}  # a CPU's steps are totally ordered
        self._last_of_thread: dict[str, int] = {}
        self._undo: list[list[tuple[dict, str, int | None]]] = []

    def __len__(self) -> int:
        return len(self.steps)

    def extend(self, steps: Sequence[Step]) -> None:
        for step in steps:
            self.add(step)

    def add(self, step: Step) -> None:
        trace, hb = self.steps, self.hb
        j = len(trace)
        candidates: set[int] = set()
        t = self._last_of_thread.get(step.thread)
        if t is not None:
            candidates.add(t)
        objs: set[str] = set()
        cpus: list[str] = []
        for acc in step.accesses:
            if _is_cpu_key(acc):
                cpus.append(acc[0])
                t = self._last_on_cpu.get(acc[0])
                if t is not None:
                    candidates.add(t)
            else:
                objs.add(acc[0])
                candidates.update(self._by_obj.get(acc[0], ()))
        mine: list[int] = []
        bits = 0
        for i in candidates:
            if trace[i].thread == step.thread or dependent(trace[i].accesses, step.accesses):
                mine.append(i)
                bits |= hb[i] | (1 << i)
        trace.append(step)
        hb.append(bits)
        mine.sort()
        self.preds.append(mine)
        undo: list[tuple[dict, str, int | None]] = [
            (self._last_of_thread, step.thread, self._last_of_thread.get(step.thread))]
        self._last_of_thread[step.thread] = j
        for obj in objs:
            self._by_obj.setdefault(obj, []).append(j)
            undo.append((self._by_obj, obj, None))
        for key in cpus:
            undo.append((self._last_on_cpu, key, self._last_on_cpu.get(key)))
            self._last_on_cpu[key] = j
        self._undo.append(undo)

    def truncate(self, n: int) -> None:
        """Forget every step from ``n`` on."""
        while len(self.steps) > n:
            self.steps.pop()
            self.hb.pop()
            self.preds.pop()
            for table, key, old in reversed(self._undo.pop()):
                if table is self._by_obj:
                    table[key].pop()
                elif old is None:
                    del table[key]
                else:
                    table[key] = old


def happens_before(trace: Sequence[Step]) -> tuple[list[int], list[list[int]]]:
    """Per step j: the bitset of steps that happen before it, and its direct predecessors."""
    order = HappensBefore()
    order.extend(trace)
    return order.hb, order.preds


def races(trace: Sequence[Step], hb: list[int], preds: list[list[int]],
          start: int = 0) -> list[tuple[int, int]]:
    """Pairs (i, j): dependent steps of different threads with nothing ordering them but
    each other, such that j could have been taken before i — the pairs whose order the
    explorer must also try reversed.

    Two kinds of pair cannot be reversed as they stand, because step i is what made
    step j possible (the scheduler records that on the steps):

    - i freed a resource j needs (a lock, the CPU, the interrupt flag): the pair
      reported is (the step at which i's thread took that resource, j) — the two
      critical sections, tasks or interrupts swap, as in Nidhugg's and the JACM 2017
      paper's treatment of locks — if nothing else orders those two;
    - i ended j's wait on a condition (a grace period, a handler finishing) or created
      j's thread (a spawn, a raised vector): no pair; the other orders come from the
      races of the steps that started the wait or the spawn.

    A pending step (one that could not run when the execution ended) that waits for a
    held resource races with the step that took it.

    Only pairs whose later step is at ``start`` or after are reported (the explorer
    has handled the races of a prefix it explored before)."""
    out = []
    for j in range(start, len(preds)):
        mine = preds[j]
        step = trace[j]
        thread = step.thread
        if step.holder == WAITS_ON_CONDITION:
            continue  # blocked on a condition: it can be moved before nothing
        if step.holder >= 0 and trace[step.holder].thread != thread:
            h = step.holder
            others = _others(trace, hb, mine, h, h, holder_thread=True)
            if not (others >> h) & 1:
                out.append((h, j))
        if not mine:
            continue
        through_others = 0
        for k in mine:
            through_others |= hb[k]
        for i in mine:
            if trace[i].thread == thread:
                continue
            freed = [trace[i].releases[r] for r in step.needs if r in trace[i].releases]
            if freed:
                h = min(freed)
                if h < 0 or trace[h].thread == thread:
                    continue
                others = _others(trace, hb, mine, i, h)
                if not (others >> h) & 1:
                    out.append((h, j))
                continue
            if i in step.enablers or _creates(trace[i], thread):
                continue
            if step.holder >= 0 and trace[i].thread == trace[step.holder].thread \
                    and i > step.holder:
                continue  # the holder's steps while it holds: covered by (holder, j)
            if not (through_others >> i) & 1:
                out.append((i, j))
    return out


def _creates(step: Step, thread: str) -> bool:
    """``step`` spawned ``thread`` or raised the vector whose delivery ``thread`` is."""
    acc = step.accesses
    return (f"spawn {thread}", "", WRITE) in acc or (f"raise {thread}", "", WRITE) in acc


def _others(trace: Sequence[Step], hb: list[int], mine: list[int], i: int, h: int,
            holder_thread: bool = False) -> int:
    """What orders j's predecessors other than i and h (and, for a pending step, than
    the holder's own steps since it took the resource)."""
    others = 0
    thread = trace[h].thread
    for k in mine:
        if k == i or k == h or (holder_thread and k > h and trace[k].thread == thread):
            continue
        others |= hb[k] | (1 << k)
    return others


def execution_races(executed: Sequence[Step], pending: Sequence[Step],
                    order: HappensBefore | None = None, shared: int = 0
                    ) -> tuple[list[Step], list[int], list[tuple[int, int]]]:
    """The races of an execution: its steps, then the pending ones (a blocked thread's
    next step races too, but is never the step to move later); with happens-before.

    ``order`` is the happens-before kept from the previous execution, whose first
    ``shared`` steps this one repeats: they are checked to be the same steps (a replay
    that did not repeat them would make every later conclusion wrong), only the new
    steps are added, and only races whose later step is new are reported — the
    earlier ones were reported for the previous execution."""
    if order is None:
        order, shared = HappensBefore(), 0
    shared = min(shared, len(order), len(executed))
    for k in range(shared):
        old, new = order.steps[k], executed[k]
        if old.thread != new.thread or old.accesses != new.accesses:
            raise ExplorerError(
                f"explorer: step {k + 1} ({new.thread}) did not repeat what it did in the "
                "previous execution along the same schedule: the program is not "
                "deterministic, so no verdict is given")
    order.truncate(shared)
    order.extend(executed[shared:])
    order.extend(pending)
    found = [(i, j) for i, j in races(order.steps, order.hb, order.preds, shared)
             if i < len(executed)]
    trace, hb = list(order.steps), list(order.hb)
    order.truncate(len(executed))
    return trace, hb, found


def notdep(hb: list[int], i: int, j: int, executed: int) -> list[int]:
    """``notdep(i).j``: the executed steps after i not ordered after it (a pending step
    cannot run before j), then j."""
    return [k for k in range(i + 1, min(j, executed)) if not (hb[k] >> i) & 1] + [j]


def initials(trace: Sequence[Step], hb: list[int], v: list[int]) -> list[str]:
    """Threads that can start the sequence ``v`` (see :func:`notdep`): a thread is
    initial if its first step there has no predecessor there."""
    in_v = 0
    seen: set[str] = set()
    out: list[str] = []
    for k in v:
        thread = trace[k].thread
        if thread not in seen:
            seen.add(thread)
            if not hb[k] & in_v:
                out.append(thread)
        in_v |= 1 << k
    return out
