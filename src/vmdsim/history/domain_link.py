"""f24c9bfcd423 "PCI: vmd: Create domain symlink before pci_bus_add_devices()" (v6.11).

The VMD driver links ``/sys/bus/pci/drivers/vmd/<VMD>/domain`` to its domain's
root bus. It made the link at the very end of ``vmd_enable_domain``, after
``pci_bus_add_devices`` had bound the drives below. Each new disk sends udev an
event, and udev runs ``mdadm -I`` on it, which follows that link to tell
whether the disk sits behind an Intel RAID (VROC) controller; when udev won
the race: "mdadm: Unable to get real path for
'/sys/bus/pci/drivers/vmd/0000:c7:00.5/domain/device'", the array was not
assembled and boot failed. The fix creates the link before the scan (and, on
remove, drops it after the bus is stopped).

The model's user space is a listener on the kernel's uevents
(``kobject_uevent``) that runs as the event is sent: the earliest udev can run,
the schedule in which the bug shows. It looks for the link when the ``nvme``
driver binds a drive behind a VMD (the model has no block layer: the disk's
``add`` comes with the bind).

Before the fix: ``vmd_enable_domain`` of v6.10, in today's terms.
"""

from __future__ import annotations

from vmdsim.check.scenarios.worlds import small_topology
from vmdsim.drivers.vmd.cfg import vmd_ops
from vmdsim.drivers.vmd.dev import vmd_attach_resources, vmd_dev
from vmdsim.drivers.vmd.features import (
    MB2_CHILD_OFFSET,
    MB2_SHADOW_OFFSET,
    MB2_SHADOW_SIZE,
    VMD_CFGBAR,
    VMD_FEAT_CAN_BYPASS_MSI_REMAP,
    VMD_FEAT_HAS_BUS_RESTRICTIONS,
    VMD_FEAT_HAS_MEMBAR_SHADOW,
    VMD_FEAT_HAS_MEMBAR_SHADOW_VSCAP,
    VMD_MEMBAR1,
    VMD_MEMBAR2,
)
from vmdsim.drivers.vmd.msi import (
    vmd_alloc_irqs,
    vmd_create_irq_domain,
    vmd_remove_irq_domain,
    vmd_restore_msi_remapping,
    vmd_set_msi_remapping,
)
from vmdsim.drivers.vmd.msi_parent import (
    vmd_create_irq_domain as vmd_create_msi_parent_domain,  # v6.17+
)
from vmdsim.drivers.vmd.probe import (
    _membar_resource,
    vmd_copy_host_bridge_flags,
    vmd_domain_reset,
    vmd_find_free_domain,
    vmd_get_bus_number_start,
    vmd_get_phys_offsets,
    vmd_pm_enable_quirk,
)
from vmdsim.history.corpus import Finding, Regression, Side
from vmdsim.history.probes import booted
from vmdsim.kernel.base.core import KOBJ_BIND, dev_get_msi_domain, dev_set_msi_domain, device
from vmdsim.kernel.core import Kernel
from vmdsim.kernel.errno import ENODEV
from vmdsim.kernel.pci import (
    IORESOURCE_BUS,
    IORESOURCE_PCI_FIXED,
    pci_add_resource,
    pci_add_resource_offset,
    pci_assign_unassigned_bus_resources,
    pci_bus_add_devices,
    pci_create_root_bus,
    pci_find_host_bridge,
    pci_free_resource_list,
    pci_name,
    pci_reset_bus,
    pci_scan_child_bus,
    pci_walk_bus,
    pcie_bus_configure_settings,
    resource_size,
    sysfs_create_link,
    to_pci_host_bridge,
)
from vmdsim.kernel.pci.subsys import pci_warn
from vmdsim.variants import variant


@variant("vmdsim.drivers.vmd.probe.vmd_enable_domain")
def vmd_enable_domain(vmd: vmd_dev, features: int) -> int:
    """v6.10 and before, in today's terms: the ``domain`` link after
    ``pci_bus_add_devices``."""
    k = vmd.dev.k
    sd = vmd.sysdata
    offset = (0, 0)
    membar2_offset = MB2_CHILD_OFFSET
    if features & VMD_FEAT_HAS_MEMBAR_SHADOW:
        membar2_offset = MB2_SHADOW_OFFSET + MB2_SHADOW_SIZE
        ret, offset = vmd_get_phys_offsets(vmd, True)
        if ret:
            return ret
    elif features & VMD_FEAT_HAS_MEMBAR_SHADOW_VSCAP:
        ret, offset = vmd_get_phys_offsets(vmd, False)
        if ret:
            return ret
    if features & VMD_FEAT_HAS_BUS_RESTRICTIONS:
        ret = vmd_get_bus_number_start(vmd)
        if ret:
            return ret

    cfg = vmd.resources[0]
    cfg.name, cfg.start = "VMD CFGBAR", vmd.busn_start
    cfg.end = vmd.busn_start + (resource_size(vmd.dev.resource[VMD_CFGBAR]) >> 20) - 1
    cfg.flags = IORESOURCE_BUS | IORESOURCE_PCI_FIXED
    _membar_resource(vmd, 1, VMD_MEMBAR1, "VMD MEMBAR1", 0)
    _membar_resource(vmd, 2, VMD_MEMBAR2, "VMD MEMBAR2", membar2_offset)

    sd.vmd_dev = vmd.dev
    sd.domain = vmd_find_free_domain(k)
    sd.node = -1

    # A guest keeps remapping on: interrupt remapping of passed-through vectors is missing.
    if not features & VMD_FEAT_CAN_BYPASS_MSI_REMAP or offset[0] or offset[1]:
        ret = vmd_alloc_irqs(vmd)
        if ret:
            return ret
        vmd_set_msi_remapping(vmd, True)
        ret = (vmd_create_msi_parent_domain if vmd.module.msi_domain == "msi-parent"
               else vmd_create_irq_domain)(vmd)
        if ret:
            vmd_restore_msi_remapping(vmd)
            return ret
    else:
        vmd_set_msi_remapping(vmd, False)

    resources: list = []
    pci_add_resource(resources, vmd.resources[0])
    pci_add_resource_offset(resources, vmd.resources[1], offset[0])
    pci_add_resource_offset(resources, vmd.resources[2], offset[1])
    vmd.bus = pci_create_root_bus(k, vmd.dev.dev, vmd.busn_start, vmd_ops, sd, resources)
    if vmd.bus is None:
        pci_free_resource_list(resources)
        vmd_remove_irq_domain(vmd)
        vmd_restore_msi_remapping(vmd)
        return -ENODEV

    vmd_copy_host_bridge_flags(pci_find_host_bridge(vmd.dev.bus),
                               to_pci_host_bridge(vmd.bus.bridge))
    vmd_attach_resources(vmd)
    if vmd.irq_domain is not None:
        dev_set_msi_domain(vmd.bus.dev, vmd.irq_domain)
    else:
        dev_set_msi_domain(vmd.bus.dev, dev_get_msi_domain(vmd.dev.dev))

    pci_scan_child_bus(vmd.bus)
    vmd_domain_reset(vmd)
    # The root ports are not in MMCONFIG: reset below the first one through its child.
    for child in vmd.bus.children:
        if child.devices:
            first = child.devices[0]
            ret = pci_reset_bus(first)
            if ret:
                pci_warn(first, f"can't reset device: {ret}")
            break
    pci_assign_unassigned_bus_resources(vmd.bus)
    pci_walk_bus(vmd.bus, vmd_pm_enable_quirk, int(features))
    # The VMD root bus is not PCIe, so configure each real root port's hierarchy.
    for child in vmd.bus.children:
        pcie_bus_configure_settings(child)
    pci_bus_add_devices(vmd.bus)
    # v6.10: the link comes last, after the children were added and bound (the fix
    # creates it before the scan).
    if sysfs_create_link(vmd.dev.dev, vmd.bus.dev, "domain"):
        pci_warn(vmd.dev, "Can't create symlink to domain")
    return 0


def _mdadm_incremental(k: Kernel, missing: list[str]) -> None:
    """Install the model's udev: on each bind of a drive behind a VMD, follow the VMD's
    ``domain`` link, as ``mdadm -I`` does; note each time it is not there."""

    def on_uevent(action: str, dev: device) -> None:
        if action != KOBJ_BIND:
            return
        pdev = k.pci.find_pci_dev(dev)
        if pdev is None or pdev.driver is None or pdev.driver.name != "nvme":
            return
        vmd_device = pci_find_host_bridge(pdev.bus).dev.parent  # the VMD's own device
        vmd_pdev = k.pci.find_pci_dev(vmd_device)
        if vmd_device is None or vmd_pdev is None:
            return  # not behind a VMD
        if "domain" not in vmd_device.links:
            missing.append(f"mdadm: Unable to get real path for '/sys/bus/pci/drivers/vmd/"
                           f"{pci_name(vmd_pdev)}/domain/device' (binding {pci_name(pdev)})")

    k.uevent_listeners.append(on_uevent)


def _udev_follows_the_link() -> Finding:
    missing: list[str] = []
    booted(small_topology(vectors=4), "<domain-link>",
           configure=lambda k: _mdadm_incremental(k, missing))
    if missing:
        return Finding("no-domain-link", missing[0])
    return Finding("clean", "the domain link was there when udev looked")


ENTRIES = [
    Regression(
        "domain-link", "f24c9bfcd423", "PCI: vmd: Create domain symlink before "
        "pci_bus_add_devices()", "v6.11", "when a drive behind the VMD binds, user space "
        "(udev's mdadm -I) finds the VMD's domain link", _udev_follows_the_link,
        Side("v6.10: the link after pci_bus_add_devices", variants=(vmd_enable_domain,)),
        Side("the link before the scan (Linux since the fix)")),
]
