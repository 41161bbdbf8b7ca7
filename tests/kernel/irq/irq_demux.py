"""A small demultiplexer in the VMD driver's shape, for the IRQ-core tests.

A parent device's MSI-X vectors each carry a list of child IRQs; the
children live in an MSI domain created with
``pci_msi_create_irq_domain(fwnode, info, None)``, whose ``msi_prepare``
cuts requests to the parent's vector count, whose ``msi_init`` picks the
least-loaded parent vector and installs ``handle_untracked_irq``, and whose
chip composes the child's message itself (no hierarchy below it).
``irq_enable``/``irq_disable`` add and remove a child on its vector's list.

``protocol`` picks the teardown protocol the seed discusses: ``"srcu"``
(today's vmd.c: the handler walks the list under SRCU, ``msi_free`` waits in
``synchronize_srcu`` and frees the mapping) or ``"rcu"`` (the RFC after the
review's first advice: RCU read side, mapping freed with ``kfree_rcu``).
Without VMD hardware a child's own MSI goes nowhere, so tests signal the
parent's vector, as the VMD would after remapping.
"""

from __future__ import annotations

from irq_testbed import msix_machine

from vmdsim.kernel.errno import ENOMEM
from vmdsim.kernel.irq.chip import irq_chip
from vmdsim.kernel.irq.flags import IRQ_HANDLED
from vmdsim.kernel.irq.flow import handle_untracked_irq
from vmdsim.kernel.irq.irqdomain import (
    DOMAIN_BUS_VMD_MSI,
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
from vmdsim.kernel.pci import dev_set_msi_domain
from vmdsim.kernel.pci.msi import (
    PCI_IRQ_MSIX,
    msi_desc_to_pci_dev,
    pci_alloc_irq_vectors,
    pci_irq_vector,
    pci_msi_create_irq_domain,
    to_pci_dev,
)
from vmdsim.kernel.rcu import rcu_read_lock, rcu_read_unlock
from vmdsim.kernel.rculist import list_add_tail_rcu, list_del_rcu, list_for_each_entry_rcu
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
    virq = shared()

    def __init__(self, vec: demux_vector, virq: int) -> None:
        super().__init__()
        self.__dict__.update(enabled=False, virq=virq)
        self.irq = vec


class demux:
    """The driver's state: its vectors, the list lock, counters the test reads."""

    def __init__(self, k, dev, protocol: str) -> None:
        self.k = k
        self.dev = dev
        self.protocol = protocol
        self.vectors = [demux_vector(k, i) for i in range(NVEC)]
        self.list_lock = raw_spinlock_t("demux.list_lock")
        self.prepared: list[int] = []
        self.freed = 0
        self.fail_init = False


def demux_irq(irq: int, vec: demux_vector) -> int:
    """``vmd_irq``: run every child IRQ of this vector."""
    idx = srcu_read_lock(vec.srcu)
    for child in list_for_each_entry_rcu(vec.irq_list):
        vec.k.irq.generic_handle_irq(child.virq)
    srcu_read_unlock(vec.srcu, idx)
    return IRQ_HANDLED


def demux_irq_rcu(irq: int, vec: demux_vector) -> int:
    """The RFC's flow: the same walk under ``rcu_read_lock``."""
    rcu_read_lock()
    for child in list_for_each_entry_rcu(vec.irq_list):
        vec.k.irq.generic_handle_irq(child.virq)
    rcu_read_unlock()
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
    flags = raw_spin_lock_irqsave(dm.list_lock)
    vec = min(dm.vectors, key=lambda v: (v.count, v.index))  # least loaded, lowest index
    vec.count += 1
    raw_spin_unlock_irqrestore(dm.list_lock, flags)
    child.irq = vec
    irq_domain_set_info(domain, virq, vec.virq, info.chip, child, handle_untracked_irq, dm,
                        None)
    return 0


def demux_msi_free(domain, info, virq) -> None:
    dm: demux = info.data
    child = domain.k.irq.irq_get_chip_data(virq)
    flags = raw_spin_lock_irqsave(dm.list_lock)
    child.irq.count -= 1
    raw_spin_unlock_irqrestore(dm.list_lock, flags)
    dm.freed += 1
    if dm.protocol == "srcu":
        synchronize_srcu(child.irq.srcu)
        domain.k.mem.kfree(child)
    else:
        domain.k.mem.kfree_rcu(child)


def setup(protocol: str = "srcu", ncpus: int = 2):
    """Parent (ep0) with NVEC vectors and their demux handlers; the child domain; ep1 in it."""
    w = msix_machine(ncpus=ncpus, endpoints=2)
    k, parent, child = w.k, w.devs[0], w.devs[1]
    dm = demux(k, parent, protocol)
    handler = demux_irq if protocol == "srcu" else demux_irq_rcu

    def probe():
        assert pci_alloc_irq_vectors(parent, NVEC, NVEC, PCI_IRQ_MSIX) == NVEC
        for vec in dm.vectors:
            vec.virq = pci_irq_vector(parent, vec.index)
            assert k.irq.request_irq(vec.virq, handler, 0, "demux", vec) == 0
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
