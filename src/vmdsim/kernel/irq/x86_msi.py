"""The default PCI-MSI domain of x86 (``arch/x86/kernel/apic/msi.c``).

Since v6.2 x86 has no global PCI-MSI domain: the vector domain itself is an
MSI parent (``native_create_pci_msi_domain``) and every PCI device gets a
device domain on it (``msi_parent.py``), adapted by :func:`x86_init_dev_msi_info`.
What follows describes the global domain of v4.x-v6.1, which the model builds
when ``k.irq.pci_msi_domains`` is ``global``.

Every PCI device whose ``struct device`` names no MSI domain of its own gets
its MSI/MSI-X vectors from this domain, whose parent is the x86 vector
domain: the device level is the ``PCI-MSI`` chip (mask and unmask in the
device, ack and retrigger at the APIC), the flow handler ``handle_edge_irq``.
Without interrupt remapping x86 cannot give one device several MSI (not
MSI-X) vectors, so the domain lacks ``MSI_FLAG_MULTI_PCI_MSI``.

Linux creates it at boot: since v5.10 ``pci_arch_init`` (an arch_initcall, before
any driver registers) calls ``x86_create_pci_msi_domain``; up to v5.9
``arch_early_irq_init`` did, right after the vector domain. The model creates it
with the kernel: ``IrqSubsystem.__init__`` calls :func:`x86_create_pci_msi_domain`
right after the vector domain, so ``k.irq.x86_pci_msi_default_domain`` exists as
soon as the kernel does, before any driver, as in both eras. It is
a static domain (``owner=None``): never freed, so neither a leak nor an
allocation point for fault injection.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from vmdsim.kernel.errno import EINVAL
from vmdsim.kernel.irq.chip import irq_chip, irq_chip_ack_parent, irq_chip_retrigger_hierarchy
from vmdsim.kernel.irq.flags import IRQCHIP_AFFINITY_PRE_STARTUP, IRQCHIP_SKIP_SET_WAKE
from vmdsim.kernel.irq.flow import handle_edge_irq
from vmdsim.kernel.irq.irqdomain import (
    DOMAIN_BUS_ANY,
    DOMAIN_BUS_PCI_DEVICE_MSI,
    DOMAIN_BUS_PCI_DEVICE_MSIX,
    irq_domain,
)
from vmdsim.kernel.irq.msi import (
    MSI_FLAG_PCI_MSIX,
    MSI_FLAG_USE_DEF_CHIP_OPS,
    MSI_FLAG_USE_DEF_DOM_OPS,
    msi_alloc_info_t,
    msi_domain_info,
    msi_domain_ops,
    msi_first_desc,
)
from vmdsim.kernel.irq.msi_parent import (
    IRQ_DOMAIN_FLAG_MSI_PARENT,
    MSI_FLAG_PCI_MSIX_ALLOC_DYN,
    MSI_GENERIC_FLAGS_MASK,
    msi_parent_ops,
)
from vmdsim.kernel.pci.msi import pci_msi_create_irq_domain
from vmdsim.kernel.printk import pr_warn

if TYPE_CHECKING:
    from vmdsim.kernel.core import Kernel

X86_IRQ_ALLOC_TYPE_PCI_MSI = 3
X86_IRQ_ALLOC_TYPE_PCI_MSIX = 4
X86_IRQ_ALLOC_CONTIGUOUS_VECTORS = 1 << 0


def pci_msi_prepare(domain: irq_domain, dev: Any, nvec: int, arg: msi_alloc_info_t) -> int:
    """x86's ``msi_prepare``: say whether this is MSI or MSI-X to the vector domain."""
    arg.reset()
    desc = msi_first_desc(dev)
    if desc is not None and desc.is_msix:
        arg.type = X86_IRQ_ALLOC_TYPE_PCI_MSIX
    else:
        arg.type = X86_IRQ_ALLOC_TYPE_PCI_MSI
        arg.flags |= X86_IRQ_ALLOC_CONTIGUOUS_VECTORS
    return 0


# Static, as in Linux; USE_DEF_CHIP_OPS adds mask/unmask/write and the affinity setter.
pci_msi_controller = irq_chip("PCI-MSI", irq_ack=irq_chip_ack_parent,
                              irq_retrigger=irq_chip_retrigger_hierarchy,
                              flags=IRQCHIP_SKIP_SET_WAKE | IRQCHIP_AFFINITY_PRE_STARTUP)
pci_msi_domain_ops = msi_domain_ops(msi_prepare=pci_msi_prepare)


def x86_create_pci_msi_domain(k: Kernel) -> irq_domain:
    """``x86_create_pci_msi_domain``: the default PCI-MSI domain, under the vector domain
    (at boot, from ``IrqSubsystem.__init__``; it becomes ``x86_pci_msi_default_domain``)."""
    kirq = k.irq
    info = msi_domain_info(flags=MSI_FLAG_USE_DEF_DOM_OPS | MSI_FLAG_USE_DEF_CHIP_OPS
                           | MSI_FLAG_PCI_MSIX, ops=pci_msi_domain_ops,
                           chip=pci_msi_controller, handler=handle_edge_irq,
                           handler_name="edge")
    fn = kirq.irq_domain_alloc_named_fwnode("PCI-MSI", owner=None)
    domain = pci_msi_create_irq_domain(fn, info, kirq.x86_vector_domain, owner=None)
    assert domain is not None  # static: nothing to fail
    return domain


def x86_pci_msi_default_domain(k: Kernel) -> irq_domain:
    """``x86_pci_msi_default_domain``: the domain created at boot."""
    return k.irq.x86_pci_msi_default_domain


# -- v6.2+: the vector domain as MSI parent ------------------------------------------------------
# Without interrupt remapping: no multi-MSI (MSI_FLAG_MULTI_PCI_MSI is not supported).
X86_VECTOR_MSI_FLAGS_SUPPORTED = (MSI_GENERIC_FLAGS_MASK | MSI_FLAG_PCI_MSIX
                                  | MSI_FLAG_PCI_MSIX_ALLOC_DYN)
X86_VECTOR_MSI_FLAGS_REQUIRED = MSI_FLAG_USE_DEF_DOM_OPS | MSI_FLAG_USE_DEF_CHIP_OPS


def x86_msi_prepare(domain: irq_domain, dev: Any, nvec: int, alloc: msi_alloc_info_t) -> int:
    """A device domain's ``msi_prepare``: the allocation type from the domain's bus token."""
    alloc.reset()
    info: msi_domain_info = domain.host_data
    if info.bus_token == DOMAIN_BUS_PCI_DEVICE_MSI:
        alloc.type = X86_IRQ_ALLOC_TYPE_PCI_MSI
    elif info.bus_token == DOMAIN_BUS_PCI_DEVICE_MSIX:
        alloc.type = X86_IRQ_ALLOC_TYPE_PCI_MSIX
    else:
        return -EINVAL
    return 0


def x86_init_dev_msi_info(dev: Any, domain: irq_domain, real_parent: irq_domain,
                          info: msi_domain_info) -> bool:
    """Adapt a PCI device domain to the vector domain: supported and required flags, ack
    and retrigger at the APIC, ``handle_edge_irq``. x86's own ``msi_set_affinity`` (its
    careful update of a message that cannot be masked) is modelled as the generic
    ``msi_domain_set_affinity`` that ``MSI_FLAG_USE_DEF_CHIP_OPS`` installs."""
    k = real_parent.k
    pops: msi_parent_ops = real_parent.msi_parent_ops
    if real_parent.bus_token != DOMAIN_BUS_ANY or domain is not real_parent:
        pr_warn(k, "WARNING: x86_init_dev_msi_info: not the vector domain")
        return False
    if info.bus_token not in (DOMAIN_BUS_PCI_DEVICE_MSI, DOMAIN_BUS_PCI_DEVICE_MSIX):
        pr_warn(k, f"WARNING: x86_init_dev_msi_info: bus token {info.bus_token}")
        return False
    info.flags &= pops.supported_flags
    info.flags |= X86_VECTOR_MSI_FLAGS_REQUIRED
    assert info.ops is not None and info.chip is not None  # a template's copy has both
    info.ops.msi_prepare = x86_msi_prepare
    info.chip.irq_ack = irq_chip_ack_parent
    info.chip.irq_retrigger = irq_chip_retrigger_hierarchy
    info.chip.flags |= IRQCHIP_SKIP_SET_WAKE | IRQCHIP_AFFINITY_PRE_STARTUP
    info.handler = handle_edge_irq
    info.handler_name = "edge"
    return True


# Static, as in Linux.
x86_vector_msi_parent_ops = msi_parent_ops(supported_flags=X86_VECTOR_MSI_FLAGS_SUPPORTED,
                                           init_dev_msi_info=x86_init_dev_msi_info)


def native_create_pci_msi_domain(k: Kernel) -> irq_domain:
    """v6.2+: make the vector domain an MSI parent; it is x86_pci_msi_default_domain."""
    vector = k.irq.x86_vector_domain
    vector.flags |= IRQ_DOMAIN_FLAG_MSI_PARENT
    vector.msi_parent_ops = x86_vector_msi_parent_ops
    return vector
