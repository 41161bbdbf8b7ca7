"""An MSI domain with no parent, driven the way the VMD driver drives its own
(see ``irq_demux``): allocation through its own ops, its own messages, the
demultiplexing flow, teardown, failure, and copying for the explorer."""

from __future__ import annotations

import copy

import pytest
from irq_demux import NVEC, demux_child, setup
from irq_testbed import Recorder

from vmdsim.check.program import shares_state
from vmdsim.hw.regs import PCI_MSIX_ENTRY_SIZE
from vmdsim.kernel.base.devres import devres_release_all
from vmdsim.kernel.errno import ENOSPC
from vmdsim.kernel.io import readl
from vmdsim.kernel.irq.chip import irq_data_get_irq_chip_data
from vmdsim.kernel.irq.flags import IrqError
from vmdsim.kernel.irq.irqdomain import irq_domain_remove
from vmdsim.kernel.pci import pci_resource_start
from vmdsim.kernel.pci.msi import (
    PCI_IRQ_MSIX,
    pci_alloc_irq_vectors,
    pci_free_irq,
    pci_free_irq_vectors,
    pci_irq_vector,
    pci_request_irq,
)
from vmdsim.kernel.rculist import list_entries


def child_entry(w, i):
    """Read child's MSI-X entry i through MMIO (the table is at BAR0 + 0x2000)."""
    base = w.k.io.ioremap(pci_resource_start(w.child, 0) + 0x2000, 4 * PCI_MSIX_ENTRY_SIZE)
    value = (readl(base + i * PCI_MSIX_ENTRY_SIZE), readl(base + i * PCI_MSIX_ENTRY_SIZE + 8))
    w.k.io.iounmap(base)
    return value


def test_a_domain_without_parent_allocates_through_its_own_ops_and_composes_its_messages():
    w = setup()
    k = w.k
    n = k.run_on(0, pci_alloc_irq_vectors, w.child, 1, 4, PCI_IRQ_MSIX)
    assert n == NVEC and w.dm.prepared == [4, NVEC]  # cut, then retried
    virqs = [pci_irq_vector(w.child, i) for i in range(n)]
    for i, virq in enumerate(virqs):
        d = k.irq.irq_get_irq_data(virq)
        assert d.domain is w.domain and d.parent_data is None  # no hierarchy below
        assert d.chip.name == "DEMUX-MSI" and k.irq.irq_vector_of(virq) is None
        child = irq_data_get_irq_chip_data(d)
        assert child.irq is w.dm.vectors[i] and d.hwirq == w.dm.vectors[i].virq
        assert child_entry(w, i) == (0xFEE00000 | i << 12, 0)  # written at allocation
    with pytest.raises(IrqError, match="still mapped"):
        k.run_on(0, irq_domain_remove, w.domain)


def test_the_parent_vector_demultiplexes_to_untracked_child_handlers_on_its_cpu():
    w = setup()
    k = w.k
    k.run_on(0, pci_alloc_irq_vectors, w.child, 1, 4, PCI_IRQ_MSIX)
    h = Recorder()
    for i in range(NVEC):
        assert k.run_on(0, pci_request_irq, w.child, i, h, None, w.child, f"child-q{i}") == 0
    assert [len(list_entries(v.irq_list)) for v in w.dm.vectors] == [1, 1]  # irq_enable
    virqs = [pci_irq_vector(w.child, i) for i in range(NVEC)]
    parent_cpu = k.irq.irq_vector_of(w.dm.vectors[1].virq)[0]
    w.eps[0].msix.fire(1)  # the parent's vector 1: the VMD raising it for a child
    assert h.calls == [(virqs[1], parent_cpu, w.child)]
    assert k.irq.kstat_irqs(virqs[1]) == 0  # untracked: no statistics, as in Linux
    assert k.irq.irq_to_desc(virqs[1]).action.calls == 1

    def vector_of(irq, desc):
        child = desc.irq_data.chip_data
        return f"demux:{child.irq.index}" if isinstance(child, demux_child) else None

    table = k.irq.show_interrupts(extra=vector_of)
    row = next(line for line in table.splitlines() if line.startswith(f"{virqs[1]:>3}:"))
    assert "DEMUX-MSI" in row and "child-q1  demux:1" in row
    assert f" {w.dm.vectors[1].virq}" in row  # hwirq: the parent's IRQ


def test_teardown_removes_children_from_their_vector_then_frees_everything():
    w = setup()
    k = w.k
    k.run_on(0, pci_alloc_irq_vectors, w.child, 1, 4, PCI_IRQ_MSIX)
    h = Recorder()
    for i in range(NVEC):
        k.run_on(0, pci_request_irq, w.child, i, h, None, w.child, f"child-q{i}")
    for i in range(NVEC):
        k.run_on(0, pci_free_irq, w.child, i, w.child)
    assert [list_entries(v.irq_list) for v in w.dm.vectors] == [[], []]  # irq_disable
    assert child_entry(w, 0) == (0, 0)  # deactivated: a zero message
    w.eps[0].msix.fire(0)
    assert h.calls == []
    k.run_on(0, pci_free_irq_vectors, w.child)
    assert w.dm.freed == NVEC and [v.count for v in w.dm.vectors] == [0, 0]
    fn = w.domain.fwnode
    k.run_on(0, irq_domain_remove, w.domain)
    k.irq.irq_domain_free_fwnode(fn)
    for vec in w.dm.vectors:
        k.run_on(0, k.irq.free_irq, vec.virq, vec)
    k.run_on(0, pci_free_irq_vectors, w.parent)
    # the parent's device domain (v6.2+) goes with its devres, as at unbind
    k.run_on(0, devres_release_all, w.parent.dev)
    assert k.mem.leaks("irq") == [] and k.irq.active_irqs() == []


def test_a_failing_msi_init_frees_what_was_allocated():
    w = setup()
    k = w.k
    before = k.mem.leaks("irq")
    w.dm.fail_init = True
    # msi_handle_pci_fail: a PCI/MSI domain that allocated nothing reports -ENOSPC
    assert k.run_on(0, pci_alloc_irq_vectors, w.child, 1, 2, PCI_IRQ_MSIX) == -ENOSPC
    assert not w.child.msix_enabled
    assert k.mem.leaks("irq") == before
    assert w.dm.prepared == [2] and w.dm.freed == 0


def test_a_world_with_irqs_set_up_copies_cleanly_for_the_explorer():
    w = setup()
    w.k.run_on(0, pci_alloc_irq_vectors, w.child, 1, 4, PCI_IRQ_MSIX)
    h = Recorder()
    w.h = h
    w.k.run_on(0, pci_request_irq, w.child, 0, h, None, w.child, "child-q0")
    clone = copy.deepcopy(w)
    assert not shares_state(w, clone)
    clone.eps[0].msix.fire(0)
    assert len(clone.h.calls) == 1 and h.calls == []
