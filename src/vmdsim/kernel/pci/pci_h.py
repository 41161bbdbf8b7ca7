"""The PCI core's structures, after ``include/linux/pci.h``.

``pci_dev`` (one function), ``pci_bus`` (one bus segment), ``pci_host_bridge``
(the root of a domain, with its windows and the ``native_*`` feature flags
firmware granted to the OS), ``pci_sysdata`` (x86's per-root-bus data: the
domain number and, for a VMD domain, the VMD's own ``pci_dev``), and the small
inline helpers Linux keeps in the header.

All of them are kernel objects from ``k.mem`` (owner ``"pci"``): the core
allocates them while scanning and frees them on removal, so leaks and
use-after-free are visible. ``pci_dev.resource`` holds the device's
resources in Linux's order without SR-IOV: BARs 0-5, the expansion ROM (6,
never used: the model has no ROMs), then the bridge windows (7 I/O, 8 memory,
9 prefetchable memory).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from vmdsim.errors import VmdsimError
from vmdsim.hw.regs import (
    PCI_EXP_FLAGS_TYPE,
    PCI_EXP_FLAGS_VERS,
    PCI_EXP_TYPE_DOWNSTREAM,
    PCI_EXP_TYPE_PCIE_BRIDGE,
    PCI_EXP_TYPE_ROOT_PORT,
    PCI_HEADER_TYPE_BRIDGE,
    PCI_HEADER_TYPE_CARDBUS,
)
from vmdsim.kernel.base.core import device
from vmdsim.kernel.pci.resource import IORESOURCE_BUS, resource, resource_size
from vmdsim.kernel.shared import KObject

if TYPE_CHECKING:
    from vmdsim.kernel.core import Kernel
    from vmdsim.kernel.pci.access import pci_ops
    from vmdsim.kernel.pci.driver import pci_driver

# Resource indices (no SR-IOV, so no IOV resources between the ROM and the windows)
PCI_STD_RESOURCES = 0
PCI_STD_RESOURCE_END = 5
PCI_ROM_RESOURCE = 6
PCI_BRIDGE_RESOURCES = 7
PCI_BRIDGE_IO_WINDOW = 7
PCI_BRIDGE_MEM_WINDOW = 8
PCI_BRIDGE_PREF_MEM_WINDOW = 9
PCI_BRIDGE_RESOURCE_NUM = 4
PCI_BRIDGE_RESOURCE_END = PCI_BRIDGE_RESOURCES + PCI_BRIDGE_RESOURCE_NUM - 1
PCI_NUM_RESOURCES = PCI_BRIDGE_RESOURCE_END + 1
DEVICE_COUNT_RESOURCE = PCI_NUM_RESOURCES

PCI_ANY_ID = 0xFFFFFFFF  # (~0) in a pci_device_id field: match anything

# Class codes (include/linux/pci_ids.h: 16-bit "class" values, dev.class_ >> 8)
PCI_CLASS_NOT_DEFINED = 0x0000
PCI_CLASS_STORAGE_RAID = 0x0104
PCI_CLASS_BRIDGE_HOST = 0x0600
PCI_CLASS_BRIDGE_PCI = 0x0604
PCI_CLASS_BRIDGE_CARDBUS = 0x0607
PCI_CLASS_STORAGE_EXPRESS = 0x010802  # 24-bit, as Linux defines it

# Power states (pci_power_t)
PCI_D0 = 0
PCI_D3hot = 3
PCI_D3cold = 4
PCI_UNKNOWN = 5
PCI_POWER_ERROR = -1

# pci_channel_state
pci_channel_io_normal = 1
pci_channel_io_frozen = 2
pci_channel_io_perm_failure = 3


class PciError(VmdsimError):
    """A PCI-core misuse Linux would WARN about (a kernel bug), named by device."""


def PCI_DEVFN(slot: int, func: int) -> int:
    return ((slot & 0x1F) << 3) | (func & 0x07)


def PCI_SLOT(devfn: int) -> int:
    return (devfn >> 3) & 0x1F


def PCI_FUNC(devfn: int) -> int:
    return devfn & 0x07


@dataclass
class pci_sysdata:
    """x86 ``struct pci_sysdata``: what a root bus's ``sysdata`` points at.

    ``domain`` is the PCI segment (``pci_domain_nr``); ``vmd_dev`` is set by the
    VMD driver for its domains, and is the device DMA from that domain appears
    to come from (``pci_real_dma_dev``).
    """

    domain: int = 0
    node: int = -1
    vmd_dev: pci_dev | None = None


@dataclass
class resource_entry:
    """``struct resource_entry``: a host-bridge window and its CPU-to-bus offset.

    A bus address is ``cpu address - offset``.
    """

    res: resource
    offset: int = 0


class pci_bus(KObject):
    """``struct pci_bus``: one bus segment, its devices and the buses below it."""

    def __init__(self, k: Kernel, parent: pci_bus | None = None) -> None:
        self.k = k
        self.parent = parent
        self.children: list[pci_bus] = []
        self.devices: list[pci_dev] = []
        self.self: pci_dev | None = None  # the bridge leading to this bus (None: root bus)
        self.bridge: pci_host_bridge | pci_dev | None = None
        # Set by whoever creates the bus (pci_register_host_bridge, pci_alloc_child_bus)
        # before anything uses it; Linux's bus->ops is never NULL on a live bus.
        self.ops: pci_ops = None  # type: ignore[assignment]
        self.sysdata: Any = None
        self.number = 0
        self.primary = 0
        self.domain_nr = 0
        self.name = ""
        self.bridge_ctl = 0
        self.is_added = False
        # The bridge windows (child buses) or None; a root bus keeps its windows in resources.
        self.resource: list[resource | None] = [None] * PCI_BRIDGE_RESOURCE_NUM
        self.resources: list[resource] = []
        # Linux embeds it; here pci_alloc_bus allocates it (so k.mem tracks it) right after
        # the bus, before anyone else sees the bus.
        self.busn_res: resource = None  # type: ignore[assignment]
        self.dev = device(k, "", None)

    def __repr__(self) -> str:
        return f"<pci_bus {self.domain_nr:04x}:{self.number:02x}>"


class pci_dev(KObject):
    """``struct pci_dev``: one PCI function as the kernel knows it."""

    def __init__(self, bus: pci_bus) -> None:
        self.k = bus.k
        self.bus = bus
        self.subordinate: pci_bus | None = None
        self.sysdata = bus.sysdata
        self.devfn = 0
        self.vendor = 0
        self.device = 0
        self.subsystem_vendor = 0
        self.subsystem_device = 0
        self.class_ = 0  # 24 bits: base class, subclass, prog-if
        self.revision = 0
        self.hdr_type = 0
        self.multifunction = False
        self.cfg_size = 256
        self.pcie_cap = 0
        self.pcie_flags_reg = 0
        self.pcie_mpss = 0
        self.devcap = 0
        self.msi_cap = 0
        self.msix_cap = 0
        self.no_64bit_msi = False
        self.aer_cap = 0
        self.msi_enabled = False
        self.msix_enabled = False
        self.pin = 0
        self.irq = 0
        self.rom_base_reg = 0
        self.transparent = False
        self.io_window = False
        self.pref_window = False
        self.pref_64_window = False
        self.is_hotplug_bridge = False
        self.is_pciehp = False
        self.ltr_path = False
        self.is_busmaster = False
        self.is_managed = False
        self.pm_cap = 0
        self.state_saved = False
        self.saved_config_space: list[int] | None = None
        self.saved_pcie: list[int] | None = None
        self.current_state = PCI_UNKNOWN
        self.error_state = pci_channel_io_normal
        self.dma_mask = 0xFFFFFFFF
        self.enable_cnt = 0
        self.match_driver = False
        self.is_added = False
        self.driver: pci_driver | None = None
        self.resource: list[resource] = []
        self.dev = device(self.k, "", bus.dev)

    def __repr__(self) -> str:
        return f"<pci_dev {pci_name(self)} [{self.vendor:04x}:{self.device:04x}]>"


class pci_host_bridge(KObject):
    """``struct pci_host_bridge``: a domain's root, its windows and what firmware granted."""

    def __init__(self, k: Kernel) -> None:
        self.k = k
        self.bus: pci_bus | None = None
        # The host-bridge driver fills it in before registering (pci_create_root_bus does).
        self.ops: pci_ops = None  # type: ignore[assignment]
        self.child_ops: pci_ops | None = None
        self.sysdata: Any = None
        self.busnr = 0
        self.windows: list[resource_entry] = []
        self.dma_ranges: list[resource_entry] = []
        # Features the OS may drive natively (ACPI _OSC grants them; all on by default).
        self.native_aer = True
        self.native_pcie_hotplug = True
        self.native_shpc_hotplug = True
        self.native_pme = True
        self.native_ltr = True
        self.native_dpc = True
        self.preserve_config = False
        self.size_windows = False
        self.release_fn: Callable[[pci_host_bridge], None] | None = None
        self.release_data: Any = None  # opaque, for release_fn (Linux: void *)
        self.dev = device(k, "", None)

    def __repr__(self) -> str:
        return f"<pci_host_bridge {self.dev.init_name}>"


# -- inline helpers ---------------------------------------------------------------
def pci_domain_nr(bus: pci_bus) -> int:
    return bus.domain_nr


def pci_name(dev: pci_dev) -> str:
    """``dddd:bb:dd.f`` (a VMD domain has five hex digits: ``10000:00:00.0``)."""
    return (f"{dev.bus.domain_nr:04x}:{dev.bus.number:02x}:"
            f"{PCI_SLOT(dev.devfn):02x}.{PCI_FUNC(dev.devfn)}")


def pci_is_root_bus(bus: pci_bus) -> bool:
    return bus.parent is None


def pci_find_host_bridge(bus: pci_bus) -> pci_host_bridge:
    while bus.parent is not None:
        bus = bus.parent
    return to_pci_host_bridge(bus.bridge)


def to_pci_host_bridge(bridge: Any) -> pci_host_bridge:
    return bridge


def pci_upstream_bridge(dev: pci_dev) -> pci_dev | None:
    return dev.bus.self


def pci_is_bridge(dev: pci_dev) -> bool:
    return dev.hdr_type in (PCI_HEADER_TYPE_BRIDGE, PCI_HEADER_TYPE_CARDBUS)


def pci_has_subordinate(dev: pci_dev) -> bool:
    return dev.subordinate is not None


def for_each_pci_bridge(bus: pci_bus) -> Iterator[pci_dev]:
    for dev in list(bus.devices):
        if pci_is_bridge(dev):
            yield dev


def pci_is_pcie(dev: pci_dev) -> bool:
    return dev.pcie_cap != 0


def pci_pcie_cap(dev: pci_dev) -> int:
    return dev.pcie_cap


def pci_pcie_type(dev: pci_dev) -> int:
    return (dev.pcie_flags_reg & PCI_EXP_FLAGS_TYPE) >> 4


def pcie_cap_version(dev: pci_dev) -> int:
    return dev.pcie_flags_reg & PCI_EXP_FLAGS_VERS


def pcie_downstream_port(dev: pci_dev) -> bool:
    t = pci_pcie_type(dev)
    return t in (PCI_EXP_TYPE_ROOT_PORT, PCI_EXP_TYPE_DOWNSTREAM, PCI_EXP_TYPE_PCIE_BRIDGE)


def pci_is_enabled(dev: pci_dev) -> bool:
    return dev.enable_cnt > 0


def pci_dev_is_added(dev: pci_dev) -> bool:
    return dev.is_added


def pci_dev_is_disconnected(dev: pci_dev) -> bool:
    return dev.error_state == pci_channel_io_perm_failure


def pci_resource_start(dev: pci_dev, bar: int) -> int:
    return dev.resource[bar].start


def pci_resource_end(dev: pci_dev, bar: int) -> int:
    return dev.resource[bar].end


def pci_resource_flags(dev: pci_dev, bar: int) -> int:
    return dev.resource[bar].flags


def pci_resource_len(dev: pci_dev, bar: int) -> int:
    """The BAR's size; 0 for an unimplemented BAR (Linux: flags 0 means no resource)."""
    r = dev.resource[bar]
    return resource_size(r) if r.flags else 0


def pci_get_drvdata(dev: pci_dev) -> Any:
    return dev.dev.driver_data


def pci_set_drvdata(dev: pci_dev, data: Any) -> None:
    dev.dev.driver_data = data


def pci_bus_for_each_resource(bus: pci_bus) -> Iterator[resource]:
    """The bridge windows of a child bus, then the windows a root bus was given."""
    for r in bus.resource:
        if r is not None:
            yield r
    yield from bus.resources


def pci_dev_for_each_resource(dev: pci_dev) -> Iterator[tuple[int, resource]]:
    return enumerate(dev.resource)


def is_bus_resource(res: resource) -> bool:
    return bool(res.flags & IORESOURCE_BUS)
