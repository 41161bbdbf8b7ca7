"""The VMD's ASPM quirk walk (49de0dc87965) against a device leaving the same bus.

A client VMD's probe walks its domain (``pci_walk_bus``, which holds
``pci_bus_sem`` for reading) and, for every device, sets the default LTR and
enables every ASPM state its link has (``vmd_pm_enable_quirk``). Meanwhile
another task removes a device from that domain
(``pci_stop_and_remove_bus_device_locked``: ``pci_destroy_dev`` takes
``pci_bus_sem`` for writing to unlink it). The drive has no driver here, so
the removal is short and nothing but the semaphore orders the two.

Known verdict: ``safe`` with today's quirk, which calls
``pci_enable_link_state_locked``. Before 49de0dc87965 the quirk called
``pci_enable_link_state``, which takes ``pci_bus_sem`` for reading a second
time; a writer queued between the two ``down_read`` s makes the inner one wait
behind it while it waits for the outer one: ``deadlock``
(``vmdsim check aspm-walk --variant before:aspm-deadlock``).
"""

from __future__ import annotations

from types import SimpleNamespace

from vmdsim.check.program import Program, Thread
from vmdsim.check.scenario import scenario
from vmdsim.check.scenarios.worlds import vmd_world
from vmdsim.drivers.vmd.probe import vmd_pm_enable_quirk
from vmdsim.kernel.pci import pci_stop_and_remove_bus_device_locked, pci_walk_bus
from vmdsim.kernel.pci.pci_h import PCI_CLASS_STORAGE_EXPRESS

CLIENT_VMD = 0x467F  # an Alder Lake part: VMD_FEAT_BIOS_PM_QUIRK


@scenario("aspm-walk", "CPU0 runs the VMD's ASPM quirk walk while CPU1 removes a device "
          "from the same bus", expect={(): "safe"})
def aspm_walk() -> Program:
    def setup() -> SimpleNamespace:
        w = vmd_world(device=CLIENT_VMD, nvme=False)
        w.drive = next(d for d in w.k.pci.devices if d.class_ == PCI_CLASS_STORAGE_EXPRESS)
        return w

    def threads(w: SimpleNamespace) -> list[Thread]:
        return [(0, lambda: pci_walk_bus(w.vmd.bus, vmd_pm_enable_quirk, w.vmd.features),
                 "quirk"),
                (1, lambda: pci_stop_and_remove_bus_device_locked(w.drive), "remove")]

    return Program("aspm-walk", setup, threads, lambda w: None)
