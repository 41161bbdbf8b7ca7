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

from vmdsim.kernel.controlled import WAITS_ON_CONDITION, Access, Step
from vmdsim.kernel.shared import RCU_LOCK, RCU_UNLOCK, READ, WAIT, WRITE

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


def happens_before(trace: Sequence[Step]) -> tuple[list[int], list[list[int]]]:
    """Per step j: the bitset of steps that happen before it, and its direct predecessors."""
    hb: list[int] = []
    preds: list[list[int]] = []
    by_obj: dict[str, list[int]] = {}
    last_on_cpu: dict[str, int] = {}  # a CPU's steps are totally ordered: its last is enough
    last_of_thread: dict[str, int] = {}
    for j, step in enumerate(trace):
        candidates: set[int] = set()
        t = last_of_thread.get(step.thread)
        if t is not None:
            candidates.add(t)
        for acc in step.accesses:
            if _is_cpu_key(acc):
                t = last_on_cpu.get(acc[0])
                if t is not None:
                    candidates.add(t)
            else:
                candidates.update(by_obj.get(acc[0], ()))
        mine: list[int] = []
        bits = 0
        for i in candidates:
            if trace[i].thread == step.thread or dependent(trace[i].accesses, step.accesses):
                mine.append(i)
                bits |= hb[i] | (1 << i)
        hb.append(bits)
        preds.append(sorted(mine))
        last_of_thread[step.thread] = j
        for obj in {acc[0] for acc in step.accesses if not _is_cpu_key(acc)}:
            by_obj.setdefault(obj, []).append(j)
        for acc in step.accesses:
            if _is_cpu_key(acc):
                last_on_cpu[acc[0]] = j
    return hb, preds


def races(trace: Sequence[Step], hb: list[int], preds: list[list[int]]) -> list[tuple[int, int]]:
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
    held resource races with the step that took it."""
    out = []
    for j, mine in enumerate(preds):
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


def execution_races(executed: Sequence[Step], pending: Sequence[Step]
                    ) -> tuple[list[Step], list[int], list[tuple[int, int]]]:
    """The races of an execution: its steps, then the pending ones (a blocked thread's
    next step races too, but is never the step to move later); with happens-before."""
    trace = [*executed, *pending]
    hb, preds = happens_before(trace)
    found = [(i, j) for i, j in races(trace, hb, preds) if i < len(executed)]
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
