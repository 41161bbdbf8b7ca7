"""request_irq / free_irq / synchronize_irq / disable_irq / enable_irq, and flow handlers."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from irq_testbed import Events, Recorder, in_hardirq

import vmdsim.kernel.irq.handle as handle_mod
from vmdsim.check.dpor import dpor
from vmdsim.check.program import Program
from vmdsim.kernel.controlled import ControlledScheduler
from vmdsim.kernel.core import Kernel
from vmdsim.kernel.errno import EBUSY, EINVAL, ENOSYS
from vmdsim.kernel.irq.chip import dummy_irq_chip
from vmdsim.kernel.irq.flags import (
    IRQ_HANDLED,
    IRQ_NONE,
    IRQF_SHARED,
    IRQS_SPURIOUS_DISABLED,
    IrqError,
)
from vmdsim.kernel.irq.flow import (
    chained_irq_enter,
    chained_irq_exit,
    handle_edge_irq,
    handle_simple_irq,
    handle_untracked_irq,
)
from vmdsim.kernel.irq.irqdesc import irq_desc_get_chip, irq_desc_get_handler_data
from vmdsim.kernel.irq.irqdomain import irq_domain_alloc_irqs
from vmdsim.kernel.sched import Deadlock


def simple_irq(k: Kernel, handler=handle_simple_irq) -> int:
    def setup():
        irq = k.irq.irq_alloc_descs(-1, 0, 1)
        k.irq.irq_set_chip_and_handler(irq, dummy_irq_chip, handler)
        return irq
    return k.run_on(0, setup)


def vector_irq(k: Kernel, handler, cpu: int | None = None) -> int:
    """An IRQ straight in the x86 vector domain (no MSI) with ``handler`` installed."""
    def setup():
        virq = irq_domain_alloc_irqs(k.irq.x86_vector_domain, 1)
        k.irq.irq_set_handler(virq, handle_edge_irq)
        if cpu is not None:
            k.irq.irq_set_affinity(virq, {cpu})
        assert k.irq.request_irq(virq, handler, 0, "dev", handler) == 0
        return virq
    return k.run_on(0, setup)


def fire(k: Kernel, irq: int, cpu: int = 0) -> int:
    return k.run_on(cpu, in_hardirq, k.irq.generic_handle_irq, irq)


def test_request_irq_installs_a_handler_that_runs_with_irq_and_dev_id_and_is_counted():
    k = Kernel(ncpus=2)
    irq = simple_irq(k)
    h = Recorder()
    assert k.run_on(0, k.irq.request_irq, irq, h, 0, "mydev", "cookie") == 0
    assert fire(k, irq, cpu=1) == 0
    assert h.calls == [(irq, 1, "cookie")]
    assert [k.irq.kstat_irqs_cpu(irq, c) for c in range(2)] == [0, 1]
    action = k.irq.irq_to_desc(irq).action
    assert (action.name, action.calls, action.handled) == ("mydev", 1, 1)


def test_request_irq_refuses_what_linux_refuses():
    k = Kernel(ncpus=1)
    irq = simple_irq(k)
    h = Recorder()
    assert k.run_on(0, k.irq.request_irq, 999, h, 0, "x", None) == -EINVAL  # no descriptor
    assert k.run_on(0, k.irq.request_irq, irq, h, IRQF_SHARED, "x", None) == -EINVAL
    bare = k.run_on(0, k.irq.irq_alloc_descs, -1, 0, 1)
    assert k.run_on(0, k.irq.request_irq, bare, h, 0, "x", 1) == -ENOSYS  # no chip
    assert k.mem.leaks("irq") and all(type(o).__name__ != "irqaction"
                                      for o in k.mem.leaks("irq"))


def test_shared_actions_all_run_and_free_irq_removes_only_its_own():
    k = Kernel(ncpus=1)
    irq = simple_irq(k)
    a, b = Recorder(IRQ_NONE), Recorder()
    assert k.run_on(0, k.irq.request_irq, irq, a, IRQF_SHARED, "a", "A") == 0
    assert k.run_on(0, k.irq.request_irq, irq, b, IRQF_SHARED, "b", "B") == 0
    assert k.run_on(0, k.irq.request_irq, irq, Recorder(), 0, "c", "C") == -EBUSY
    assert "Flags mismatch irq" in k.log.lines()[-1]
    fire(k, irq)
    assert len(a.calls) == len(b.calls) == 1
    assert k.irq.irq_to_desc(irq).unhandled_total == 0  # b handled it
    assert k.run_on(0, k.irq.free_irq, irq, "A") == "a"
    fire(k, irq)
    assert len(a.calls) == 1 and len(b.calls) == 2
    with pytest.raises(IrqError, match="already-free IRQ"):
        k.run_on(0, k.irq.free_irq, irq, "A")
    assert k.run_on(0, k.irq.free_irq, irq, "B") == "b"
    assert not k.irq.irq_has_action(irq)


def test_an_interrupt_without_an_action_or_while_disabled_is_left_pending():
    k = Kernel(ncpus=1)
    irq = simple_irq(k)
    h = Recorder()
    desc = k.irq.irq_to_desc(irq)
    k.run_on(0, k.irq.request_irq, irq, h, 0, "x", 1)
    k.run_on(0, k.irq.disable_irq, irq)
    k.run_on(0, k.irq.disable_irq, irq)  # nests
    fire(k, irq)
    k.run_on(0, k.irq.enable_irq, irq)
    fire(k, irq)
    assert h.calls == [] and desc.depth == 1
    k.run_on(0, k.irq.enable_irq, irq)
    fire(k, irq)
    assert len(h.calls) == 1 and desc.depth == 0
    with pytest.raises(IrqError, match="Unbalanced enable"):
        k.run_on(0, k.irq.enable_irq, irq)


def test_unhandled_interrupts_are_counted_and_an_irq_nobody_handles_is_disabled(monkeypatch):
    monkeypatch.setattr(handle_mod, "SPURIOUS_WINDOW", 100)
    monkeypatch.setattr(handle_mod, "SPURIOUS_LIMIT", 99)
    k = Kernel(ncpus=1)
    irq = simple_irq(k)
    h = Recorder(IRQ_NONE)
    k.run_on(0, k.irq.request_irq, irq, h, 0, "deaf", 1)
    desc = k.irq.irq_to_desc(irq)
    for _ in range(100):
        fire(k, irq)
    assert desc.unhandled_total == 100
    assert desc.istate & IRQS_SPURIOUS_DISABLED and desc.depth == 1
    assert f"irq {irq}: nobody cared" in "\n".join(k.log.lines())
    fire(k, irq)
    assert len(h.calls) == 100  # disabled: the handler no longer runs


def test_a_handler_must_return_an_irqreturn():
    k = Kernel(ncpus=1)
    irq = simple_irq(k)
    k.run_on(0, k.irq.request_irq, irq, lambda i, d: None, 0, "sloppy", 1)
    with pytest.raises(IrqError, match="bogus return value None from sloppy"):
        fire(k, irq)


def test_untracked_irqs_run_their_action_but_keep_no_statistics():
    k = Kernel(ncpus=1)
    irq = simple_irq(k, handle_untracked_irq)
    h = Recorder(IRQ_NONE)
    k.run_on(0, k.irq.request_irq, irq, h, 0, "child", 1)
    fire(k, irq)
    desc = k.irq.irq_to_desc(irq)
    assert len(h.calls) == 1 and k.irq.kstat_irqs(irq) == 0 and desc.unhandled_total == 0


def test_free_irq_from_interrupt_context_is_a_bug():
    k = Kernel(ncpus=1)
    virq = vector_irq(k, lambda i, d: k.irq.free_irq(i, d) or IRQ_HANDLED)
    cpu, vector = k.irq.irq_vector_of(virq)
    with pytest.raises(IrqError, match="interrupt context"):
        k.sched.raise_irq(cpu, vector)


def test_free_irq_in_its_own_handler_outside_an_interrupt_waits_for_itself():
    k = Kernel(ncpus=1)
    irq = simple_irq(k)
    k.run_on(0, k.irq.request_irq, irq, lambda i, d: k.irq.free_irq(i, d) or IRQ_HANDLED, 0,
             "selfish", 1)
    with pytest.raises(Deadlock, match="synchronize_irq"):
        fire(k, irq)


def test_devm_request_irq_is_freed_when_the_driver_lets_go():
    from vmdsim.kernel.base.core import device
    from vmdsim.kernel.base.devres import devres_release_all

    k = Kernel(ncpus=1)
    irq, irq2 = simple_irq(k), simple_irq(k)
    dev = device(k, "0000:00:03.0", None)
    assert k.run_on(0, k.irq.devm_request_irq, dev, irq, Recorder(), 0, "d", 1) == 0
    assert k.run_on(0, k.irq.devm_request_irq, dev, irq2, Recorder(), 0, "e", 2) == 0
    k.run_on(0, k.irq.devm_free_irq, dev, irq2, 2)
    assert not k.irq.irq_has_action(irq2) and k.irq.irq_has_action(irq)
    assert k.run_on(0, devres_release_all, dev) == 1
    assert not k.irq.irq_has_action(irq)
    assert k.mem.leaks("devres") == []


def test_a_chained_handler_demultiplexes_and_can_be_removed():
    k = Kernel(ncpus=1)
    parent, child = simple_irq(k), simple_irq(k)
    h = Recorder()
    k.run_on(0, k.irq.request_irq, child, h, 0, "child", 1)
    seen = []

    def demux(desc):
        chip = irq_desc_get_chip(desc)
        chained_irq_enter(chip, desc)
        for c in irq_desc_get_handler_data(desc):
            seen.append(c)
            k.irq.generic_handle_irq(c)
        chained_irq_exit(chip, desc)

    k.run_on(0, k.irq.irq_set_chained_handler_and_data, parent, demux, [child])
    assert k.run_on(0, k.irq.request_irq, parent, h, 0, "no", 2) == -EINVAL  # chained
    fire(k, parent)
    assert seen == [child] and len(h.calls) == 1
    assert "chained" not in k.irq.show_interrupts()  # a chained IRQ with no counts is hidden
    k.run_on(0, k.irq.irq_set_chained_handler_and_data, parent, None, None)
    fire(k, parent)  # handle_bad_irq now: counted, logged, nothing demultiplexed
    assert seen == [child] and "unexpected IRQ trap" in k.log.lines()[-1]


# -- free_irq against a handler running on another CPU ------------------------------------------
def vector_world() -> SimpleNamespace:
    """An IRQ straight in the x86 vector domain (no MSI), its handler logging to ``ev``."""
    k = Kernel(ncpus=2)
    ev = Events()

    def handler(irq, dev_id):
        ev.add("enter")
        ev.add("exit")
        return IRQ_HANDLED

    virq = vector_irq(k, handler, cpu=1)
    cpu, vector = k.irq.irq_vector_of(virq)
    assert cpu == 1
    return SimpleNamespace(k=k, ev=ev, virq=virq, vector=vector, handler=handler)


def freeing(w):
    w.k.irq.free_irq(w.virq, w.handler)
    w.ev.add("freed")


def test_free_irq_waits_for_a_handler_running_on_another_cpu():
    w = vector_world()
    s = ControlledScheduler(2)
    w.k.install_scheduler(s)
    s.raise_irq(1, w.vector)  # the device's interrupt is requested on CPU1
    s.spawn(0, freeing, w, name="free_irq")
    blocked = []

    def chooser(sched, choices):
        labels = [c.label for c in choices]
        seen = w.ev.seen()
        irq = next((lab for lab in labels if lab.startswith("irq")), None)
        if "enter" not in seen:
            return labels.index(irq)  # take the interrupt, run until the handler is in
        if "free_irq" in labels:
            return labels.index("free_irq")  # now free, as far as it gets
        ctx = next(c for c in sched.contexts if c.name == "free_irq")
        blocked.append(ctx.waiting_for)
        return 0

    s.chooser = chooser
    assert s.run(), s.failure
    assert w.ev.seen() == ("enter", "exit", "freed")
    assert any("synchronize_irq" in b for b in blocked)
    assert w.k.irq.irq_vector_of(w.virq) is None  # deactivated: the vector is released


def test_no_handler_runs_after_free_irq_returns_in_any_interleaving():
    def check(w):
        log = w.ev.seen()
        if "enter" in log:
            assert log.index("exit") < log.index("freed"), log
        assert log[-1] == "freed", log

    prog = Program("free_irq-vs-handler", vector_world,
                   lambda w: [(None, lambda: w.k.sched.raise_irq(1, w.vector), "device"),
                              (0, lambda: freeing(w), "free_irq")], check)
    verdicts = []
    stats = dpor(prog, on_execution=lambda ex: verdicts.append(ex.verdict) or True)
    assert stats.executions > 1 and set(verdicts) == {"safe"}
