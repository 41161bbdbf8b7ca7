"""Small random programs for cross-checking the explorer against brute force.

A program is two or three threads, each a short list of operations on shared
variables, spinlocks (properly nested critical sections), RCU read sections
and grace periods, and objects that may be freed and used. ``outcomes`` runs
it under a strategy and returns what a checker must agree on: the set of
verdicts, the set of final states of the executions that end safely, and the
number of distinct Mazurkiewicz traces among the complete executions.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

from vmdsim.check.dependence import dependent
from vmdsim.check.program import Execution, Program
from vmdsim.kernel.core import Kernel
from vmdsim.kernel.locking import spin_lock, spin_unlock, spinlock_t
from vmdsim.kernel.rcu import rcu_read_lock, rcu_read_unlock, synchronize_rcu
from vmdsim.kernel.shared import KObject, shared

VARS = ("x", "y")
LOCKS = ("A", "B", "C")


class Vars(KObject):
    x = shared()
    y = shared()

    def __init__(self) -> None:
        self.__dict__.update(x=0, y=0)


class Obj(KObject):
    f = shared()

    def __init__(self) -> None:
        self.__dict__["f"] = 0


Op = tuple[Any, ...]


def _ops(rng: random.Random, budget: int, held: tuple[str, ...], in_rcu: bool) -> list[Op]:
    out: list[Op] = []
    while budget > 0:
        roll = rng.random()
        if roll < 0.25 and len(held) < 2:
            lock = rng.choice([lk for lk in LOCKS if lk not in held])
            n = rng.randint(1, max(1, budget - 1))
            out.append(("crit", lock, _ops(rng, n - 1, (*held, lock), in_rcu)))
            budget -= n + 1
        elif roll < 0.35 and not in_rcu:
            n = rng.randint(1, max(1, budget - 1))
            out.append(("rcu", _ops(rng, n - 1, held, True)))
            budget -= n + 1
        elif roll < 0.42 and not in_rcu and not held:
            out.append(("sync",))
            budget -= 1
        elif roll < 0.50:
            out.append(("free",))
            budget -= 1
        elif roll < 0.58:
            out.append(("use",))
            budget -= 1
        elif roll < 0.65:
            out.append(("assert", rng.choice(VARS), rng.randint(0, 2)))
            budget -= 1
        elif roll < 0.83:
            out.append(("w", rng.choice(VARS), rng.randint(1, 2)))
            budget -= 1
        else:
            out.append(("r", rng.choice(VARS)))
            budget -= 1
    return out


@dataclass
class RandomProgram:
    seed: int
    threads: list[list[Op]] = field(default_factory=list)

    def program(self) -> Program:
        bodies = self.threads

        def setup() -> SimpleNamespace:
            k = Kernel(len(bodies))
            locks = {name: spinlock_t(name) for name in LOCKS}
            obj = k.mem.kzalloc(Obj, owner="test")
            return SimpleNamespace(k=k, v=Vars(), locks=locks, obj=obj,
                                   seen={t: [] for t in range(len(bodies))})

        def threads(w: SimpleNamespace) -> list:
            return [(t, (lambda t=t, b=b: _run(w, t, b)), f"T{t}")
                    for t, b in enumerate(bodies)]

        return Program(f"random-{self.seed}", setup, threads)

    def __str__(self) -> str:
        return "\n".join(f"T{t}: {ops}" for t, ops in enumerate(self.threads))


def _run(w: SimpleNamespace, t: int, ops: list[Op]) -> None:
    for op in ops:
        kind = op[0]
        if kind == "crit":
            spin_lock(w.locks[op[1]])
            _run(w, t, op[2])
            spin_unlock(w.locks[op[1]])
        elif kind == "rcu":
            rcu_read_lock()
            _run(w, t, op[1])
            rcu_read_unlock()
        elif kind == "sync":
            synchronize_rcu()
        elif kind == "free":
            w.k.mem.kfree(w.obj)
        elif kind == "use":
            w.seen[t].append(w.obj.f)
        elif kind == "assert":
            assert getattr(w.v, op[1]) != op[2], f"{op[1]} == {op[2]}"
        elif kind == "w":
            setattr(w.v, op[1], op[2])
        else:
            w.seen[t].append(getattr(w.v, op[1]))


def generate(seed: int, nthreads: int | None = None, size: int | None = None) -> RandomProgram:
    rng = random.Random(seed)
    n = nthreads or rng.choice((2, 2, 3))
    budget = size or (4 if n == 2 else 3)
    return RandomProgram(seed, [_ops(rng, rng.randint(1, budget), (), False) for _ in range(n)])


def trace_key(ex: Execution) -> frozenset:
    """The Mazurkiewicz trace of an execution: its events (thread, index, accesses) and
    the order of every dependent pair of them."""
    count: dict[str, int] = {}
    ids = []
    for step in ex.trace:
        n = count.get(step.thread, 0)
        count[step.thread] = n + 1
        ids.append((step.thread, n, step.accesses))
    pairs = {(ids[i][:2], ids[j][:2])
             for j in range(len(ids)) for i in range(j)
             if ids[i][0] != ids[j][0] and dependent(ex.trace[i].accesses,
                                                     ex.trace[j].accesses)}
    return frozenset(ids) | frozenset(pairs)


@dataclass
class Outcomes:
    verdicts: set[str] = field(default_factory=set)
    finals: set[tuple] = field(default_factory=set)
    traces: set[frozenset] = field(default_factory=set)
    complete: int = 0
    blocked: int = 0

    def record(self, ex: Execution) -> bool:
        if not ex.complete:
            return True
        self.complete += 1
        self.verdicts.add(ex.verdict)
        self.traces.add(trace_key(ex))
        if ex.verdict == "safe":
            w = ex.world
            self.finals.add((w.v.__dict__["x"], w.v.__dict__["y"],
                             tuple(tuple(s) for s in w.seen.values())))
        return True
