"""The seed's race, replayed on the IRQ core with a VMD-shaped demultiplexer.

CPU0 takes the parent vector; its handler walks the vector's list and, for
the child, ``generic_handle_irq(D)`` looks up D's descriptor. Right then
CPU1 tears the child down (``free_irq``, ``pci_free_irq_vectors``: the
mapping and D's descriptor are freed), and CPU0 goes on to call
``desc->handle_irq(desc)``:

====================  ===============  ====================================
teardown protocol     desc freeing     what happens
====================  ===============  ====================================
rcu (kfree_rcu map)   immediate        KABOOM: use-after-free of D's desc
srcu (today)          immediate        CPU1 waits in synchronize_srcu: safe
rcu (kfree_rcu map)   rcu              the desc outlives CPU0's RCU section
====================  ===============  ====================================
"""

from __future__ import annotations

import pytest
from irq_demux import setup
from irq_testbed import Recorder

from vmdsim.check.dpor import dpor
from vmdsim.check.program import Program, World
from vmdsim.kernel.controlled import ControlledScheduler
from vmdsim.kernel.mem import UseAfterFree
from vmdsim.kernel.pci.msi import (
    PCI_IRQ_MSIX,
    pci_alloc_irq_vectors,
    pci_free_irq,
    pci_free_irq_vectors,
    pci_irq_vector,
    pci_request_irq,
)


def race(protocol: str, desc_free: str, hardirq_rcu_reader: bool):
    w = setup(protocol)
    k, child = w.k, w.child
    k.irq.desc_free = desc_free
    k.irq.hardirq_rcu_reader = hardirq_rcu_reader
    assert k.run_on(0, pci_alloc_irq_vectors, child, 1, 1, PCI_IRQ_MSIX) == 1
    h = Recorder()
    assert k.run_on(0, pci_request_irq, child, 0, h, None, child, "child") == 0
    virq = pci_irq_vector(child, 0)
    vec = k.irq.irq_get_chip_data(virq).irq
    cpu, vector = k.irq.irq_vector_of(vec.virq)

    def teardown():
        pci_free_irq(child, 0, child)
        pci_free_irq_vectors(child)

    s = ControlledScheduler(k.ncpus)
    k.install_scheduler(s)
    s.raise_irq(cpu, vector)  # the VMD raised the parent vector for the child
    s.spawn(1 - cpu, teardown, name="teardown")
    looked_up = f"irq{virq}"

    def chooser(sched, choices):
        labels = [c.label for c in choices]
        irq_ctx = next((c.label for c in choices if c.label.startswith(f"irq{vector}@")), None)
        mine = [st for st in sched.trace if st.thread.startswith(f"irq{vector}@")]
        if not mine:
            return labels.index(irq_ctx)  # take the interrupt
        if not any(st.access and st.access[1] == looked_up for st in mine[:-1]) and \
                irq_ctx is not None and not (mine[-1].access and
                                             mine[-1].access[1] == looked_up):
            return labels.index(irq_ctx)  # run the handler up to its irq_to_desc(D)
        others = [lab for lab in labels if lab != irq_ctx]
        return labels.index(others[0]) if others else labels.index(irq_ctx)

    s.chooser = chooser
    s.run()
    return s, w, h


def test_rcu_list_with_immediate_descriptor_free_is_the_seeds_kaboom():
    s, _, _ = race("rcu", "immediate", hardirq_rcu_reader=False)
    assert isinstance(s.failure, UseAfterFree), s.failure
    report = str(s.failure)
    assert "irq_desc" in report and "handle_irq" in report and "freed by free_desc" in report
    assert s.failed_ctx.kind == "irq"


@pytest.mark.parametrize("reader", [False, True])
def test_srcu_teardown_waits_for_the_handler_and_is_safe(reader):
    s, w, h = race("srcu", "immediate", hardirq_rcu_reader=reader)
    assert s.failure is None, s.failure
    assert w.k.irq.active_irqs() == [v.virq for v in w.dm.vectors]  # the child's IRQ is gone
    waited = [st for st in s.trace if st.thread == "teardown" and st.access
              and st.access[2] == "wait"]
    assert waited  # synchronize_srcu had to wait for CPU0's reader


def test_rcu_descriptor_freeing_lets_the_reader_finish_on_the_stale_descriptor():
    s, w, h = race("rcu", "rcu", hardirq_rcu_reader=False)
    assert s.failure is None, s.failure
    assert "unexpected IRQ trap" in "\n".join(w.k.log.lines())  # handle_bad_irq, not freed memory
    assert h.calls == []
    assert not [o for o in w.k.mem.leaks("irq") if type(o).__name__ == "irq_desc"
                and o.irq not in {v.virq for v in w.dm.vectors}]


# -- the same, over every interleaving ----------------------------------------------------------
def seed_program(protocol: str, desc_free: str) -> Program:
    def world():
        w = setup(protocol)
        k, child = w.k, w.child
        k.irq.desc_free = desc_free
        k.irq.hardirq_rcu_reader = False
        k.run_on(0, pci_alloc_irq_vectors, child, 1, 1, PCI_IRQ_MSIX)
        w.h = Recorder()
        k.run_on(0, pci_request_irq, child, 0, w.h, None, child, "child")
        vec = k.irq.irq_get_chip_data(pci_irq_vector(child, 0)).irq
        w.cpu, w.vector = k.irq.irq_vector_of(vec.virq)
        return w

    def threads(w):
        def teardown():
            pci_free_irq(w.child, 0, w.child)
            pci_free_irq_vectors(w.child)

        return [(None, lambda: w.k.sched.raise_irq(w.cpu, w.vector), "vmd"),
                (1 - w.cpu, teardown, "teardown")]

    return Program(f"seed-{protocol}-{desc_free}", world, threads)


@pytest.mark.parametrize(("protocol", "desc_free", "verdict"), [
    ("rcu", "immediate", "use-after-free"),
    ("srcu", "immediate", "safe"),
    ("rcu", "rcu", "safe"),
])
def test_the_explorer_finds_the_kaboom_and_clears_the_fixes(protocol, desc_free, verdict):
    prog = seed_program(protocol, desc_free)
    world = World(prog)
    assert world.copies  # the post-setup world is copied, not rebuilt, per execution
    seen: set[str] = set()
    stats = dpor(prog, world=world,
                 on_execution=lambda ex: seen.add(ex.verdict) or ex.verdict == "safe")
    if verdict == "safe":
        assert seen == {"safe"} and stats.executions > 1  # every trace explored
    else:
        assert verdict in seen
