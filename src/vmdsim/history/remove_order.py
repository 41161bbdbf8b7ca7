"""dc8af3a827df "PCI: vmd: Detach resources after stopping root bus" (about v4.20).

``vmd_remove`` took the domain's MEMBAR windows out of the resource tree
(``vmd_detach_resources``) before ``pci_stop_root_bus`` unbound the drivers
below. A driver that releases its regions on the way out (NVMe:
``pci_release_mem_regions``) then searches a tree its BARs are no longer in:
the region is never freed and Linux warns "Trying to free nonexistent
resource <...>". The fix detaches after the bus is stopped and removed.

Before the fix: ``vmd_remove`` from 2c2c5c5cd213 (2016, which attached the
resources) to the fix, detach first, in today's terms.
"""

from __future__ import annotations

from vmdsim.check.scenarios.worlds import small_topology
from vmdsim.drivers.vmd.dev import vmd_detach_resources, vmd_release_instance
from vmdsim.drivers.vmd.msi import vmd_remove_irq_domain
from vmdsim.drivers.vmd.query import vmd_devices
from vmdsim.history.corpus import Finding, Regression, Side
from vmdsim.history.probes import booted
from vmdsim.kernel.pci import (
    device_release_driver,
    pci_get_drvdata,
    pci_remove_root_bus,
    pci_stop_root_bus,
    sysfs_remove_link,
)
from vmdsim.kernel.pci.pci_h import pci_dev
from vmdsim.kernel.pci.resource import ResourceError
from vmdsim.variants import variant


@variant("vmdsim.drivers.vmd.probe.vmd_remove")
def vmd_remove(dev: pci_dev) -> None:
    """2016 to the fix: the resources are detached before the root bus is stopped."""
    vmd = pci_get_drvdata(dev)
    vmd_detach_resources(vmd)
    sysfs_remove_link(vmd.dev.dev, "domain")
    pci_stop_root_bus(vmd.bus)
    pci_remove_root_bus(vmd.bus)
    vmd.bus = None
    vmd_remove_irq_domain(vmd)
    vmd_release_instance(vmd)


def _unbind_with_a_drive() -> Finding:
    """Unbind vmd with an NVMe drive bound below: every region the drive requested is
    released from the resource tree."""
    s = booted(small_topology(vectors=4), "<remove-order>")
    try:
        device_release_driver(vmd_devices(s.k)[0].dev)
    except ResourceError as e:
        return Finding("nonexistent-resource", str(e))
    return Finding("clean", "the NVMe driver released its BAR; then the windows were detached")


ENTRIES = [
    Regression(
        "detach-resources", "dc8af3a827df", "PCI: vmd: Detach resources after stopping root "
        "bus", "about v4.20", "unbinding vmd with a drive below frees every region the drive "
        "requested (no \"Trying to free nonexistent resource\")", _unbind_with_a_drive,
        Side("2c2c5c5cd213 to the fix: detach, then stop the bus", variants=(vmd_remove,)),
        Side("stop and remove the bus, then detach (Linux since the fix)"),
        note="Linux warns and goes on, leaving the region orphaned; the model stops the "
             "remove at the warning (a ResourceError)"),
]
