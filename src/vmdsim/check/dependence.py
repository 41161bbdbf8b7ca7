"""When two steps commute, and the happens-before order of an execution.

Two steps are *dependent* when swapping them could change what either sees:
they touch the same field of the same object (``*`` is the whole object: an
allocation or a free) and at least one of them writes. Reads commute, and so
do RCU/SRCU reader entries and exits among themselves (a reader's entry only
matters to a grace-period wait or callback, which reads the reader state).
Lock acquisitions of one lock are dependent; a release is not dependent on
anything (as in source-DPOR's treatment of mutexes): an acquisition is
disabled while the lock is held, so the order of two critical sections is
decided by the order of their acquisitions.
Every step carries its CPU as a written key, so steps of one CPU never
commute: an interrupt is taken between them, not inside.

Happens-before is the transitive closure of program order (same thread) and
dependence, kept as one bitset per step.
"""

from __future__ import annotations

from collections.abc import Sequence

from vmdsim.kernel.controlled import Access, Step
from vmdsim.kernel.shared import RCU_LOCK, RCU_UNLOCK, READ, RELEASE, WAIT

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
    if RELEASE in (ka, kb) and "*" not in (a[1], b[1]):
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
    each other — the pairs whose order the explorer must also try reversed."""
    out = []
    for j, mine in enumerate(preds):
        if not mine:
            continue
        through_others = 0
        for k in mine:
            through_others |= hb[k]
        thread = trace[j].thread
        for i in mine:
            if trace[i].thread != thread and not (through_others >> i) & 1:
                out.append((i, j))
    return out


def initials(trace: Sequence[Step], hb: list[int], i: int, j: int) -> list[str]:
    """Threads that can start ``notdep(i).j``: the steps after i not ordered after it,
    then j; a thread is initial if its first step there has no predecessor there."""
    v = [k for k in range(i + 1, j) if not (hb[k] >> i) & 1] + [j]
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
