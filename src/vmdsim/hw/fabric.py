"""The host side of the fabric: root complex, memory map, ECAM and interrupt controller.

The CPU reaches everything through memory addresses, as on x86:

=============================  =============================================
``0 .. ram_size``              system RAM (what DMA lands in)
``MMCONFIG_BASE`` (256 MiB)    ECAM: config space of domain 0, 1 MiB per bus
``0xFEE00000 .. 0xFEEFFFFF``   the local APIC message window that MSIs hit
host-bridge windows            routed down to the BARs of the root bus
=============================  =============================================

The host-bridge windows and the ECAM base are what firmware (ACPI ``_CRS``,
MCFG) would tell the OS; the model publishes them as plain attributes.

Writes from devices that reach the root complex are either MSIs (decoded by
the interrupt controller into destination CPU and vector) or DMA into RAM,
where an IOMMU would see the requester ID; the model counts requester IDs in
``iommu_requesters``. Anything nobody claims is a master abort, counted.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable

from vmdsim.errors import BusAccessError
from vmdsim.hw.bus import MasterAbortLog, PciBus, all_ones
from vmdsim.hw.function import PciFunction
from vmdsim.hw.regs import MSI_ADDR_BASE, MSI_ADDR_DEST_ID_SHIFT, MSI_ADDR_END

MMCONFIG_BASE = 0xE0000000
MMCONFIG_SIZE = 256 << 20
HOST_WINDOW_32 = (0xC0000000, 0xDFFFFFFF)
HOST_WINDOW_64 = (0x40_0000_0000, 0x7F_FFFF_FFFF)
PAGE = 4096

InterruptSink = Callable[[int, int], None]


class InterruptController:
    """The x86 local-APIC message decoder.

    A write of data D to 0xFEE00000 | (dest << 12) delivers vector D[7:0] to
    the CPU whose APIC ID is ``dest`` (physical destination mode). Vectors
    below 16 are illegal on x86; such messages, and messages for a CPU that
    does not exist, are counted as errors and delivered nowhere.
    """

    def __init__(self, ncpus: int) -> None:
        self.ncpus = ncpus
        self.sink: InterruptSink | None = None
        self.delivered = 0
        self.errors = 0
        self.undelivered = 0  # no OS attached yet

    def attach(self, sink: InterruptSink | None) -> None:
        """Whoever owns the CPUs (the kernel) receives (cpu, vector)."""
        self.sink = sink

    def message(self, addr: int, data: int) -> None:
        dest = (addr >> MSI_ADDR_DEST_ID_SHIFT) & 0xFF
        vector = data & 0xFF
        if dest >= self.ncpus or vector < 16:
            self.errors += 1
            return
        sink = self.sink
        if sink is None:
            self.undelivered += 1
            return
        self.delivered += 1
        sink(dest, vector)


class HostMemory:
    """Sparse system RAM: 4 KiB pages allocated when first written with something other
    than zeros (a zeroed page reads the same whether it exists or not)."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.pages: dict[int, bytearray] = {}

    def read(self, addr: int, size: int) -> int:
        page = self.pages.get(addr // PAGE)
        off = addr % PAGE
        if off + size <= PAGE:
            return int.from_bytes(page[off : off + size], "little") if page else 0
        return sum(self.read(addr + i, 1) << (8 * i) for i in range(size))

    def write(self, addr: int, size: int, value: int) -> None:
        off = addr % PAGE
        if off + size > PAGE:
            for i in range(size):
                self.write(addr + i, 1, (value >> (8 * i)) & 0xFF)
            return
        page = self.pages.get(addr // PAGE)
        if page is None:
            if not value:
                return  # an untouched page reads as zeros already
            page = self.pages[addr // PAGE] = bytearray(PAGE)
        elif size == PAGE and not value:
            del self.pages[addr // PAGE]  # a whole page zeroed: back to untouched
            return
        page[off : off + size] = value.to_bytes(size, "little")


class RootComplex:
    """Host bridge of PCI domain 0, memory controller and APIC message decoder."""

    def __init__(self, ncpus: int = 4, ram_size: int = 1 << 31) -> None:
        if ram_size > HOST_WINDOW_32[0]:
            raise ValueError(f"RAM of {ram_size:#x} bytes overlaps the 32-bit PCI window")
        self.aborts = MasterAbortLog()
        self.apic = InterruptController(ncpus)
        self.ram = HostMemory(ram_size)
        self.mmconfig_base = MMCONFIG_BASE
        self.windows = [HOST_WINDOW_32, HOST_WINDOW_64]
        self.root_bus = PciBus(self, self.aborts, root_number=0)
        self.iommu_requesters: Counter[int] = Counter()

    def config_window(self, bus: int, devfn: int) -> int | None:
        """The ECAM page of ``bus``/``devfn`` in domain 0."""
        return MMCONFIG_BASE + ecam_offset(bus, devfn, 0) if 0 <= bus <= 0xFF else None

    # -- CPU-side accesses ------------------------------------------------------
    def mem_read(self, addr: int, size: int) -> int:
        check_transaction("read", addr, size)
        if addr + size <= self.ram.size:
            return self.ram.read(addr, size)
        if MMCONFIG_BASE <= addr < MMCONFIG_BASE + MMCONFIG_SIZE:
            bus, devfn, reg = ecam_decode(addr - MMCONFIG_BASE)
            return self.root_bus.config_read(bus, devfn, reg, size)
        value = self.root_bus.mem_read(addr, size)
        if value is None:
            self.aborts.record("mem-read", addr)
            return all_ones(size)
        return value

    def mem_write(self, addr: int, size: int, value: int) -> None:
        check_transaction("write", addr, size, value)
        if addr + size <= self.ram.size:
            self.ram.write(addr, size, value)
        elif MMCONFIG_BASE <= addr < MMCONFIG_BASE + MMCONFIG_SIZE:
            bus, devfn, reg = ecam_decode(addr - MMCONFIG_BASE)
            self.root_bus.config_write(bus, devfn, reg, size, value)
        elif not self.root_bus.mem_write(addr, size, value):
            self.aborts.record("mem-write", addr)

    # -- device-side (bus-master) accesses reaching the host -----------------
    def upstream_write(self, addr: int, size: int, value: int, requester: PciFunction) -> bool:
        check_transaction("write", addr, size, value, requester)
        if MSI_ADDR_BASE <= addr < MSI_ADDR_END:
            self.apic.message(addr, value)
            return True
        if addr + size <= self.ram.size:
            self.iommu_requesters[requester.rid] += 1
            self.ram.write(addr, size, value)
            return True
        if _own_bar(requester, addr):
            self.aborts.record("upstream-write-own-bar", addr)
            return False
        if self.root_bus.mem_write(addr, size, value):  # peer to peer
            return True
        self.aborts.record("upstream-write", addr)
        return False

    def upstream_read(self, addr: int, size: int, requester: PciFunction) -> int | None:
        check_transaction("read", addr, size, None, requester)
        if addr + size <= self.ram.size:
            self.iommu_requesters[requester.rid] += 1
            return self.ram.read(addr, size)
        if _own_bar(requester, addr):
            self.aborts.record("upstream-read-own-bar", addr)
            return None
        value = self.root_bus.mem_read(addr, size)
        if value is None:
            self.aborts.record("upstream-read", addr)
        return value


ADDRESS_LIMIT = 1 << 64


def _own_bar(requester: PciFunction, addr: int) -> bool:
    """Does ``addr`` fall in one of the requester's own memory BARs?

    A VMD forwards its children's writes (and reads) upstream as its own (they carry
    its requester ID), so a child's access to the VMD's CFGBAR, MEMBAR1 or MEMBAR2 —
    the hidden domain's config space, the children's BARs, the VMD's own MSI-X table —
    reaches the root complex as the VMD addressing itself. No public source says what
    the hardware does then; with VT-d on (as Linux runs VMD) it would be blocked, the
    MMIO target having no mapping in the VMD's IOMMU domain. The model refuses it as
    an Unsupported Request (docs/findings.md, "isolation").
    """
    if not requester.memory_enabled:
        return False
    for index, bar in requester.bars.items():
        base = requester.bar_address(index)
        if base <= addr < base + bar.size:
            return True
    return False


def check_transaction(kind: str, addr: int, size: int, value: int | None = None,
                      requester: PciFunction | None = None) -> None:
    """A transaction the fabric can carry: a 64-bit address, 1 to 4096 bytes (a page: the
    model's largest, for zeroing), data that fits the size. ``requester``: the device
    mastering it (None: the CPU); only an error names it."""
    if 0 <= addr <= ADDRESS_LIMIT - max(size, 1) and 1 <= size <= PAGE and (
            value is None or 0 <= value < 1 << (8 * size)):
        return
    who = f"{requester.name if requester is not None else 'CPU'} {kind}"
    if not 0 <= addr <= ADDRESS_LIMIT - max(size, 1):
        raise BusAccessError(who, addr, size, "the address is outside 0 .. 2^64 - 1")
    if not 1 <= size <= PAGE:
        raise BusAccessError(who, addr, size, "the size must be 1 to 4096 bytes")
    if value is not None and not 0 <= value < 1 << (8 * size):
        raise BusAccessError(who, addr, size, f"the value {value:#x} does not fit {size} "
                             "byte(s)")


def ecam_decode(offset: int) -> tuple[int, int, int]:
    """ECAM offset -> (bus, devfn, register): bus 27:20, devfn 19:12, register 11:0."""
    return (offset >> 20) & 0xFF, (offset >> 12) & 0xFF, offset & 0xFFF


def ecam_offset(bus: int, devfn: int, reg: int) -> int:
    return (bus << 20) | (devfn << 12) | reg
