"""MSI parent domains and per-device MSI domains (``kernel/irq/msi.c``, Linux v6.2+).

Since v6.2 a PCI device's MSI domain is its own: when the domain the device
points at (``dev->msi.domain``) is an *MSI parent* (``IRQ_DOMAIN_FLAG_MSI_PARENT``
with :class:`msi_parent_ops`), enabling MSI or MSI-X creates a domain for
that one device from a :class:`msi_domain_template` (the PCI core's
``pci_msi_template`` or ``pci_msix_template``), stacked on the parent:

- the template is copied (``kmemdup``), and its chip renamed
  ``<parent's prefix><chip>-<device>``: ``PCI-MSIX-0000:00:0e.0`` under the x86
  vector domain, ``IR-PCI-MSIX-...`` under interrupt remapping, and
  ``VMD-PCI-MSIX-10000:01:00.0`` under a v6.17+ VMD; ``/proc/interrupts``
  prints that name and the vector's index in the device (its hwirq);
- the parent's ``init_dev_msi_info`` adapts the copy: masks the flags it
  does not support, adds the ones it requires, sets the chip's ack and
  affinity callbacks and the flow handler (x86), or replaces enable and
  disable (the VMD);
- the domain lives until the device's MSI data is released (at unbind, the
  devres of ``msi_setup_device_data``) or the device switches between MSI and
  MSI-X.

A domain that is not an MSI parent (the legacy global PCI-MSI domain of x86
before v6.2, the VMD's own MSI domain before v6.17) is used directly, as before.

Model simplifications: one device domain per device (``MSI_DEFAULT_DOMAIN``;
Linux also has a secondary one for IMS); the parent's ``msi_prepare`` runs at
each allocation, not once when the domain is created; the bundle's chip,
ops and info are copied field by field.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from vmdsim.kernel.irq.irqdesc import irq_chip
from vmdsim.kernel.irq.irqdomain import (
    irq_domain,
    irq_domain_create_hierarchy,
    irq_domain_ops,
    irq_domain_remove,
)
from vmdsim.kernel.irq.msi import (
    msi_create_irq_domain,
    msi_device_data_get,
    msi_domain_info,
    msi_domain_ops,
    msi_free_device_data_if_unused,
    msi_setup_device_data,
)
from vmdsim.kernel.locking import mutex_lock, mutex_unlock
from vmdsim.kernel.printk import pr_warn
from vmdsim.kernel.shared import KObject

if TYPE_CHECKING:
    from vmdsim.kernel.irq.irqdomain import fwnode_handle

IRQ_DOMAIN_FLAG_MSI_PARENT = 1 << 8
IRQ_DOMAIN_FLAG_MSI_DEVICE = 1 << 9

MSI_DEFAULT_DOMAIN = 0

# The generic MSI flags (bits 0-15) and the domain-specific ones (16-31), include/linux/msi.h
MSI_GENERIC_FLAGS_MASK = 0xFFFF
MSI_FLAG_PCI_MSI_MASK_PARENT = 1 << 9
MSI_FLAG_PCI_MSI_STARTUP_PARENT = 1 << 10
MSI_FLAG_PCI_MSIX_ALLOC_DYN = 1 << 20

InitDevMsiInfo = Callable[[Any, irq_domain, irq_domain, msi_domain_info], bool]


class msi_parent_ops:
    """``struct msi_parent_ops``: what an MSI parent offers the device domains above it."""

    def __init__(self, *, supported_flags: int = 0, required_flags: int = 0,
                 bus_select_token: int = 0, bus_select_mask: int = 0, prefix: str = "",
                 init_dev_msi_info: InitDevMsiInfo | None = None) -> None:
        self.supported_flags = supported_flags
        self.required_flags = required_flags
        self.bus_select_token = bus_select_token
        self.bus_select_mask = bus_select_mask
        self.prefix = prefix
        self.init_dev_msi_info = init_dev_msi_info


class msi_domain_template(KObject):
    """``struct msi_domain_template``: the chip, ops and info a device domain is made from."""

    def __init__(self, chip: irq_chip, ops: msi_domain_ops, info: msi_domain_info) -> None:
        self.chip = chip
        self.ops = ops
        self.info = info
        self.name = chip.name

    def duplicate(self) -> msi_domain_template:
        """``kmemdup(template)``: a copy whose info points at its own chip and ops."""
        chip, ops, info = copy.copy(self.chip), copy.copy(self.ops), copy.copy(self.info)
        info.chip, info.ops = chip, ops
        return msi_domain_template(chip, ops, info)


def irq_domain_is_msi_parent(domain: irq_domain | None) -> bool:
    return domain is not None and bool(domain.flags & IRQ_DOMAIN_FLAG_MSI_PARENT)


def irq_domain_is_msi_device(domain: irq_domain | None) -> bool:
    return domain is not None and bool(domain.flags & IRQ_DOMAIN_FLAG_MSI_DEVICE)


def dev_get_msi_domain(dev: Any) -> irq_domain:
    """``dev->msi.domain``: the domain the bus gave the device (the VMD's domain for its
    children), else the architecture's (x86's ``pcibios_device_add`` gives every PCI device
    ``x86_pci_msi_default_domain``: the vector domain since v6.2, the global PCI-MSI
    domain before)."""
    domain: irq_domain | None = dev.msi_domain
    return domain if domain is not None else dev.k.irq.x86_pci_msi_default_domain


def msi_get_device_domain(dev: Any, domid: int) -> irq_domain | None:
    """The device domain ``domid`` of ``dev`` (None if it has none)."""
    md = msi_device_data_get(dev)
    return md.device_domains.get(domid) if md is not None else None


def msi_match_device_irq_domain(dev: Any, domid: int, bus_token: int) -> bool:
    domain = msi_get_device_domain(dev, domid)
    return domain is not None and domain.bus_token == bus_token


def msi_create_parent_irq_domain(parent: irq_domain | None, fwnode: fwnode_handle | None,
                                 size: int, ops: irq_domain_ops, host_data: Any,
                                 pops: msi_parent_ops) -> irq_domain | None:
    """``msi_create_parent_irq_domain(info, pops)``: an ordinary hierarchical domain that
    device domains can stack on; its bus token is ``pops->bus_select_token``."""
    k = fwnode.k if fwnode is not None else parent.k if parent is not None else None
    domain = irq_domain_create_hierarchy(parent, IRQ_DOMAIN_FLAG_MSI_PARENT, size, fwnode,
                                         ops, host_data, k=k)
    if domain is not None:
        domain.msi_parent_ops = pops
        domain.bus_token = pops.bus_select_token
    return domain


def msi_create_device_irq_domain(dev: Any, domid: int, template: msi_domain_template,
                                 hwsize: int, domain_data: Any = None,
                                 chip_data: Any = None) -> bool:
    """Create ``dev``'s device domain ``domid`` from ``template`` on its MSI parent; True
    on success. Every failure frees what it allocated."""
    parent = dev_get_msi_domain(dev)
    if not irq_domain_is_msi_parent(parent):
        return False
    k = dev.k
    pops: msi_parent_ops = parent.msi_parent_ops
    dup = template.duplicate()
    bundle = k.mem.kzalloc(msi_domain_template, dup.chip, dup.ops, dup.info, owner="irq")
    if bundle is None:
        return False
    info = bundle.info
    info.hwsize = hwsize
    info.data = domain_data
    info.chip_data = chip_data
    bundle.name = f"{pops.prefix}{bundle.chip.name}-{dev.init_name}"
    bundle.chip.name = bundle.name
    fwnode = k.irq.irq_domain_alloc_named_fwnode(bundle.name)
    if fwnode is None:
        k.mem.kfree(bundle)
        return False
    md = msi_setup_device_data(dev)
    mutex_lock(md.lock)
    try:
        if md.device_domains.get(domid) is not None:
            pr_warn(k, f"WARNING: msi_create_device_irq_domain: {dev.init_name} already has "
                       f"device domain {domid}")
        elif pops.init_dev_msi_info is not None and \
                pops.init_dev_msi_info(dev, parent, parent, info):
            domain = msi_create_irq_domain(fwnode, info, parent, k=k,
                                           extra_flags=IRQ_DOMAIN_FLAG_MSI_DEVICE)
            if domain is not None:
                domain.dev = dev
                domain.template = bundle
                md.device_domains[domid] = domain
                return True
    finally:
        mutex_unlock(md.lock)
    k.irq.irq_domain_free_fwnode(fwnode)
    k.mem.kfree(bundle)
    return False


def msi_remove_device_irq_domain(dev: Any, domid: int) -> None:
    """Remove ``dev``'s device domain ``domid`` (its IRQs must be freed), its fwnode and
    its copy of the template."""
    md = msi_device_data_get(dev)
    if md is None:
        return
    mutex_lock(md.lock)
    try:
        domain = md.device_domains.pop(domid, None)
        if domain is None or not irq_domain_is_msi_device(domain):
            return
        fwnode, bundle = domain.fwnode, domain.template
        irq_domain_remove(domain)
        dev.k.irq.irq_domain_free_fwnode(fwnode)
        dev.k.mem.kfree(bundle)
    finally:
        mutex_unlock(md.lock)


def msi_device_data_release(dev: Any) -> None:
    """The devres release of ``dev``'s MSI data (at unbind, or when its probe fails):
    remove its device domains; the data goes with them unless something still holds it."""
    md = msi_device_data_get(dev)
    if md is None:
        return
    for domid in sorted(md.device_domains):
        msi_remove_device_irq_domain(dev, domid)
    md.devres_added = False
    msi_free_device_data_if_unused(dev)
