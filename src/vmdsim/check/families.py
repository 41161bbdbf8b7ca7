"""The published benchmark families of stateless model checking, as vmdsim programs.

Each is the C program of the benchmark suites (Nidhugg's ``benchmarks/``, GenMC's
``tests/correct/synthetic``; the sources are named below) written with shared
fields, spinlocks and ``cmpxchg``, one thread per CPU, and ``TRACES`` holds the
number of Mazurkiewicz traces under sequential consistency those tools report
(GenMC's test expectations and Nidhugg's smoke references; see
``docs/findings.md``). An explorer that runs one complete execution per trace
must run exactly that many.

- ``readers(n)``: one thread writes ``x``, n threads read it: 2^n traces.
- ``lastzero(n)``: ``array[0..n]`` zero; thread 0 scans down from ``array[n]``
  for the last zero, thread j (1..n) sets ``array[j] = array[j-1] + 1``
  (Abdulla et al., POPL 2014).
- ``indexer(n)``: n threads insert four messages each into a 128-slot hash
  table with linear probing, each slot updated under its own lock (Flanagan
  and Godefroid, POPL 2005); only threads t and t+11 collide.
- ``filesystem(n)``: n threads each take an inode's lock and, if the inode is
  free, search for a free block under the blocks' locks (Flanagan and
  Godefroid); threads i and i+13 contend for block 2i.
- ``fib_bench(n)``: two threads n times add the other's variable into their
  own, while a third (``main``, which does not join them) checks both against
  fib(2 + 2n) (SV-COMP ``fib_bench``).
- ``casrot(n)``: thread i (1..n) does ``cmpxchg(x, i-1, i)``: a failing
  exchange only reads.
- ``n_writers(n)``: n threads write ``x``, one reads it: (n+1)! traces (a count
  that tools counting reads-from classes instead report as n+1).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from functools import cache
from types import SimpleNamespace
from typing import Any

from vmdsim.check.program import Program
from vmdsim.kernel.atomic import cmpxchg
from vmdsim.kernel.core import Kernel
from vmdsim.kernel.locking import raw_spinlock_t, spin_lock, spin_unlock
from vmdsim.kernel.shared import KObject, init_private, shared


@cache
def _cells(name: str, n: int) -> type:
    """A kernel object with shared fields ``c0`` .. ``c{n-1}`` (one class per size)."""
    return type(name, (KObject,), {f"c{i}": shared() for i in range(n)})


def _array(name: str, n: int, value: int = 0) -> Any:
    obj = _cells(name, n)()
    init_private(obj, **{f"c{i}": value for i in range(n)})
    return obj


def _get(a: Any, i: int) -> Any:
    return getattr(a, f"c{i}")


def _set(a: Any, i: int, v: Any) -> None:
    setattr(a, f"c{i}", v)


def _program(name: str, nthreads: int, setup: Callable[[], dict[str, Any]],
             bodies: list[Callable[[Any], None]]) -> Program:
    def make() -> Any:
        return SimpleNamespace(k=Kernel(nthreads), **setup())

    def threads(w: Any) -> list:
        return [(t, (lambda b=b: b(w)), f"t{t}") for t, b in enumerate(bodies)]

    return Program(name, make, threads)


def _one_variable(family: str, n: int, writers: int, readers: int, value: int) -> Program:
    """``writers`` threads store ``value`` into ``x``, then ``readers`` threads load it."""
    def writer(w: Any) -> None:
        _set(w.x, 0, value)

    def reader(w: Any) -> None:
        _get(w.x, 0)

    return _program(f"{family}({n})", writers + readers,
                    lambda: {"x": _array(f"{family}_x", 1)},
                    [writer] * writers + [reader] * readers)


def readers(n: int) -> Program:
    return _one_variable("readers", n, 1, n, 42)


def lastzero(n: int) -> Program:
    def scan(w: Any) -> None:
        i = n
        while _get(w.a, i) != 0:
            i -= 1

    def writer(j: int) -> Callable[[Any], None]:
        return lambda w: _set(w.a, j, _get(w.a, j - 1) + 1)

    return _program(f"lastzero({n})", n + 1, lambda: {"a": _array("lastzero_array", n + 1)},
                    [scan] + [writer(j) for j in range(1, n + 1)])


INDEXER_SIZE, INDEXER_MAX = 128, 4


def indexer(n: int) -> Program:
    def setup() -> dict[str, Any]:
        return {"table": _array("indexer_table", INDEXER_SIZE),
                "locks": [raw_spinlock_t(f"cas_mutex{h}") for h in range(INDEXER_SIZE)]}

    def cas(w: Any, h: int, val: int, new: int) -> bool:
        spin_lock(w.locks[h])
        ok = _get(w.table, h) == val
        if ok:
            _set(w.table, h, new)
        spin_unlock(w.locks[h])
        return ok

    def routine(tid: int) -> Callable[[Any], None]:
        def run(w: Any) -> None:
            for m in range(1, INDEXER_MAX + 1):
                msg = m * 11 + tid
                h = (msg * 7) % INDEXER_SIZE
                while not cas(w, h, 0, msg):
                    h = (h + 1) % INDEXER_SIZE
        return run

    return _program(f"indexer({n})", n, setup, [routine(t) for t in range(n)])


FS_BLOCKS, FS_INODES, FS_LOOP = 26, 32, 10


def filesystem(n: int) -> Program:
    def setup() -> dict[str, Any]:
        return {"inode": _array("fs_inode", FS_INODES), "busy": _array("fs_busy", FS_BLOCKS),
                "locki": [raw_spinlock_t(f"locki{i}") for i in range(FS_INODES)],
                "lockb": [raw_spinlock_t(f"lockb{b}") for b in range(FS_BLOCKS)]}

    def routine(tid: int) -> Callable[[Any], None]:
        def run(w: Any) -> None:
            i = tid % FS_INODES
            spin_lock(w.locki[i])
            if _get(w.inode, i) == 0:
                b = (i * 2) % FS_BLOCKS
                for _ in range(FS_LOOP):  # Nidhugg's bound on the original while (1)
                    spin_lock(w.lockb[b])
                    if not _get(w.busy, b):
                        _set(w.busy, b, 1)
                        _set(w.inode, i, b + 1)
                        spin_unlock(w.lockb[b])
                        break
                    spin_unlock(w.lockb[b])
                    b = (b + 1) % FS_BLOCKS
            spin_unlock(w.locki[i])
        return run

    return _program(f"filesystem({n})", n, setup, [routine(t) for t in range(n)])


def fib_bench(n: int) -> Program:
    def t1(w: Any) -> None:
        for _ in range(n):
            _set(w.v, 0, _get(w.v, 0) + _get(w.v, 1))

    def t2(w: Any) -> None:
        for _ in range(n):
            _set(w.v, 1, _get(w.v, 1) + _get(w.v, 0))

    def check(w: Any) -> None:
        bound = _fib(2 + 2 * n)
        assert _get(w.v, 0) <= bound and _get(w.v, 1) <= bound, "fib_bench: a sum too big"

    return _program(f"fib_bench({n})", 3, lambda: {"v": _array("fib_ij", 2, 1)},
                    [t1, t2, check])


def _fib(n: int) -> int:
    a, b = 0, 1
    for _ in range(n):
        a, b = b, a + b
    return a


def casrot(n: int) -> Program:
    def rot(i: int) -> Callable[[Any], None]:
        return lambda w: cmpxchg(w.x, "c0", i - 1, i)

    return _program(f"casrot({n})", n, lambda: {"x": _array("casrot_x", 1)},
                    [rot(i) for i in range(1, n + 1)])


def n_writers(n: int) -> Program:
    return _one_variable("n_writers", n, n, 1, 1)


FAMILIES: dict[str, Callable[[int], Program]] = {
    "readers": readers, "lastzero": lastzero, "indexer": indexer,
    "filesystem": filesystem, "fib_bench": fib_bench, "casrot": casrot,
    "n_writers": n_writers,
}

# family -> {n: traces}, as published (GenMC tests/correct/synthetic/*/expected.sc.mo.in,
# Nidhugg tests/smoke/reference.results.txt and benchmarks/SWSC_experiment/summary.txt).
TRACES: dict[str, dict[int, int]] = {
    "readers": {1: 2, 2: 4, 3: 8, 4: 16, 6: 64, 8: 256, 10: 1024, 13: 8192},
    "lastzero": {1: 2, 2: 5, 3: 12, 4: 28, 5: 64, 6: 144, 8: 704, 10: 3328},
    "indexer": {11: 1, 12: 8, 13: 64, 14: 512, 15: 4096},
    "filesystem": {12: 1, 14: 2, 16: 8, 18: 32, 19: 64},
    "fib_bench": {1: 11, 2: 140, 3: 1698, 4: 19605, 5: 218243},
    "casrot": {2: 2, 3: 5, 4: 14, 5: 43, 6: 144, 7: 523, 8: 2048},
    "n_writers": {n: math.factorial(n + 1) for n in range(1, 6)},
}
