"""The lock validator: classes, the order graph, circular and recursive locking."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from vmdsim.check.explore import explore
from vmdsim.check.scenario import find
from vmdsim.check.schedule import replay
from vmdsim.cli import main
from vmdsim.kernel.core import Kernel
from vmdsim.kernel.lockdep import Lockdep, LockdepReport
from vmdsim.kernel.locking import raw_spin_lock, raw_spin_unlock, raw_spinlock_t
from vmdsim.kernel.printk import KERN_WARNING


def _kernel() -> Kernel:
    k = Kernel(2)
    k.sched.lockdep = Lockdep(k)
    return k


def _nested(outer: raw_spinlock_t, inner: raw_spinlock_t) -> None:
    raw_spin_lock(outer)
    raw_spin_lock(inner)
    raw_spin_unlock(inner)
    raw_spin_unlock(outer)


def test_two_orders_taken_one_after_the_other_are_a_possible_deadlock_with_both_chains():
    k = _kernel()
    a, b = raw_spinlock_t("A"), raw_spinlock_t("B")
    k.run_on(0, _nested, a, b, name="first")
    assert k.sched.lockdep.reports == []
    k.run_on(1, _nested, b, a, name="second")  # never at the same time: no deadlock here
    (report,) = k.sched.lockdep.reports
    assert report.kind == "circular-locking"
    text = str(report)
    assert "WARNING: possible circular locking dependency detected" in text
    assert "second is trying to acquire lock:\n  (A) A" in text
    assert "but task is already holding lock:\n  (B) B" in text
    assert "-> #0 (B): taken by first while holding (A)" in text  # the existing chain
    assert "the new dependency: (B) -> (A), by second" in text
    warned = [r.text for r in k.log.records if r.level == KERN_WARNING]
    assert warned[0] == "WARNING: possible circular locking dependency detected"
    k.run_on(1, _nested, b, a, name="again")
    assert len(k.sched.lockdep.reports) == 1  # one splat, then lockdep is off (as Linux)


def test_a_longer_cycle_is_found_through_the_graph():
    k = _kernel()
    a, b, c = raw_spinlock_t("A"), raw_spinlock_t("B"), raw_spinlock_t("C")
    k.run_on(0, _nested, a, b)
    k.run_on(0, _nested, b, c)
    assert k.sched.lockdep.reports == []
    k.run_on(0, _nested, c, a)
    text = str(k.sched.lockdep.reports[0])
    assert "(B): taken by" in text and "(C): taken by" in text
    assert "possible unsafe locking scenario: C -> A -> B -> C" in text


def test_one_order_kept_everywhere_is_not_reported():
    k = _kernel()
    a, b, c = raw_spinlock_t("A"), raw_spinlock_t("B"), raw_spinlock_t("C")
    for outer, inner in ((a, b), (a, b), (b, c), (a, c)):
        k.run_on(0, _nested, outer, inner)
    assert k.sched.lockdep.reports == []


def test_two_locks_of_one_class_nested_are_recursive_locking():
    k = _kernel()
    d1 = raw_spinlock_t("irq_desc24.lock", key="irq_desc_lock_class")
    d2 = raw_spinlock_t("irq_desc25.lock", key="irq_desc_lock_class")
    k.run_on(0, _nested, d1, d2)
    (report,) = k.sched.lockdep.reports
    assert report.kind == "recursive-locking"
    assert "WARNING: possible recursive locking detected" in str(report)
    assert "(irq_desc_lock_class) irq_desc25.lock" in str(report)


def test_the_explorer_raises_a_report_as_the_verdict():
    k = Kernel(1)
    k.sched.lockdep = Lockdep(k, raise_reports=True)
    a, b = raw_spinlock_t("A"), raw_spinlock_t("B")
    k.run_on(0, _nested, a, b)
    with pytest.raises(LockdepReport, match="circular locking"):
        k.run_on(0, _nested, b, a)


# -- the review's lock-order point (Keith Busch's reply in the seed) ------------------------
@pytest.mark.parametrize("desc_free", ["immediate", "rcu"])
def test_walking_under_the_list_lock_deadlocks_against_free_irq(desc_free):
    sc = find("seed-teardown")
    assert sc.expected({"protocol": "spinlock", "desc_free": desc_free}) == "deadlock"
    r = explore(sc.program(protocol="spinlock", desc_free=desc_free))
    assert r.verdict == "deadlock"
    message = str(r.counterexample.failure)
    # one CPU holds a descriptor lock and wants the list lock, the other the reverse
    assert "unbind on CPU0 waits for vmd.list_lock (held by irq34@cpu1)" in message
    assert "irq34@cpu1 on CPU1 waits for irq_desc" in message and "(held by unbind)" in message
    # drawn as CPU columns: where each CPU took the lock it holds while it waits
    rows = r.drawing().splitlines()
    cpu0 = next(x for x in rows if "free_irq: lock(irq_desc" in x)
    cpu1 = next(x for x in rows if "vmd_irq_locked: lock(vmd.list_lock)" in x)
    assert cpu0.startswith("free_irq") and cpu1.startswith(" " * 40)  # CPU0's, CPU1's column


def test_lockdep_names_the_inversion_and_its_token_replays_it():
    program = find("seed-teardown").program(protocol="spinlock")
    program.lockdep = True
    r = explore(program)
    assert r.verdict == "circular-locking"
    text = str(r.counterexample.failure)
    assert "(vmd.list_lock) -> (irq_desc_lock_class)" in text
    assert "taken by unbind" in text and "while holding (irq_desc_lock_class)" in text
    again = replay(program, r.schedule)
    assert again.verdict == "circular-locking"


def test_the_real_protocols_pass_lockdep():
    program = find("seed-teardown").program(protocol="srcu")
    program.lockdep = True
    assert explore(program).verdict == "safe"


def test_run_reports_the_inversion_although_nothing_deadlocks():
    r = CliRunner().invoke(main, ["run", "--protocol", "spinlock", "--lockdep",
                                  "--duration", "5"])
    assert r.exit_code == 1
    assert "lost interrupts 0" in r.stdout  # the run itself completed
    assert "vmdsim: lockdep: WARNING: possible circular locking dependency" in r.stderr
    clean = CliRunner().invoke(main, ["run", "--lockdep", "--duration", "5"])
    assert clean.exit_code == 0, clean.output


def test_a_replay_token_with_a_bad_lockdep_value_is_refused():
    r = CliRunner().invoke(main, ["replay", "seed-teardown[lockdep=yes]:nvme"])
    assert r.exit_code == 2 and "lockdep 'yes': the only value is on" in r.output
