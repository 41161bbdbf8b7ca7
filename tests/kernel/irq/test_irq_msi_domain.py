"""An MSI domain with no parent, driven the way the VMD driver drives its own.

The test plays a small demultiplexer in the VMD's shape: a parent device's
MSI-X vectors each carry a list of child IRQs; the children live in an MSI
domain created with ``pci_msi_create_irq_domain(fwnode, info, None)``, whose
``msi_prepare`` cuts requests to the parent's vector count, whose
``msi_init`` picks a parent vector and installs ``handle_untracked_irq``, and
whose chip composes the child's message itself (no hierarchy below it).
Without VMD hardware a child's own MSI goes nowhere, so the test signals the
parent's vector, as the VMD would after remapping.
"""

from __future__ import annotations

import copy

import pytest
from irq_testbed import Recorder, msix_machine

from vmdsim.check.program import shares_state
from vmdsim.hw.regs import PCI_MSIX_ENTRY_SIZE
from vmdsim.kernel.io import readl
from vmdsim.kernel.irq.chip import irq_chip, irq_data_get_irq_chip_data
from vmdsim.kernel.irq.flags import ENOMEM, ENOSPC, IRQ_HANDLED, IrqError
from vmdsim.kernel.irq.flow import handle_untracked_irq
from vmdsim.kernel.irq.irqdomain import (
    DOMAIN_BUS_VMD_MSI,
    irq_domain_remove,
    irq_domain_set_info,
    irq_domain_update_bus_token,
)
from vmdsim.kernel.irq.msi import (
    MSI_FLAG_NO_AFFINITY,
    MSI_FLAG_PCI_MSIX,
    MSI_FLAG_USE_DEF_CHIP_OPS,
    MSI_FLAG_USE_DEF_DOM_OPS,
    msi_domain_info,
    msi_domain_ops,
)
from vmdsim.kernel.locking import raw_spin_lock_irqsave, raw_spin_unlock_irqrestore, raw_spinlock_t
from vmdsim.kernel.pci import dev_set_msi_domain, pci_resource_start
from vmdsim.kernel.pci.msi import (
    PCI_IRQ_MSIX,
    msi_desc_to_pci_dev,
    pci_alloc_irq_vectors,
    pci_free_irq,
    pci_free_irq_vectors,
    pci_irq_vector,
    pci_msi_create_irq_domain,
    pci_request_irq,
    to_pci_dev,
)
from vmdsim.kernel.rculist import (
    list_add_tail_rcu,
    list_del_rcu,
    list_entries,
    list_for_each_entry_rcu,
)
from vmdsim.kernel.rculist import list_head as list_head_t
from vmdsim.kernel.shared import KObject, shared
from vmdsim.kernel.srcu import (
    init_srcu_struct,
    srcu_read_lock,
    srcu_read_unlock,
    srcu_struct,
    synchronize_srcu,
)

NVEC = 2


class demux_vector(KObject):
    """``struct vmd_irq_list``: the children of one parent vector."""

    def __init__(self, k, index: int) -> None:
        self.k = k
        self.index = index
        self.irq_list = list_head_t()
        self.srcu = srcu_struct(f"demux{index}")
        init_srcu_struct(self.srcu)
        self.count = 0
        self.virq = 0


class demux_child(list_head_t):
    """``struct vmd_irq``."""

    enabled = shared()

    def __init__(self, vec: demux_vector, virq: int) -> None:
        super().__init__()
        self.__dict__["enabled"] = False
        self.irq = vec
        self.virq = virq


class demux:
    """The driver's state: its vectors, the list lock, counters the test reads."""

    def __init__(self, k, dev) -> None:
        self.k = k
        self.dev = dev
        self.vectors = [demux_vector(k, i) for i in range(NVEC)]
        self.list_lock = raw_spinlock_t("demux.list_lock")
        self.prepared: list[int] = []
        self.freed = 0
        self.fail_init = False


def demux_irq(irq: int, vec: demux_vector) -> int:
    idx = srcu_read_lock(vec.srcu)
    for child in list_for_each_entry_rcu(vec.irq_list):
        vec.k.irq.generic_handle_irq(child.virq)
    srcu_read_unlock(vec.srcu, idx)
    return IRQ_HANDLED


def demux_compose_msi_msg(d, msg) -> None:
    child: demux_child = d.chip_data
    msg.address_hi = 0
    msg.address_lo = 0xFEE00000 | child.irq.index << 12  # the parent vector in dest-ID bits
    msg.data = 0


def demux_irq_enable(d) -> None:
    child: demux_child = d.chip_data
    dm: demux = d.common.handler_data
    flags = raw_spin_lock_irqsave(dm.list_lock)
    list_add_tail_rcu(child, child.irq.irq_list)
    child.enabled = True
    raw_spin_unlock_irqrestore(dm.list_lock, flags)
    d.chip.irq_unmask(d)


def demux_irq_disable(d) -> None:
    child: demux_child = d.chip_data
    dm: demux = d.common.handler_data
    d.chip.irq_mask(d)
    flags = raw_spin_lock_irqsave(dm.list_lock)
    if child.enabled:
        list_del_rcu(child)
        child.enabled = False
    raw_spin_unlock_irqrestore(dm.list_lock, flags)


demux_chip = irq_chip("DEMUX-MSI", irq_enable=demux_irq_enable, irq_disable=demux_irq_disable,
                      irq_compose_msi_msg=demux_compose_msi_msg)


def demux_prepare(domain, dev, nvec, arg) -> int:
    dm: demux = domain.host_data.data
    dm.prepared.append(nvec)
    assert to_pci_dev(dev).dev is dev
    if nvec > NVEC:
        return NVEC  # "a request for more vectors than the VMD has is cut to that number"
    arg.reset()
    return 0


def demux_set_desc(arg, desc) -> None:
    arg.desc = desc


def demux_get_hwirq(info, arg) -> int:
    return 0


def demux_msi_init(domain, info, virq, hwirq, arg) -> int:
    dm: demux = info.data
    assert msi_desc_to_pci_dev(arg.desc).dev is arg.desc.dev
    child = None if dm.fail_init else domain.k.mem.kzalloc(demux_child, dm.vectors[0], virq,
                                                           owner="irq")
    if child is None:
        return -ENOMEM
    vec = min(dm.vectors, key=lambda v: (v.count, v.index))  # least loaded, lowest index
    vec.count += 1
    child.irq = vec
    irq_domain_set_info(domain, virq, vec.virq, info.chip, child, handle_untracked_irq, dm,
                        None)
    return 0


def demux_msi_free(domain, info, virq) -> None:
    dm: demux = info.data
    child = domain.k.irq.irq_get_chip_data(virq)
    synchronize_srcu(child.irq.srcu)
    child.irq.count -= 1
    dm.freed += 1
    domain.k.mem.kfree(child)


def setup():
    """Parent (ep0) with NVEC vectors and their demux handlers; the child domain; ep1 in it."""
    w = msix_machine(ncpus=2, endpoints=2)
    k, parent, child = w.k, w.devs[0], w.devs[1]
    dm = demux(k, parent)

    def probe():
        assert pci_alloc_irq_vectors(parent, NVEC, NVEC, PCI_IRQ_MSIX) == NVEC
        for vec in dm.vectors:
            vec.virq = pci_irq_vector(parent, vec.index)
            assert k.irq.request_irq(vec.virq, demux_irq, 0, "demux", vec) == 0
        fn = k.irq.irq_domain_alloc_named_id_fwnode("DEMUX-MSI", 0x10000)
        info = msi_domain_info(
            flags=MSI_FLAG_USE_DEF_DOM_OPS | MSI_FLAG_USE_DEF_CHIP_OPS | MSI_FLAG_NO_AFFINITY
            | MSI_FLAG_PCI_MSIX,
            ops=msi_domain_ops(get_hwirq=demux_get_hwirq, msi_init=demux_msi_init,
                               msi_free=demux_msi_free, msi_prepare=demux_prepare,
                               set_desc=demux_set_desc),
            chip=demux_chip, data=dm)
        domain = pci_msi_create_irq_domain(fn, info, None)
        irq_domain_update_bus_token(domain, DOMAIN_BUS_VMD_MSI)
        dev_set_msi_domain(child.dev, domain)
        return domain

    w.domain = k.run_on(0, probe)
    w.dm, w.parent, w.child = dm, parent, child
    return w


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
