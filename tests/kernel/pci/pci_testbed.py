"""Small hardware for the PCI-core tests: a root complex, bridges and test endpoints.

Building hardware is a hardware act (cards into slots), so these helpers
touch hw objects; the tests then drive everything through the kernel, and
check results through config cycles, MMIO and counters.
"""

from __future__ import annotations

from types import SimpleNamespace

from vmdsim.hw.bridge import PciBridge
from vmdsim.hw.fabric import RootComplex
from vmdsim.hw.firmware import bios_assign_resources
from vmdsim.hw.function import Bar, PciFunction
from vmdsim.hw.msix import MsixCapability
from vmdsim.hw.regs import (
    PCI_BASE_ADDRESS_0,
    PCI_COMMAND,
    PCI_COMMAND_MEMORY,
    PCI_EXP_FLAGS,
    PCI_EXP_FLAGS_SLOT,
    PCI_EXP_LNKCAP,
    PCI_EXP_LNKCAP_ASPM_L0S,
    PCI_EXP_SLTCAP,
    PCI_EXP_SLTCAP_HPC,
    PCI_EXP_TYPE_ENDPOINT,
    PCI_EXP_TYPE_ROOT_PORT,
    PCI_EXT_CAP_ID_ERR,
)
from vmdsim.kernel.core import Kernel
from vmdsim.kernel.pci import (
    IORESOURCE_BUS,
    IORESOURCE_MEM_64,
    IORESOURCE_PCI_FIXED,
    pci_add_resource,
    pci_add_resource_offset,
    pci_assign_unassigned_bus_resources,
    pci_bus_add_devices,
    pci_create_root_bus,
    pci_disable_device,
    pci_enable_device,
    pci_generic_config_read,
    pci_generic_config_write,
    pci_iomap,
    pci_iounmap,
    pci_ops,
    pci_resource_len,
    pci_resource_start,
    pci_scan_child_bus,
    pci_sysdata,
)
from vmdsim.kernel.pci.resource import IORESOURCE_SIZEALIGN, resource
from vmdsim.kernel.shared import KObject

DOMAIN = 0x10000  # the first domain a VMD takes
NVME_VS = 0x00010400  # NVMe 1.4, at BAR0 + 0x8
REG_VS = 0x08


class TestEndpoint(PciFunction):
    """A PCIe endpoint (class NVMe unless told) with MSI-X in BAR0 and a VS register; its
    link supports L0s and L1 unless ``aspm_l0s`` is False.

    It records every BAR write that happened while memory decode was on and the
    value was all-ones (sizing with decode enabled: a bug in the OS).
    """

    __test__ = False  # not a pytest class

    def __init__(self, name: str, *, vendor: int = 0x1234, device: int = 0x5678,
                 class_code: int = 0x010802, bars: tuple[Bar, ...] | None = None,
                 subsystem: tuple[int, int] = (0, 0), aer: bool = True,
                 aspm_l0s: bool = True) -> None:
        bars = bars if bars is not None else (Bar(0, 0x4000),)
        super().__init__(name, vendor, device, class_code, bars=bars, subsystem=subsystem,
                         interrupt_pin=1)
        pos = self.add_pcie_capability(PCI_EXP_TYPE_ENDPOINT, ltr=True)
        if not aspm_l0s:  # a link end that supports only L1
            self.cfg.hw_clear(pos + PCI_EXP_LNKCAP, 4, PCI_EXP_LNKCAP_ASPM_L0S)
        if 0 in self.bars and self.bars[0].size >= 0x4000:
            self.msix = MsixCapability(self, 4, 0, 0x2000)
        if aer:
            self.cfg.add_ext_capability(PCI_EXT_CAP_ID_ERR, 2, 0x48)
        self.sized_while_decoding = 0
        self.cfg.on_write(PCI_BASE_ADDRESS_0, PCI_BASE_ADDRESS_0 + 24, self._bar_written)
        self.finalize()

    def _bar_written(self, off: int, size: int, value: int) -> None:
        if value == 0xFFFFFFFF and self.cfg.data[PCI_COMMAND] & PCI_COMMAND_MEMORY:
            self.sized_while_decoding += 1

    def mmio_read(self, bar: int, off: int, size: int) -> int:
        if self.msix is not None and self.msix.claims(bar, off):
            return self.msix.mmio_read(bar, off, size)
        if bar == 0 and off == REG_VS and size == 4:
            return NVME_VS
        return 0

    def mmio_write(self, bar: int, off: int, size: int, value: int) -> None:
        if self.msix is not None and self.msix.claims(bar, off):
            self.msix.mmio_write(bar, off, size, value)


class driver_priv(KObject):
    """A test driver's private data: what a real probe kzallocs is a struct (a KObject
    here), never a bare container."""

    def __init__(self) -> None:
        self.name = ""


def root_port(rc: RootComplex, name: str, *, hotplug: bool = False,
              link: bool = True) -> PciBridge:
    """A PCIe root port (type-1 header, PCIe capability; hot-plug capable slot if asked)."""
    br = PciBridge(name, 0x8086, 0x2030, aborts=rc.aborts, link=link)
    pos = br.add_pcie_capability(PCI_EXP_TYPE_ROOT_PORT)
    if hotplug:
        flags = br.cfg.hw_read(pos + PCI_EXP_FLAGS, 2)
        br.cfg.init(pos + PCI_EXP_FLAGS, 2, flags | PCI_EXP_FLAGS_SLOT)
        br.cfg.init(pos + PCI_EXP_SLTCAP, 4, PCI_EXP_SLTCAP_HPC | (1 << 19))
    br.finalize()
    return br


def machine(rc: RootComplex, ncpus: int = 4) -> SimpleNamespace:
    """What boot needs of a machine: its root complex and CPU count."""
    return SimpleNamespace(rc=rc, ncpus=ncpus)


def new_kernel(ncpus: int = 4) -> Kernel:
    return Kernel(ncpus=ncpus)


def firmware(rc: RootComplex) -> RootComplex:
    bios_assign_resources(rc)
    return rc


def make_domain_or_none(k: Kernel, vmd_dev, busn_start: int = 0):
    """What ``vmd_enable_domain`` does with the core's API (no MSI, no reset, no quirks):
    a root bus numbered ``busn_start`` in domain 0x10000 whose config cycles go through
    the VMD's CFGBAR (bus ``busn_start`` at offset 0), with MEMBAR1 and MEMBAR2 (past the
    MSI-X table) as its windows; scanned, assigned, added. Returns (root bus, CFGBAR
    mapping), or None when memory runs out (nothing kept)."""
    if pci_enable_device(vmd_dev):
        return None
    cfgbar = pci_iomap(vmd_dev, 0)
    if cfgbar is None:
        pci_disable_device(vmd_dev)
        return None

    def map_bus(bus, devfn, where):
        off = ((bus.number - busn_start) << 20) | (devfn << 12) | where
        if off + 4 > pci_resource_len(vmd_dev, 0):
            return None
        return cfgbar + off

    ops = pci_ops(pci_generic_config_read, pci_generic_config_write, map_bus=map_bus,
                  name="test-vmd")
    nbus = pci_resource_len(vmd_dev, 0) >> 20
    # Embedded in struct vmd_dev in Linux: not separately allocated.
    keep = ~(IORESOURCE_SIZEALIGN | IORESOURCE_MEM_64)
    res = [
        resource("VMD CFGBAR", busn_start, busn_start + nbus - 1,
                 IORESOURCE_BUS | IORESOURCE_PCI_FIXED),
        resource("VMD MEMBAR1", pci_resource_start(vmd_dev, 2), vmd_dev.resource[2].end,
                 vmd_dev.resource[2].flags & keep, vmd_dev.resource[2]),
        resource("VMD MEMBAR2", pci_resource_start(vmd_dev, 4) + 0x2000,
                 vmd_dev.resource[4].end, vmd_dev.resource[4].flags & keep,
                 vmd_dev.resource[4]),
    ]
    resources = []
    pci_add_resource(resources, res[0])
    pci_add_resource_offset(resources, res[1], 0)
    pci_add_resource_offset(resources, res[2], 0)
    sd = pci_sysdata(domain=DOMAIN, vmd_dev=vmd_dev)
    bus = pci_create_root_bus(k, vmd_dev.dev, busn_start, ops, sd, resources)
    if bus is None:
        pci_iounmap(vmd_dev, cfgbar)
        pci_disable_device(vmd_dev)
        return None
    pci_scan_child_bus(bus)
    pci_assign_unassigned_bus_resources(bus)
    pci_bus_add_devices(bus)
    return bus, cfgbar
