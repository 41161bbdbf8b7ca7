"""The explorers against brute force, on small random programs.

For each program (two or three threads of locks, shared variables, RCU read
sections and grace periods, frees and uses: ``randprog``), every schedule is
run (``reduce=False``) and compared with what source-DPOR and optimal DPOR
explore:

- the same set of verdicts, and the same set of final states of the safe
  executions (soundness: nothing reachable is missed);
- for programs that cannot fail (or only deadlock), exactly one complete
  execution per Mazurkiewicz trace that brute force finds (optimality);
  a failing execution ends where it fails, so its trace is cut and the count
  is not comparable.

The fast run covers the first seeds; ``-m slow`` covers many more.
"""

from __future__ import annotations

import pytest
from randprog import Outcomes, generate

from vmdsim.check.dpor import dpor
from vmdsim.check.odpor import odpor

FAST = range(0, 30)
SLOW = range(30, 250)


def _compare(seed: int) -> None:
    rp = generate(seed)
    brute = Outcomes()
    dpor(rp.program(), on_execution=brute.record, reduce=False, max_executions=300_000)
    failing = brute.verdicts - {"safe", "deadlock"}
    for name, explorer in (("source-dpor", dpor), ("optimal", odpor)):
        got = Outcomes()
        explorer(rp.program(), on_execution=got.record)
        where = f"seed {seed}, {name}:\n{rp}"
        assert got.verdicts == brute.verdicts, where
        assert got.finals == brute.finals, where
        if not failing:
            assert got.complete == len(brute.traces), where
            assert len(got.traces) == got.complete, where  # no trace explored twice


@pytest.mark.parametrize("seed", FAST)
def test_random_program_matches_brute_force(seed):
    _compare(seed)


@pytest.mark.slow
@pytest.mark.parametrize("seed", SLOW)
def test_random_program_matches_brute_force_many(seed):
    _compare(seed)


def _nested_locks() -> object:
    """Three spinlocks taken in nested, rotating orders; T2 asserts an order of writes
    that one schedule breaks (T1 has written y from a stale x)."""
    from types import SimpleNamespace

    from randprog import Vars

    from vmdsim.check.program import Program
    from vmdsim.kernel.core import Kernel
    from vmdsim.kernel.locking import spin_lock, spin_unlock, spinlock_t

    def setup():
        return SimpleNamespace(k=Kernel(3), v=Vars(), A=spinlock_t("A"),
                               B=spinlock_t("B"), C=spinlock_t("C"))

    def t0(w):
        spin_lock(w.A)
        spin_lock(w.B)
        w.v.x = 1
        spin_unlock(w.B)
        spin_unlock(w.A)

    def t1(w):
        spin_lock(w.B)
        spin_lock(w.C)
        seen = w.v.x
        spin_unlock(w.C)
        spin_unlock(w.B)
        spin_lock(w.A)
        w.v.y = seen + 1
        spin_unlock(w.A)

    def t2(w):
        spin_lock(w.C)
        spin_lock(w.A)
        x, y = w.v.x, w.v.y
        spin_unlock(w.A)
        spin_unlock(w.C)
        assert not (x == 1 and y == 1), "T1 wrote y from a stale x"

    return Program("nested-locks", setup, lambda w: [
        (0, lambda: t0(w), "T0"), (1, lambda: t1(w), "T1"), (2, lambda: t2(w), "T2")])


# What every schedule of the nested-lock program ends in (brute force, the slow test).
NESTED_LOCK_VERDICTS = {"safe", "assertion", "deadlock"}


@pytest.mark.parametrize("explorer", [dpor, odpor])
def test_nested_locks_failure_is_found(explorer):
    verdicts: set[str] = set()

    def record(ex):
        if ex.complete:
            verdicts.add(ex.verdict)
        return True

    stats = explorer(_nested_locks(), on_execution=record)
    assert verdicts == NESTED_LOCK_VERDICTS
    if explorer is odpor:
        assert stats.blocked == 0


@pytest.mark.slow
def test_nested_locks_verdicts_are_those_of_every_schedule():
    full: set[str] = set()
    dpor(_nested_locks(), on_execution=lambda ex: (ex.complete and full.add(ex.verdict))
         or True, reduce=False)
    assert full == NESTED_LOCK_VERDICTS
