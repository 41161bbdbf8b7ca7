"""The VMD as an MSI parent domain (Linux v6.17+, d7d8ab87e3e7 "PCI: vmd: Switch to
msi_create_parent_irq_domain()"), the module option ``msi_domain=msi-parent``.

Before v6.17 the VMD's MSI domain was itself the PCI/MSI domain of every
child (``msi.py``). Since, it is a plain hierarchical domain with
:data:`vmd_msi_parent_ops` (``msi_create_parent_irq_domain``), and each child
gets its own device domain on it (``kernel/irq/msi_parent.py``) from the PCI
core's template: two levels per child IRQ.

- the device level: the template's chip, renamed ``VMD-PCI-MSIX-<child>``
  (``VMD-`` is the parent's prefix); its hwirq is the vector's index in the
  child; :func:`vmd_init_dev_msi_info` replaces its enable and disable with
  :func:`vmd_pci_msi_enable` / :func:`vmd_pci_msi_disable` (and, since
  e433110eb5bf, its startup and shutdown, which 54f45a30c0d0 had given the
  templates in v6.18-rc1: without them the children were never put on their
  vector's list, and the machine hung at boot);
- the VMD level: :func:`vmd_msi_alloc` picks the vector (the instance's
  policy), keeps the per-child :class:`vmd_irq` as this level's chip data and
  installs ``handle_untracked_irq``; its chip ``VMD-MSI`` only composes the
  message; :func:`vmd_msi_free` finds the ``vmd_irq`` at its own level
  (d5c647b08ee0: ``irq_get_chip_data`` returns the device level's, NULL) and
  runs the instance's teardown protocol.

The flags: children may use MSI and MSI-X (the WARN that refused MSI children
in d7d8ab87e3e7 was removed before v6.17 shipped), never several MSI vectors,
and never an affinity of their own (``MSI_FLAG_NO_AFFINITY``).
"""

from __future__ import annotations

from typing import Any

from vmdsim.drivers.irqchip.irq_msi_lib import msi_lib_init_dev_msi_info
from vmdsim.drivers.vmd.dev import vmd_dev, vmd_irq
from vmdsim.drivers.vmd.msi import (
    child_cpu,
    child_is_fast,
    vmd_compose_msi_msg,
    vmd_irq_list_add,
    vmd_irq_list_del,
    vmd_next_irq,
)
from vmdsim.kernel.errno import ENODEV, ENOMEM
from vmdsim.kernel.irq.chip import irq_chip
from vmdsim.kernel.irq.flow import handle_untracked_irq
from vmdsim.kernel.irq.irqdomain import (
    DOMAIN_BUS_VMD_MSI,
    irq_domain,
    irq_domain_get_irq_data,
    irq_domain_ops,
    irq_domain_set_info,
)
from vmdsim.kernel.irq.msi import (
    MSI_FLAG_NO_AFFINITY,
    MSI_FLAG_PCI_MSIX,
    MSI_FLAG_USE_DEF_DOM_OPS,
    msi_domain_info,
)
from vmdsim.kernel.irq.msi_parent import (
    MSI_GENERIC_FLAGS_MASK,
    msi_create_parent_irq_domain,
    msi_parent_ops,
)
from vmdsim.kernel.mem import NullPointerDereference
from vmdsim.kernel.rculist import INIT_LIST_HEAD

MATCH_PCI_MSI = 1 << 2  # BIT(DOMAIN_BUS_PCI_MSI)


# -- the VMD level: the list, by the vmd_irq kept as its chip data ---------------------------
def vmd_irq_enable(data: Any) -> None:
    """Publish the child on its vector's list (tail, under the list lock)."""
    vmd_irq_list_add(data.chip_data, data.irq)


def vmd_irq_disable(data: Any) -> None:
    """Take the child off its vector's list."""
    vmd_irq_list_del(data.chip_data)


# -- the device level's chip ops, installed by vmd_init_dev_msi_info ---------------------------
def vmd_pci_msi_enable(data: Any) -> None:
    vmd_irq_enable(data.parent_data)
    data.chip.irq_unmask(data)


def vmd_pci_msi_startup(data: Any) -> int:
    vmd_pci_msi_enable(data)
    return 0


def vmd_pci_msi_disable(data: Any) -> None:
    data.chip.irq_mask(data)
    vmd_irq_disable(data.parent_data)


def vmd_pci_msi_shutdown(data: Any) -> None:
    vmd_pci_msi_disable(data)


# A static structure, as in Linux: the VMD level only composes the message.
vmd_msi_controller = irq_chip("VMD-MSI", irq_compose_msi_msg=vmd_compose_msi_msg)


# -- the VMD level's allocation ------------------------------------------------------------------
def vmd_msi_alloc(domain: irq_domain, virq: int, nr_irqs: int, arg: Any) -> int:
    """Per child IRQ: a ``vmd_irq`` on the vector the policy picks, this level's chip and
    chip data, and ``handle_untracked_irq``; 0 or -ENOMEM (what was made is freed)."""
    desc = arg.desc
    vmd: vmd_dev = domain.host_data
    for i in range(nr_irqs):
        vmdirq = vmd.dev.k.mem.kzalloc(vmd_irq, vmd, owner="vmd")
        if vmdirq is None:
            vmd_msi_free(domain, virq, i)
            return -ENOMEM
        INIT_LIST_HEAD(vmdirq)
        vmdirq.fast = child_is_fast(desc)
        vmdirq.cpu = child_cpu(desc, i)
        vmdirq.irq = vmd_next_irq(vmd, desc, virq + i, vmdirq)
        vmdirq.virq = virq + i
        irq_domain_set_info(domain, virq + i, vmdirq.irq.virq, vmd_msi_controller, vmdirq,
                            handle_untracked_irq, vmd, None)
    return 0


def vmd_msi_free(domain: irq_domain, virq: int, nr_irqs: int) -> None:
    """Per child IRQ: the instance's teardown protocol on the ``vmd_irq`` of this level
    (it waits, or not, uncounts and frees it); a rebalancing policy then evens out."""
    vmd: vmd_dev = domain.host_data
    for i in range(nr_irqs):
        data = irq_domain_get_irq_data(domain, virq + i)
        vmdirq: vmd_irq | None = data.chip_data if data is not None else None
        if vmdirq is None:
            raise NullPointerDereference(f"vmd_irq of IRQ {virq + i}", "vmd_msi_free")
        vmd.protocol.msi_free(vmd, vmdirq)
        vmd.policy.after_free(vmd)


vmd_msi_domain_ops = irq_domain_ops(alloc=vmd_msi_alloc, free=vmd_msi_free)


def vmd_init_dev_msi_info(dev: Any, domain: irq_domain, real_parent: irq_domain,
                          info: msi_domain_info) -> bool:
    """The library's checks, then the VMD's enable/disable (and startup/shutdown, which
    the v6.18 templates have) on the child's chip."""
    if not msi_lib_init_dev_msi_info(dev, domain, real_parent, info):
        return False
    chip = info.chip
    assert chip is not None  # a template's copy has its chip
    chip.irq_startup = vmd_pci_msi_startup
    chip.irq_shutdown = vmd_pci_msi_shutdown
    chip.irq_enable = vmd_pci_msi_enable
    chip.irq_disable = vmd_pci_msi_disable
    return True


VMD_MSI_FLAGS_SUPPORTED = MSI_GENERIC_FLAGS_MASK | MSI_FLAG_PCI_MSIX
VMD_MSI_FLAGS_REQUIRED = MSI_FLAG_USE_DEF_DOM_OPS | MSI_FLAG_NO_AFFINITY

# Static, as in Linux.
vmd_msi_parent_ops = msi_parent_ops(supported_flags=VMD_MSI_FLAGS_SUPPORTED,
                                    required_flags=VMD_MSI_FLAGS_REQUIRED,
                                    bus_select_token=DOMAIN_BUS_VMD_MSI,
                                    bus_select_mask=MATCH_PCI_MSI, prefix="VMD-",
                                    init_dev_msi_info=vmd_init_dev_msi_info)


def vmd_create_irq_domain(vmd: vmd_dev) -> int:
    """The VMD's MSI parent domain, sized to its vector count; 0 or -ENODEV."""
    kirq = vmd.dev.k.irq
    fn = kirq.irq_domain_alloc_named_id_fwnode("VMD-MSI", vmd.sysdata.domain)
    if fn is None:
        return -ENODEV
    vmd.irq_domain = msi_create_parent_irq_domain(None, fn, vmd.msix_count,
                                                  vmd_msi_domain_ops, vmd,
                                                  vmd_msi_parent_ops)
    if vmd.irq_domain is None:
        kirq.irq_domain_free_fwnode(fn)
        return -ENODEV
    return 0

