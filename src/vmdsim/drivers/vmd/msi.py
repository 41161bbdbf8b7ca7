"""The VMD's interrupts: its own MSI-X vectors, and the MSI domain its children allocate from.

Remapping on, a child's MSI/MSI-X message does not go to a CPU: its address
carries a VMD vector index in the destination-ID bits (19:12), and the VMD
raises that vector of its own MSI-X table. The driver therefore:

- allocates its own vectors (``vmd_alloc_irqs``: between ``first_vec + 1`` and
  all of them), and for each one a ``vmd_irq_list`` (the child IRQs it
  demultiplexes to), an SRCU domain, and a handler (``demux.py``);
- creates an MSI domain **with no parent** (the review's point: a parent
  linear domain sized to the VMD's vector count was never reached by the
  allocation path). Its ``msi_init`` picks the vector through the instance's
  policy (``policies.py``), remembers it in a per-child :class:`vmd_irq` and
  installs ``handle_untracked_irq``; ``msi_prepare`` cuts a request for more
  vectors than the VMD has to that number; ``msi_free`` follows the
  instance's teardown protocol (``demux.py``);
- gives children the ``VMD-MSI`` chip: ``irq_enable`` puts the child on the
  tail of its vector's list under the global raw spinlock, then unmasks it at
  the device; ``irq_disable`` masks it, then takes it off the list;
  ``irq_compose_msi_msg`` is ``0xFEE00000 | (index << 12)``, data 0. Mask,
  unmask and the message write are the PCI/MSI defaults
  (``MSI_FLAG_USE_DEF_CHIP_OPS``).

Bypass (parts that can, on bare metal): the remap-disable bit is set, no
vector, list or domain exists, and children get the ordinary PCI/MSI domain;
removal turns remapping back on ("some production BIOS won't enable
remapping between soft reboots").

Where the model differs from Linux: the vector lists are separate
allocations and their SRCU structures are cleaned up by a managed action
(so a failed probe unwinds them too; Linux cleans them in ``vmd_remove``
only); the remap bit a failed probe changed is put back; the per-child
``vmd_irq`` also records its VMD, its CPU and whether it counts as "fast",
which the policies, the queries and the rebalancer use.
"""

from __future__ import annotations

from typing import Any

from vmdsim.drivers.vmd.dev import (
    index_from_irqs,
    vmd_dev,
    vmd_free_msi_domain,
    vmd_from_bus,
    vmd_irq,
    vmd_irq_list,
)
from vmdsim.drivers.vmd.features import PCI_REG_VMCONFIG, VMCONFIG_MSI_REMAP
from vmdsim.drivers.vmd.rfc_v3 import (
    vmd_create_parent_domain,
    vmd_flow_handler,
    vmd_remove_parent_domain,
)
from vmdsim.kernel.errno import ENODEV, ENOMEM
from vmdsim.kernel.irq.chip import irq_chip
from vmdsim.kernel.irq.flags import IRQF_NO_THREAD
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
from vmdsim.kernel.locking import raw_spin_lock_irqsave, raw_spin_unlock_irqrestore
from vmdsim.kernel.pci import (
    devm_add_action_or_reset,
    pci_read_config_word,
    pci_write_config_word,
)
from vmdsim.kernel.pci.msi import (
    PCI_IRQ_MSIX,
    msi_desc_to_pci_dev,
    pci_alloc_irq_vectors,
    pci_irq_vector,
    pci_msi_create_irq_domain,
    pci_msix_vec_count,
    to_pci_dev,
)
from vmdsim.kernel.pci.pci_h import PCI_CLASS_STORAGE_EXPRESS
from vmdsim.kernel.pci.subsys import pci_warn
from vmdsim.kernel.rculist import INIT_LIST_HEAD, list_add_tail_rcu, list_del_rcu
from vmdsim.kernel.srcu import cleanup_srcu_struct, init_srcu_struct

X86_MSI_BASE_ADDRESS_LOW = 0xFEE00000
X86_MSI_BASE_ADDRESS_HIGH = 0
MSI_ADDR_DEST_ID_SHIFT = 12


# -- the remap bit ---------------------------------------------------------------------------
def vmd_set_msi_remapping(vmd: vmd_dev, enable: bool) -> None:
    """Clear (enable remapping) or set (bypass) VMCONFIG bit 1. The first change a probe
    makes is remembered, so a failed probe can put the bit back."""
    _, reg = pci_read_config_word(vmd.dev, PCI_REG_VMCONFIG)
    if vmd.remap_saved is None:
        vmd.remap_saved = reg & VMCONFIG_MSI_REMAP
    reg = reg & ~VMCONFIG_MSI_REMAP if enable else reg | VMCONFIG_MSI_REMAP
    pci_write_config_word(vmd.dev, PCI_REG_VMCONFIG, reg)


def vmd_restore_msi_remapping(vmd: vmd_dev) -> None:
    """Model: a failed probe leaves VMCONFIG bit 1 as it found it."""
    if vmd.remap_saved is None:
        return
    _, reg = pci_read_config_word(vmd.dev, PCI_REG_VMCONFIG)
    reg = (reg & ~VMCONFIG_MSI_REMAP) | vmd.remap_saved
    pci_write_config_word(vmd.dev, PCI_REG_VMCONFIG, reg)


# -- the child chip --------------------------------------------------------------------------
def vmd_compose_msi_msg(data: Any, msg: Any) -> None:
    """The child's message: the x86 MSI base with the VMD vector index as destination ID."""
    vmdirq: vmd_irq = data.chip_data
    vmd = vmdirq.vmd
    msg.address_hi = X86_MSI_BASE_ADDRESS_HIGH
    msg.address_lo = X86_MSI_BASE_ADDRESS_LOW | (
        index_from_irqs(vmd, vmdirq.irq) << MSI_ADDR_DEST_ID_SHIFT)
    msg.data = 0


def vmd_irq_list_add(vmdirq: vmd_irq, irq: int) -> None:
    """Put a child on the tail of its vector's list under the list lock (the list half of
    ``vmd_irq_enable``, which v6.17 made the VMD level's own op)."""
    lock = vmdirq.vmd.module.list_lock
    flags = raw_spin_lock_irqsave(lock)
    if vmdirq.enabled:
        pci_warn(vmdirq.vmd.dev, f"WARN: vmd_irq_enable: IRQ {irq} already enabled")
    list_add_tail_rcu(vmdirq, vmdirq.irq.irq_list)
    vmdirq.enabled = True
    raw_spin_unlock_irqrestore(lock, flags)


def vmd_irq_list_del(vmdirq: vmd_irq) -> None:
    """Take a child off its vector's list under the list lock, if it is on it."""
    lock = vmdirq.vmd.module.list_lock
    flags = raw_spin_lock_irqsave(lock)
    if vmdirq.enabled:
        list_del_rcu(vmdirq)
        vmdirq.enabled = False
    raw_spin_unlock_irqrestore(lock, flags)


def vmd_irq_enable(data: Any) -> None:
    """Publish the child on its vector's list (tail, under the list lock), then unmask it."""
    vmd_irq_list_add(data.chip_data, data.irq)
    data.chip.irq_unmask(data)


def vmd_irq_disable(data: Any) -> None:
    """Mask the child at the device, then take it off its vector's list."""
    data.chip.irq_mask(data)
    vmd_irq_list_del(data.chip_data)


# A static structure, as in Linux: shared by every VMD (and every kernel).
vmd_msi_controller = irq_chip("VMD-MSI", irq_enable=vmd_irq_enable,
                              irq_disable=vmd_irq_disable,
                              irq_compose_msi_msg=vmd_compose_msi_msg)


# -- the domain's ops --------------------------------------------------------------------------
def vmd_get_hwirq(info: Any, arg: Any) -> int:
    return 0


def vmd_next_irq(vmd: vmd_dev, desc: Any, virq: int, vmdirq: vmd_irq) -> vmd_irq_list:
    """The vector a new child IRQ goes to: the instance's policy decides (and counts it)."""
    return vmd.policy.next_irq(vmd, desc, virq, vmdirq)


def child_is_fast(desc: Any) -> bool:
    """NVMe children get the "fast" vectors; everything else shares the slow one."""
    return msi_desc_to_pci_dev(desc).class_ == PCI_CLASS_STORAGE_EXPRESS


def vmd_msi_init(domain: Any, info: Any, virq: int, hwirq: int, arg: Any) -> int:
    """A new child IRQ: pick its vector, remember it, install the untracked flow handler."""
    desc = arg.desc
    pdev = msi_desc_to_pci_dev(desc)
    vmd = vmd_from_bus(pdev.bus)
    vmdirq = vmd.dev.k.mem.kzalloc(vmd_irq, vmd, owner="vmd")
    if vmdirq is None:
        return -ENOMEM
    INIT_LIST_HEAD(vmdirq)
    vmdirq.fast = child_is_fast(desc)
    vmdirq.cpu = child_cpu(desc, hwirq)
    vmdirq.irq = vmd_next_irq(vmd, desc, virq, vmdirq)
    vmdirq.virq = virq
    irq_domain_set_info(domain, virq, vmdirq.irq.virq, info.chip, vmdirq,
                        handle_untracked_irq, vmd, None)
    return 0


def child_cpu(desc: Any, hwirq: int) -> int:
    """The one CPU a managed (per-queue) child vector belongs to; -1 if it has none.

    ``hwirq`` is the vector's index inside its descriptor (``vmd_get_hwirq`` is 0)."""
    affinity = desc.affinity
    if not affinity:
        return -1
    aff = affinity[min(hwirq, len(affinity) - 1)]
    if aff.is_managed and len(aff.mask) == 1:
        return next(iter(aff.mask))
    return -1


def vmd_msi_free(domain: Any, info: Any, virq: int) -> None:
    """A child IRQ goes: the instance's protocol waits (or not), uncounts, frees the mapping;
    a rebalancing policy then evens out the vectors."""
    vmdirq: vmd_irq = domain.k.irq.irq_get_chip_data(virq)
    vmd = vmdirq.vmd
    vmd.protocol.msi_free(vmd, vmdirq)
    vmd.policy.after_free(vmd)


def vmd_msi_prepare(domain: Any, dev: Any, nvec: int, arg: Any) -> int:
    """Cut a request for more vectors than the VMD has to that number (a positive return)."""
    vmd = vmd_from_bus(to_pci_dev(dev).bus)
    if nvec > vmd.msix_count:
        return vmd.msix_count
    arg.reset()
    return 0


def vmd_set_desc(arg: Any, desc: Any) -> None:
    arg.desc = desc


vmd_msi_domain_ops = msi_domain_ops(get_hwirq=vmd_get_hwirq, msi_init=vmd_msi_init,
                                    msi_free=vmd_msi_free, msi_prepare=vmd_msi_prepare,
                                    set_desc=vmd_set_desc)

vmd_msi_domain_info = msi_domain_info(
    flags=(MSI_FLAG_USE_DEF_DOM_OPS | MSI_FLAG_USE_DEF_CHIP_OPS | MSI_FLAG_NO_AFFINITY
           | MSI_FLAG_PCI_MSIX),
    ops=vmd_msi_domain_ops, chip=vmd_msi_controller)


def vmd_create_irq_domain(vmd: vmd_dev) -> int:
    """The VMD MSI domain, with no parent (or the RFC's linear one); 0 or -ENODEV."""
    kirq = vmd.dev.k.irq
    fn = kirq.irq_domain_alloc_named_id_fwnode("VMD-MSI", vmd.sysdata.domain)
    if fn is None:
        return -ENODEV
    if vmd.module.parent == "linear":
        vmd.parent_domain = vmd_create_parent_domain(vmd)
        if vmd.parent_domain is None:
            kirq.irq_domain_free_fwnode(fn)
            return -ENODEV
    vmd.irq_domain = pci_msi_create_irq_domain(fn, vmd_msi_domain_info, vmd.parent_domain)
    if vmd.irq_domain is None:
        vmd_remove_parent_domain(vmd)
        kirq.irq_domain_free_fwnode(fn)
        return -ENODEV
    # Tell this domain apart from an ordinary PCI/MSI one.
    irq_domain_update_bus_token(vmd.irq_domain, DOMAIN_BUS_VMD_MSI)
    return 0


def vmd_remove_irq_domain(vmd: vmd_dev) -> None:
    """Remove the MSI domain; turn remapping back on if this VMD had bypassed it."""
    if not vmd.msix_count:
        vmd_set_msi_remapping(vmd, True)
    vmd_free_msi_domain(vmd)
    vmd_remove_parent_domain(vmd)


# -- the VMD's own vectors -------------------------------------------------------------------
def vmd_cleanup_srcu(vmd: vmd_dev) -> None:
    """Clean up every initialised SRCU structure (a managed action: runs after the
    vector handlers are freed, on remove and on a failed probe alike)."""
    for irqs in vmd.irqs:
        if irqs.srcu.initialized:
            cleanup_srcu_struct(irqs.srcu)


def vmd_free_irq_lists(vmd: vmd_dev) -> None:
    mem = vmd.dev.k.mem
    for irqs in vmd.irqs:
        mem.kfree(irqs)
    vmd.irqs = []


def vmd_alloc_irqs(vmd: vmd_dev) -> int:
    """Allocate the VMD's MSI-X vectors (at least ``first_vec + 1``), a list, an SRCU
    domain and a handler for each; 0 or -errno. Everything is managed (devres)."""
    dev = vmd.dev
    k = dev.k
    count = pci_msix_vec_count(dev)
    if count < 0:
        return -ENODEV
    count = pci_alloc_irq_vectors(dev, vmd.first_vec + 1, count, PCI_IRQ_MSIX)
    if count < 0:
        return count
    vmd.msix_count = count

    # devm_kcalloc: one list per vector (the model allocates each; any may fail)
    if devm_add_action_or_reset(dev.dev, vmd_free_irq_lists, vmd):
        return -ENOMEM
    for i in range(count):
        irqs = k.mem.kzalloc(vmd_irq_list, i, vmd, owner="vmd")
        if irqs is None:
            return -ENOMEM
        vmd.irqs.append(irqs)
    if devm_add_action_or_reset(dev.dev, vmd_cleanup_srcu, vmd):
        return -ENOMEM

    # The RFC's chained handlers: today's remove uninstalls them through devres (before
    # the lists are freed); the RFC's never does (rfc_v3.py).
    chained = vmd.module.handler == "chained"
    if chained and vmd.module.remove != "rfc-v3" and \
            devm_add_action_or_reset(dev.dev, vmd_uninstall_chained_handlers, vmd):
        return -ENOMEM
    handler = vmd.protocol.handler
    for i, irqs in enumerate(vmd.irqs):
        err = init_srcu_struct(irqs.srcu)
        if err:
            return err
        INIT_LIST_HEAD(irqs.irq_list)
        irqs.virq = pci_irq_vector(dev, i)
        if chained:
            k.irq.irq_set_chained_handler_and_data(irqs.virq, vmd_flow_handler, irqs)
            continue
        err = k.irq.devm_request_irq(dev.dev, irqs.virq, handler, IRQF_NO_THREAD, vmd.name,
                                     irqs)
        if err:
            return err
    return vmd.policy.setup(vmd)


def vmd_uninstall_chained_handlers(vmd: vmd_dev) -> None:
    """Model-named managed action: ``irq_set_chained_handler_and_data(irq, NULL, NULL)``
    on every vector that has one, what the review asked the RFC's remove to do. It does
    not wait for a handler running on another CPU: a chained handler is no action, and
    ``synchronize_irq`` waits only for actions."""
    kirq = vmd.dev.k.irq
    for irqs in vmd.irqs:
        if irqs.virq:
            kirq.irq_set_chained_handler_and_data(irqs.virq, None, None)
