"""Booting the kernel on a machine: what happens between power-on and a running system,
as far as the hardware model is concerned.

``boot(k, machine)``, in Linux's order, as a task on CPU 0 (``swapper/0``: Linux
boots on the bootstrap processor and brings the others up later):

1. Attach the CPUs' view of the hardware: ``k.io`` (MMIO through the root
   complex) and the interrupt controller, whose messages go to
   ``k.sched.raise_irq``. The scheduler is looked up at each interrupt, not
   at boot, because the explorer installs its own after boot. The CPU count
   must match the machine's.
2. x86 PCI init: map the ECAM region firmware reports (ACPI MCFG:
   ``machine.rc.mmconfig_base``, buses 00-ff) and create domain 0's host
   bridge with the windows firmware reports (ACPI _CRS: ``machine.rc.windows``),
   then scan it (``pci_acpi_scan_root``).
3. ``pcibios_resource_survey``: keep what firmware assigned;
   ``pci_assign_unassigned_resources``: bus numbers are already set by the
   scan, now every bridge window and unassigned BAR gets an address.
4. ``pci_bus_add_devices``: devices become visible to drivers; registered
   drivers bind in scan order (drivers registered later bind when they
   register, as built-in drivers do at device_initcall time).

Where the model simplifies: Linux adds the devices at subsys_initcall time,
before the survey (fs_initcall), but built-in drivers only register at
device_initcall, after it; the model runs the survey first, which gives a
driver registered before ``boot`` the same view a built-in driver has.

If memory runs out before domain 0's root bus exists (fault injection), boot
undoes what it did and raises :class:`BootError`: the kernel is left as it
was, holding nothing. A device whose ``pci_dev`` cannot be allocated is
missing from the scan, as in Linux.

Only firmware-reported facts and bus transactions cross the boundary; no
hardware object is inspected.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from vmdsim.errors import VmdsimError
from vmdsim.kernel.dma import PageAllocator
from vmdsim.kernel.io import IoSpace
from vmdsim.kernel.pci.bus import pci_bus_add_devices
from vmdsim.kernel.pci.pci_h import pci_bus
from vmdsim.kernel.pci.probe import pci_lock_rescan_remove, pci_unlock_rescan_remove
from vmdsim.kernel.pci.setup_bus import pci_assign_unassigned_resources
from vmdsim.kernel.pci.x86 import (
    pci_acpi_scan_root,
    pci_mmconfig_add,
    pci_mmconfig_delete,
    pcibios_resource_survey,
)
from vmdsim.kernel.sched import current

if TYPE_CHECKING:
    from vmdsim.kernel.core import Kernel

ECAM_BUSES = (0x00, 0xFF)
BOOT_CPU = 0


class BootError(VmdsimError):
    """The kernel cannot run on this machine as configured."""


def boot(k: Kernel, machine: Any, *, native: dict[str, bool] | None = None) -> pci_bus:
    """Bring up ``k`` on ``machine``; returns domain 0's root bus.

    ``native`` overrides what firmware's _OSC grants the OS (e.g.
    ``{"pcie_hotplug": False}``); by default everything is granted.
    """
    if k.booted:
        raise BootError("boot: this kernel is already attached to a machine")
    rc = machine.rc
    ncpus = getattr(machine, "ncpus", None)
    if ncpus is not None and k.ncpus != ncpus:
        raise BootError(f"boot: the kernel has {k.ncpus} CPUs but the machine reports "
                        f"{ncpus}; create the Kernel with ncpus={ncpus}")
    ctx = current()
    if ctx.kind == "task" and ctx.cpu.id == BOOT_CPU:
        return _boot_on_bsp(k, rc, native)
    with k.on_cpu(BOOT_CPU, "swapper/0"):
        return _boot_on_bsp(k, rc, native)


def _boot_on_bsp(k: Kernel, rc: Any, native: dict[str, bool] | None) -> pci_bus:
    k.attach_machine(IoSpace(k, rc), PageAllocator(rc.ram.size))
    # Look the scheduler up per interrupt: the explorer replaces k.sched after boot.
    # A bound method, not a closure: it follows the kernel through a deep copy (the
    # explorer's snapshots) and looks the scheduler up per message (it is replaced).
    rc.apic.attach(k.raise_irq)
    cfg = pci_mmconfig_add(k, 0, ECAM_BUSES[0], ECAM_BUSES[1], rc.mmconfig_base)
    if cfg is None:
        _unwind(k, rc, None)
        raise BootError("boot: cannot map PCI MMCONFIG for domain 0 (out of memory); "
                        "without it config space is unreachable")
    root = pci_acpi_scan_root(k, 0, ECAM_BUSES, list(rc.windows), native=native)
    if root is None:
        _unwind(k, rc, cfg)
        raise BootError("boot: could not create PCI domain 0's root bus (out of memory)")
    pcibios_resource_survey(k)
    pci_assign_unassigned_resources(k)
    pci_lock_rescan_remove(k)
    pci_bus_add_devices(root)
    pci_unlock_rescan_remove(k)
    return root


def _unwind(k: Kernel, rc: Any, cfg: Any) -> None:
    """Undo a boot that failed before domain 0 existed."""
    if cfg is not None:
        pci_mmconfig_delete(k, cfg)
    rc.apic.attach(None)
    k.attach_machine(None, None)
