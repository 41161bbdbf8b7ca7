"""Descriptor lifetime: ``immediate`` frees at once, ``rcu`` waits for readers.

The race is the seed's, reduced to its core: CPU1 looks the descriptor of
IRQ D up and calls its flow handler; CPU0 frees D's descriptor. Explored
with the controlled scheduler over every interleaving.
"""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from irq_testbed import Events, in_hardirq

from vmdsim.check.dpor import dpor
from vmdsim.check.program import Program
from vmdsim.kernel.controlled import ControlledScheduler
from vmdsim.kernel.core import Kernel
from vmdsim.kernel.irq.chip import dummy_irq_chip
from vmdsim.kernel.irq.flags import IRQ_HANDLED
from vmdsim.kernel.irq.flow import handle_simple_irq
from vmdsim.kernel.mem import UseAfterFree, is_freed
from vmdsim.kernel.rcu import rcu_read_lock, rcu_read_unlock


def world(mode: str) -> SimpleNamespace:
    k = Kernel(ncpus=2)
    k.irq.desc_free = mode
    ev = Events()

    def handler(irq, dev_id):
        ev.add("handled")
        return IRQ_HANDLED

    def setup():
        irq = k.irq.irq_alloc_descs(-1, 0, 1)
        k.irq.irq_set_chip_and_handler(irq, dummy_irq_chip, handle_simple_irq)
        assert k.irq.request_irq(irq, handler, 0, "dev", ev) == 0
        return irq

    irq = k.run_on(0, setup)
    return SimpleNamespace(k=k, irq=irq, ev=ev, desc=k.irq.irq_to_desc(irq))


def reader(w):
    """A demultiplexing handler's core: look the child up and run it, under RCU."""
    rcu_read_lock()
    in_hardirq(w.k.irq.generic_handle_irq, w.irq)
    rcu_read_unlock()


def freer(w):
    """The teardown's last step (free_irq and the domain are done elsewhere)."""
    desc = w.k.irq.irq_to_desc(w.irq)
    desc.action = None  # what free_irq left behind, without its synchronisation
    w.k.irq.irq_free_descs(w.irq, 1)


def program(mode: str) -> Program:
    return Program(f"desc-free-{mode}", lambda: world(mode),
                   lambda w: [(1, lambda: reader(w), "reader"), (0, lambda: freer(w), "freer")])


def explore(mode: str):
    verdicts, reports, worlds = [], [], []

    def seen(ex):
        if ex.complete:
            verdicts.append(ex.verdict)
            worlds.append(ex.world)
            if isinstance(ex.failure, UseAfterFree):
                reports.append(ex.failure)
        return True

    dpor(program(mode), on_execution=seen)
    return verdicts, reports, worlds


def test_immediate_free_lets_a_reader_call_into_a_freed_descriptor():
    verdicts, reports, _ = explore("immediate")
    assert "use-after-free" in verdicts
    assert "safe" in verdicts  # orders where the lookup misses, or comes first
    assert all("irq_desc" in str(r) or "irq_data" in str(r) or "irq_common_data" in str(r)
               for r in reports)
    assert all("freed by free_desc" in str(r) for r in reports)


def test_rcu_free_waits_for_every_reader_that_began_before_it():
    verdicts, _, worlds = explore("rcu")
    assert verdicts and set(verdicts) == {"safe"}
    for w in worlds:  # the grace period ended in every execution: the descriptor is gone
        assert is_freed(w.desc)
        # (the action is the test's: it skipped free_irq, whose synchronize_irq it needs)
        assert {type(o).__name__ for o in w.k.mem.leaks("irq")} == {"irqaction"}


def test_rcu_mode_keeps_the_descriptor_while_the_reader_holds_it():
    """Scripted: the reader has the pointer, the free happens, the reader still uses it."""
    w = world("rcu")
    s = ControlledScheduler(2)
    w.k.install_scheduler(s)
    state = {}

    def slow_reader():
        rcu_read_lock()
        desc = w.k.irq.irq_to_desc(w.irq)
        state["looked_up"] = True
        w.ev.add("between")  # a scheduling point with the pointer in hand
        state["freed_meanwhile"] = w.k.irq.sparse_irqs.slots.get(w.irq) is None
        state["poisoned_meanwhile"] = is_freed(desc)
        in_hardirq(desc.handle_irq, desc)
        rcu_read_unlock()

    s.spawn(1, slow_reader, name="reader")
    s.spawn(0, lambda: w.k.irq.irq_free_descs(w.irq, 1), name="freer")

    def chooser(sched, choices):
        labels = [c.label for c in choices]
        if state.get("looked_up") and "freer" in labels and "between" not in w.ev.seen():
            return labels.index("freer")  # free while the reader holds the pointer
        if "reader" in labels:
            return labels.index("reader")
        return 0

    s.chooser = chooser
    assert s.run(), s.failure
    assert state == {"looked_up": True, "freed_meanwhile": True, "poisoned_meanwhile": False}
    assert is_freed(w.desc)  # freed once the reader left its read-side section
    assert "handled" in w.ev.seen()


@pytest.mark.parametrize("mode", ["immediate", "rcu"])
def test_a_stale_pointer_after_the_grace_period_is_reported(mode):
    w = world(mode)
    desc = w.desc
    w.k.run_on(0, w.k.irq.irq_free_descs, w.irq, 1)  # the task's exit ends the grace period
    assert is_freed(desc)
    with pytest.raises(UseAfterFree, match="irq_desc"):
        desc.handle_irq  # noqa: B018 - the access is the test


def test_desc_free_accepts_only_the_two_modes():
    k = Kernel(ncpus=1)
    assert k.irq.desc_free == "rcu"
    with pytest.raises(ValueError, match="rcu, immediate"):
        k.irq.desc_free = "later"
