"""``k.pci``: the PCI subsystem's global state, in one object per kernel.

What Linux keeps in globals lives here: the root buses (``pci_root_buses``),
the devices on the PCI bus type in the order they were added (the bus
``klist``, which is also the order drivers bind in), the registered drivers,
the per-domain bus-number trees (``pci_domain_busn_res_list``), the root of
the physical address map (``iomem_resource``), the hotplug window sizes
(``pci=hpmmiosize=`` and friends) and the mutex that serialises rescans and
removals (``pci_rescan_remove_lock``). What the core prints goes to the one
kernel log (``k.log``, :mod:`vmdsim.kernel.printk`) through ``pci_info``,
``pci_warn`` and ``pci_err``, at their levels.

The kernel creates it with itself (Linux: ``pci_driver_init`` at
postcore_initcall), so drivers can be registered before or after boot.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from vmdsim.kernel.locking import mutex
from vmdsim.kernel.pci.pci_h import PCI_ANY_ID, pci_bus, pci_dev, pci_name
from vmdsim.kernel.pci.resource import (
    IORESOURCE_BUS,
    IORESOURCE_IO,
    IORESOURCE_MEM,
    resource,
)
from vmdsim.kernel.printk import KERN_ERR, KERN_INFO, KERN_WARNING, printk
from vmdsim.kernel.rwsem import rw_semaphore

if TYPE_CHECKING:
    from vmdsim.kernel.core import Kernel
    from vmdsim.kernel.pci.driver import pci_driver

# drivers/pci/pci.c defaults
DEFAULT_HOTPLUG_IO_SIZE = 256
DEFAULT_HOTPLUG_MMIO_SIZE = 2 << 20
DEFAULT_HOTPLUG_MMIO_PREF_SIZE = 2 << 20
DEFAULT_HOTPLUG_BUS_SIZE = 1


# x86-64: 52 physical address bits at most
IOMEM_END = (1 << 52) - 1

# pcie_bus_config (pci=pcie_bus_*)
PCIE_BUS_TUNE_OFF = 0
PCIE_BUS_DEFAULT = 1
PCIE_BUS_SAFE = 2
PCIE_BUS_PERFORMANCE = 3
PCIE_BUS_PEER2PEER = 4


class PciSubsystem:
    """The PCI core's state for one kernel (``k.pci``)."""

    def __init__(self, k: Kernel) -> None:
        self.k = k
        self.pci_root_buses: list[pci_bus] = []
        self.devices: list[pci_dev] = []  # the pci_bus_type klist, in device_add order
        self.drivers: list[pci_driver] = []
        self.domain_busn_res: dict[int, resource] = {}
        # Linux's iomem_resource/ioport_resource are static, never freed: plain objects here.
        self.iomem_resource = resource("PCI mem", 0, IOMEM_END, IORESOURCE_MEM)
        self.ioport_resource = resource("PCI IO", 0, 0xFFFF, IORESOURCE_IO)
        self.pci_hotplug_io_size = DEFAULT_HOTPLUG_IO_SIZE
        self.pci_hotplug_mmio_size = DEFAULT_HOTPLUG_MMIO_SIZE
        self.pci_hotplug_mmio_pref_size = DEFAULT_HOTPLUG_MMIO_PREF_SIZE
        self.pci_hotplug_bus_size = DEFAULT_HOTPLUG_BUS_SIZE
        self.pcie_bus_config = PCIE_BUS_DEFAULT
        self.pcibios_assign_all_busses = False
        self.mmcfg_regions: list[Any] = []  # x86 pci_mmcfg_list
        # Set by the MSI code: called by pci_restore_state(dev) (Linux: pci_restore_msi_state).
        self.restore_msi_state: Any = None
        # Serialises scanning and removal after boot (hotplug, rescan, driver removal).
        self.pci_rescan_remove_lock = mutex("pci_rescan_remove_lock")
        # Guards the buses' device lists (drivers/pci/search.c): pci_walk_bus and ASPM
        # read them under it; adding or deleting a device writes.
        self.pci_bus_sem = rw_semaphore("pci_bus_sem")

    # -- lookups (drivers/pci/search.c) ------------------------------------------
    def get_pci_domain_busn_res(self, domain_nr: int) -> resource:
        """The bus-number tree of a domain: [bus 00-ff], created on first use, never freed."""
        r = self.domain_busn_res.get(domain_nr)
        if r is None:
            r = resource("PCI busn", 0, 0xFF, IORESOURCE_BUS)
            self.domain_busn_res[domain_nr] = r
        return r

    def pci_find_bus(self, domain: int, busnr: int) -> pci_bus | None:
        """The bus ``busnr`` of ``domain``, searching every root bus's hierarchy."""
        for root in self.pci_root_buses:
            if root.domain_nr != domain:
                continue
            found = _find_bus(root, busnr)
            if found is not None:
                return found
        return None

    def pci_find_next_bus(self, frm: pci_bus | None) -> pci_bus | None:
        """The root bus after ``frm`` (the first one for None), as Linux iterates them."""
        buses = self.pci_root_buses
        if frm is None:
            return buses[0] if buses else None
        for i, b in enumerate(buses):
            if b is frm:
                return buses[i + 1] if i + 1 < len(buses) else None
        return None

    def pci_get_domain_bus_and_slot(self, domain: int, bus: int, devfn: int) -> pci_dev | None:
        for dev in self.devices:
            if dev.bus.domain_nr == domain and dev.bus.number == bus and dev.devfn == devfn:
                return dev
        return None

    def pci_get_device(self, vendor: int, device: int,
                       frm: pci_dev | None = None) -> pci_dev | None:
        """The next device with these IDs after ``frm`` (PCI_ANY_ID matches anything)."""
        start = 0 if frm is None else self.devices.index(frm) + 1
        for dev in self.devices[start:]:
            if vendor in (PCI_ANY_ID, dev.vendor) and device in (PCI_ANY_ID, dev.device):
                return dev
        return None

    def for_each_pci_dev(self) -> Iterator[pci_dev]:
        """Every device, in the order it was added (Linux's ``for_each_pci_dev``)."""
        yield from list(self.devices)

    # -- what an lspci-style printer wants ----------------------------------------
    def domains(self) -> list[int]:
        return sorted({b.domain_nr for b in self.pci_root_buses})

    def find_pci_dev(self, dev: Any) -> pci_dev | None:
        """The ``pci_dev`` whose embedded ``struct device`` is ``dev``, if any (Linux:
        ``dev_is_pci`` then ``to_pci_dev``)."""
        if dev is None:
            return None
        return next((pdev for pdev in self.devices if pdev.dev is dev), None)

    def lspci(self, domain: int | None = None) -> list[pci_dev]:
        """Devices sorted as lspci lists them: by domain, bus, device, function."""
        devs = [d for d in self.devices if domain is None or d.bus.domain_nr == domain]
        return sorted(devs, key=lambda d: (d.bus.domain_nr, d.bus.number, d.devfn))


def _find_bus(bus: pci_bus, busnr: int) -> pci_bus | None:
    if bus.number == busnr:
        return bus
    for child in bus.children:
        found = _find_bus(child, busnr)
        if found is not None:
            return found
    return None


def _who(obj: Any) -> str:
    """``dev_driver_string`` and the name: the driver's name while one is bound (or
    probing), else the bus's (``pci``)."""
    if isinstance(obj, pci_dev):
        drv = obj.driver
        return f"{drv.name if drv is not None else 'pci'} {pci_name(obj)}"
    if isinstance(obj, pci_bus):
        return f"pci_bus {obj.domain_nr:04x}:{obj.number:02x}"
    return str(obj)


def pci_info(obj: Any, msg: str) -> None:
    """Log a line as ``pci_info``/``dev_info`` would: ``pci 0000:00:0e.0: msg`` (``vmd
    0000:00:0e.0: msg`` once the vmd driver has it)."""
    printk(obj.k, KERN_INFO, f"{_who(obj)}: {msg}")


def pci_warn(obj: Any, msg: str) -> None:
    """``pci_warn``: as :func:`pci_info`, at KERN_WARNING."""
    printk(obj.k, KERN_WARNING, f"{_who(obj)}: {msg}")


def pci_err(obj: Any, msg: str) -> None:
    """``pci_err``: as :func:`pci_info`, at KERN_ERR."""
    printk(obj.k, KERN_ERR, f"{_who(obj)}: {msg}")
