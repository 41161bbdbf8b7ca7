"""b61cf04c49c3 "PCI: vmd: Reset VMD config register between soft reboots" (v6.5).

Since ee81ee84f873 (v5.12) the driver turns MSI remapping off where the part
can (VMCONFIG bit 1, MSI_RMP_DIS). That bit is RW/P: a warm reset keeps it.
The driver turned remapping back on only in ``vmd_remove``, which a reboot
does not run, so the next OS — Windows, whose VMD driver cannot run with
remapping off, or a kernel that wants it on — found it off, and the drives
behind the VMD did not come up. The fix adds a ``.shutdown`` callback
(``vmd_shutdown``) that removes the IRQ domain, turning remapping back on.

Before the fix: no ``.shutdown`` — a ``vmd_shutdown`` that does nothing.
The model does not boot the second OS: because the bit survives the warm
reset, what ``device_shutdown`` leaves in VMCONFIG is what the next OS finds.
"""

from __future__ import annotations

from vmdsim.check.scenarios.worlds import small_topology
from vmdsim.history.corpus import Finding, Regression, Side
from vmdsim.history.probes import booted
from vmdsim.hw.vmd import PCI_REG_VMCONFIG, VMCONFIG_MSI_REMAP
from vmdsim.kernel.pci.driver import device_shutdown
from vmdsim.kernel.pci.pci_h import pci_dev
from vmdsim.variants import variant


@variant("vmdsim.drivers.vmd.probe.vmd_shutdown")
def vmd_shutdown(dev: pci_dev) -> None:
    """v5.12-v6.4: the driver had no shutdown callback."""


def _soft_reboot() -> Finding:
    """Reboot a bare-metal 28C0 that bypassed remapping: the next OS finds it on."""
    s = booted(small_topology(vectors=4, device=0x28C0), "<soft-reboot>")
    vmd_hw = s.machine.vmds[0]
    if vmd_hw.remapping_enabled:
        return Finding("setup", "the part did not bypass remapping; nothing to check")
    device_shutdown(s.k)  # what reboot(2) runs before the warm reset
    vmconfig = vmd_hw.cfg.hw_read(PCI_REG_VMCONFIG, 2)
    if vmconfig & VMCONFIG_MSI_REMAP:
        return Finding("remap-left-off", f"after shutdown VMCONFIG reads {vmconfig:#06x}: MSI "
                                         "remapping still disabled for the next OS (RW/P)")
    return Finding("clean", f"after shutdown VMCONFIG reads {vmconfig:#06x}: remapping on")


ENTRIES = [
    Regression(
        "soft-reboot", "b61cf04c49c3", "PCI: vmd: Reset VMD config register between soft "
        "reboots", "v6.5", "a reboot leaves the VMD's MSI remapping as firmware set it (on) "
        "for the next OS", _soft_reboot,
        Side("v5.12-v6.4: no .shutdown", variants=(vmd_shutdown,)),
        Side("vmd_shutdown removes the IRQ domain, remapping back on (Linux since the fix)")),
]
