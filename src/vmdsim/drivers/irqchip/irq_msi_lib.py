"""The MSI parent library (``drivers/irqchip/irq-msi-lib.c``, Linux v6.10+).

``msi_lib_init_dev_msi_info`` is the ``init_dev_msi_info`` an MSI parent
domain that is not the architecture's uses (the VMD since v6.17): it checks
that the parent selected itself by bus token, accepts PCI/MSI and PCI/MSI-X
device domains, keeps only the flags the parent supports and adds those it
requires, and gives the device chip the generic affinity setter unless the
parent says affinity is no concern of its devices (``MSI_FLAG_NO_AFFINITY``).

Not modelled: the other device-domain kinds (wired-to-MSI, platform MSI) and
the parent's ``chip_flags`` (no modelled parent sets any).
"""

from __future__ import annotations

from typing import Any

from vmdsim.kernel.irq.irqdomain import (
    DOMAIN_BUS_PCI_DEVICE_MSI,
    DOMAIN_BUS_PCI_DEVICE_MSIX,
    irq_domain,
)
from vmdsim.kernel.irq.msi import MSI_FLAG_NO_AFFINITY, msi_domain_info, msi_domain_set_affinity
from vmdsim.kernel.irq.msi_parent import msi_parent_ops
from vmdsim.kernel.printk import pr_warn


def msi_lib_init_dev_msi_info(dev: Any, domain: irq_domain, real_parent: irq_domain,
                              info: msi_domain_info) -> bool:
    """Adapt a device domain's info to ``real_parent``; False (with a warning) if the
    parent or the device domain kind does not fit."""
    k = real_parent.k
    pops: msi_parent_ops | None = real_parent.msi_parent_ops
    if pops is None:
        pr_warn(k, "WARNING: msi_lib_init_dev_msi_info: parent has no msi_parent_ops")
        return False
    if domain.bus_token != pops.bus_select_token or domain is not real_parent:
        pr_warn(k, f"WARNING: msi_lib_init_dev_msi_info: {domain.name} is not the parent")
        return False
    if info.bus_token not in (DOMAIN_BUS_PCI_DEVICE_MSI, DOMAIN_BUS_PCI_DEVICE_MSIX):
        pr_warn(k, f"WARNING: msi_lib_init_dev_msi_info: bus token {info.bus_token}")
        return False
    info.flags &= pops.supported_flags
    info.flags |= pops.required_flags
    chip = info.chip
    assert chip is not None  # a template's copy has its chip
    if chip.irq_set_affinity is None and not info.flags & MSI_FLAG_NO_AFFINITY:
        chip.irq_set_affinity = msi_domain_set_affinity
    return True
