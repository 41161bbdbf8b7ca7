"""49de0dc87965 "PCI: vmd: Fix potential deadlock when enabling ASPM" (v6.7).

``vmd_pm_enable_quirk`` (f492edb40b54, v6.3) runs as a ``pci_walk_bus``
callback, with ``pci_bus_sem`` held for reading, and called
``pci_enable_link_state``, which takes ``pci_bus_sem`` for reading again.
Linux's rw_semaphores favour a waiting writer: if a task queues a
``down_write`` (a device added or removed anywhere) between the two, the inner
``down_read`` waits behind it and the writer waits for the outer one. Lockdep
reported it ("possible recursive locking"); the fix calls the new
``pci_enable_link_state_locked``.

Before the fix: the quirk with ``pci_enable_link_state``, in today's terms
(today's also puts the device in D0 first with ``pci_set_power_state_locked``).
The probe explores the ``aspm-walk`` scenario.
"""

from __future__ import annotations

from vmdsim.drivers.vmd.features import VMD_BIOS_PM_QUIRK_LTR, VMD_FEAT_BIOS_PM_QUIRK
from vmdsim.history.corpus import Finding, Regression, Side
from vmdsim.history.probes import explored
from vmdsim.hw.regs import (
    PCI_EXT_CAP_ID_LTR,
    PCI_LTR_MAX_SNOOP_LAT,
    PCI_LTR_SCALE_MASK,
    PCI_LTR_VALUE_MASK,
)
from vmdsim.kernel.pci import (
    PCI_D0,
    PCIE_LINK_STATE_ALL,
    pci_enable_link_state,
    pci_find_ext_capability,
    pci_read_config_dword,
    pci_set_power_state_locked,
    pci_write_config_dword,
)
from vmdsim.kernel.pci.pci_h import pci_dev
from vmdsim.kernel.pci.subsys import pci_info
from vmdsim.variants import variant


@variant("vmdsim.drivers.vmd.probe.vmd_pm_enable_quirk")
def vmd_pm_enable_quirk(pdev: pci_dev, features: int) -> int:
    """v6.3-v6.6: ``pci_enable_link_state`` under ``pci_walk_bus``'s read lock."""
    if not features & VMD_FEAT_BIOS_PM_QUIRK:
        return 0
    pos = pci_find_ext_capability(pdev, PCI_EXT_CAP_ID_LTR)
    if pos:
        _, ltr_reg = pci_read_config_dword(pdev, pos + PCI_LTR_MAX_SNOOP_LAT)
        if not ltr_reg & (PCI_LTR_VALUE_MASK | PCI_LTR_SCALE_MASK):
            ltr = VMD_BIOS_PM_QUIRK_LTR
            pci_write_config_dword(pdev, pos + PCI_LTR_MAX_SNOOP_LAT, ltr << 16 | ltr)
            pci_info(pdev, "VMD: Default LTR value set by driver")
    pci_set_power_state_locked(pdev, PCI_D0)
    pci_enable_link_state(pdev, PCIE_LINK_STATE_ALL)  # the fix: ..._locked
    return 0


def _walk_against_a_writer() -> Finding:
    return explored("aspm-walk")


ENTRIES = [
    Regression(
        "aspm-deadlock", "49de0dc87965", "PCI: vmd: Fix potential deadlock when enabling ASPM",
        "v6.7", "no schedule of the ASPM quirk walk against a device removal deadlocks on "
        "pci_bus_sem (aspm-walk)", _walk_against_a_writer,
        Side("v6.3-v6.6: pci_enable_link_state", variants=(vmd_pm_enable_quirk,)),
        Side("pci_enable_link_state_locked (Linux since the fix)"),
        note="pci_bus_sem is a writer-preferring rw_semaphore (kernel/rwsem.py) without "
             "Linux's optimistic spinning"),
]
