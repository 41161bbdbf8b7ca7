"""A PCI function: its configuration header, the BARs it decodes, its bus-master port.

What the model does as hardware does:

- BAR sizing works through the write mask: address bits below the BAR's size
  are read-only zero, so writing all-ones and reading back yields the size
  mask with the type bits (64-bit, prefetchable) in the low nibble.
- A BAR decodes memory only while Command.Memory Space is set.
- The function masters the bus (MSI writes, DMA) only while Command.Bus Master
  is set; a write attempted without it is dropped and counted.

Simplifications: no I/O BARs or I/O space, no expansion ROM, no INTx
signalling (the interrupt pin is reported but never asserted).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from vmdsim.errors import MmioAccessError
from vmdsim.hw.config import ConfigSpace
from vmdsim.hw.regs import (
    PCI_BASE_ADDRESS_0,
    PCI_BASE_ADDRESS_MEM_PREFETCH,
    PCI_BASE_ADDRESS_MEM_TYPE_64,
    PCI_CACHE_LINE_SIZE,
    PCI_CAP_EXP_ENDPOINT_SIZEOF_V2,
    PCI_CAP_ID_EXP,
    PCI_CLASS_REVISION,
    PCI_COMMAND,
    PCI_COMMAND_INTX_DISABLE,
    PCI_COMMAND_MASTER,
    PCI_COMMAND_MEMORY,
    PCI_COMMAND_PARITY,
    PCI_COMMAND_SERR,
    PCI_EXP_DEVCAP,
    PCI_EXP_DEVCAP2,
    PCI_EXP_DEVCAP2_LTR,
    PCI_EXP_DEVCTL,
    PCI_EXP_DEVCTL2,
    PCI_EXP_DEVSTA,
    PCI_EXP_FLAGS,
    PCI_EXP_LNKCAP,
    PCI_EXP_LNKCTL,
    PCI_EXP_LNKSTA,
    PCI_HEADER_TYPE,
    PCI_INTERRUPT_LINE,
    PCI_INTERRUPT_PIN,
    PCI_LATENCY_TIMER,
    PCI_STATUS,
    PCI_STATUS_RW1C,
    PCI_SUBSYSTEM_ID,
    PCI_SUBSYSTEM_VENDOR_ID,
    PCI_VENDOR_ID,
)

if TYPE_CHECKING:
    from vmdsim.hw.bus import PciBus
    from vmdsim.hw.msi import MsiCapability
    from vmdsim.hw.msix import MsixCapability


class UpstreamPort(Protocol):
    """Whatever receives a function's bus-master transactions: a bridge, the VMD, the host."""

    def upstream_write(self, addr: int, size: int, value: int, requester: PciFunction) -> bool: ...

    def upstream_read(self, addr: int, size: int, requester: PciFunction) -> int | None: ...


@dataclass(frozen=True)
class Bar:
    """One memory BAR as the silicon fixes it: its size (a power of two) and type."""

    index: int
    size: int
    is64: bool = True
    prefetchable: bool = False

    def __post_init__(self) -> None:
        if self.size < 16 or self.size & (self.size - 1):
            raise ValueError(f"BAR{self.index} size {self.size:#x} is not a power of two >= 16")
        if not self.is64 and self.size > 1 << 31:
            raise ValueError(f"BAR{self.index}: 32-bit BAR of {self.size:#x} bytes")

    @property
    def flags(self) -> int:
        f = PCI_BASE_ADDRESS_MEM_TYPE_64 if self.is64 else 0
        return f | (PCI_BASE_ADDRESS_MEM_PREFETCH if self.prefetchable else 0)


# Read-write bits of the command register on a function with memory BARs only.
COMMAND_WMASK = (
    PCI_COMMAND_MEMORY
    | PCI_COMMAND_MASTER
    | PCI_COMMAND_PARITY
    | PCI_COMMAND_SERR
    | PCI_COMMAND_INTX_DISABLE
)


class PciFunction:
    """A type-0 (endpoint) PCI function; bridges extend it.

    Subclasses implement ``mmio_read``/``mmio_write`` for the registers behind
    their BARs and ``reset_state`` for device state outside config space.
    """

    header_type = 0
    bar_count = 6
    lost_messages = 0  # messages (PME, errors) sent with no root port above (hw/aer.py)

    def __init__(
        self,
        name: str,
        vendor: int,
        device: int,
        class_code: int,
        *,
        revision: int = 0,
        bars: tuple[Bar, ...] = (),
        subsystem: tuple[int, int] = (0, 0),
        interrupt_pin: int = 0,
    ) -> None:
        self.name = name
        self.cfg = ConfigSpace(name)
        self.bus: PciBus | None = None
        self.devfn = 0
        self.upstream: UpstreamPort | None = None
        self.bars: dict[int, Bar] = {}
        self._decoders: list[tuple[int, int, Bar]] = []
        self.master_aborted_writes = 0  # bus-master writes dropped with Bus Master clear
        self.msix: MsixCapability | None = None
        self.msi: MsiCapability | None = None
        cfg = self.cfg
        cfg.page = self.config_page
        cfg.init(PCI_VENDOR_ID, 2, vendor)
        cfg.init(PCI_VENDOR_ID + 2, 2, device)
        cfg.init(PCI_COMMAND, 2, 0, wmask=COMMAND_WMASK)
        cfg.init(PCI_STATUS, 2, 0, w1c=PCI_STATUS_RW1C)
        cfg.init(PCI_CLASS_REVISION, 4, (class_code << 8) | revision)
        cfg.init(PCI_CACHE_LINE_SIZE, 1, 0, wmask=0xFF)
        cfg.init(PCI_LATENCY_TIMER, 1, 0)
        cfg.init(PCI_HEADER_TYPE, 1, self.header_type)
        cfg.init(PCI_INTERRUPT_LINE, 1, 0, wmask=0xFF)
        cfg.init(PCI_INTERRUPT_PIN, 1, interrupt_pin)
        if self.header_type == 0:
            cfg.init(PCI_SUBSYSTEM_VENDOR_ID, 2, subsystem[0])
            cfg.init(PCI_SUBSYSTEM_ID, 2, subsystem[1])
        for bar in bars:
            self._add_bar(bar)
        cfg.on_write(PCI_COMMAND, PCI_COMMAND + 2, self._decode_changed)
        cfg.on_write(PCI_BASE_ADDRESS_0, PCI_BASE_ADDRESS_0 + 4 * self.bar_count,
                     self._decode_changed)

    # -- construction ---------------------------------------------------------
    def _add_bar(self, bar: Bar) -> None:
        last = bar.index + (1 if bar.is64 else 0)
        if bar.index < 0 or last >= self.bar_count or bar.index in self.bars:
            raise ValueError(f"{self.name}: BAR{bar.index} does not fit the header")
        if any(b.is64 and b.index + 1 == bar.index for b in self.bars.values()):
            raise ValueError(f"{self.name}: BAR{bar.index} is the upper half of a 64-bit BAR")
        off = PCI_BASE_ADDRESS_0 + 4 * bar.index
        self.cfg.init(off, 4, bar.flags, wmask=~(bar.size - 1) & 0xFFFFFFF0)
        if bar.is64:
            self.cfg.init(off + 4, 4, 0, wmask=(~(bar.size - 1) >> 32) & 0xFFFFFFFF)
        self.bars[bar.index] = bar

    def add_pcie_capability(self, port_type: int, *, ltr: bool = False,
                            max_payload: int = 1) -> int:
        """A PCI Express capability (v2) of ``port_type``; returns its offset.

        Device Control carries the writable MPS/MRRS/error-reporting fields
        that Linux configures; the link is reported up at Gen3 x4.
        """
        cfg = self.cfg
        pos = cfg.add_capability(PCI_CAP_ID_EXP, PCI_CAP_EXP_ENDPOINT_SIZEOF_V2)
        cfg.init(pos + PCI_EXP_FLAGS, 2, 0x2 | (port_type << 4))
        cfg.init(pos + PCI_EXP_DEVCAP, 4, max_payload & 0x7)
        # Correctable/non-fatal/fatal/UR reporting, relaxed ordering, MPS, ext tag,
        # no-snoop, MRRS: the bits software programs. Power-on MRRS is 512 bytes.
        cfg.init(pos + PCI_EXP_DEVCTL, 2, 0x2810, wmask=0x79FF)
        cfg.init(pos + PCI_EXP_DEVSTA, 2, 0, w1c=0x000F)
        cfg.init(pos + PCI_EXP_LNKCAP, 4, 0x00000443 | (0x3 << 10))  # 8 GT/s x4, L0s+L1
        cfg.init(pos + PCI_EXP_LNKCTL, 2, 0, wmask=0x0FFB)
        cfg.init(pos + PCI_EXP_LNKSTA, 2, 0x1043)  # 8 GT/s x4, slot clock
        cfg.init(pos + PCI_EXP_DEVCAP2, 4, PCI_EXP_DEVCAP2_LTR if ltr else 0)
        cfg.init(pos + PCI_EXP_DEVCTL2, 2, 0, wmask=0x0400 if ltr else 0)
        self.pcie_cap = pos
        return pos

    def finalize(self) -> None:
        """Freeze the power-on image; called once the function is fully built."""
        self.cfg.save_reset_state()

    # -- identity on the bus -------------------------------------------------
    @property
    def rid(self) -> int:
        """Requester ID: bus number << 8 | devfn, as captured from the link."""
        return ((self.bus.number if self.bus else 0) << 8) | self.devfn

    @property
    def bdf(self) -> str:
        bus = self.bus.number if self.bus else 0
        return f"{bus:02x}:{self.devfn >> 3:02x}.{self.devfn & 7}"

    def bar_address(self, index: int) -> int:
        """Where BAR ``index`` is placed (the model's view: not a register access)."""
        bar = self.bars[index]
        data = self.cfg.data
        off = PCI_BASE_ADDRESS_0 + 4 * index
        addr = int.from_bytes(data[off : off + 4], "little") & 0xFFFFFFF0
        if bar.is64:
            addr |= int.from_bytes(data[off + 4 : off + 8], "little") << 32
        return addr

    def config_page(self) -> int | None:
        """The CPU-physical address of this function's 4 KiB of config space (its ECAM
        page, or its page of a VMD's CFGBAR); None while the CPU cannot reach it."""
        bus = self.bus
        return None if bus is None else bus.config_page(self.devfn)

    def register_spans(self) -> list[tuple[int, int]]:
        """Every register the CPU can reach: the config page and each placed BAR
        (inclusive ranges). What changes all at once when the card leaves its slot."""
        spans = []
        page = self.config_page()
        if page is not None:
            spans.append((page, page + 0xFFF))
        for index, bar in self.bars.items():
            base = self.bar_address(index)
            if base:
                spans.append((base, base + bar.size - 1))
        return spans

    def read_command(self) -> int:
        """The function's logic consults its Command register (a reported read)."""
        return self.cfg.hw_read(PCI_COMMAND, 2)

    @property
    def memory_enabled(self) -> bool:
        return bool(self.cfg.data[PCI_COMMAND] & PCI_COMMAND_MEMORY)

    @property
    def bus_master_enabled(self) -> bool:
        """The function's logic tests its Bus Master bit (reported as a register read)."""
        return bool(self.read_command() & PCI_COMMAND_MASTER)

    # -- configuration cycles (type 0, addressed to this function) -----------
    def cfg_read(self, off: int, size: int) -> int:
        return self.cfg.read(off, size)

    def cfg_write(self, off: int, size: int, value: int) -> None:
        self.cfg.write(off, size, value)

    def _decode_changed(self, off: int, size: int, value: int) -> None:
        decoders = []
        if self.memory_enabled:
            for bar in self.bars.values():
                base = self.bar_address(bar.index)
                decoders.append((base, base + bar.size, bar))
        self._decoders = decoders

    # -- memory transactions arriving from the bus ----------------------------
    def route_mem_read(self, addr: int, size: int) -> int | None:
        """Claim and complete a read if a BAR decodes ``addr``; None if not claimed."""
        for base, end, bar in self._decoders:
            if base <= addr < end:
                return self.mmio_read(bar.index, addr - base, size)
        return None

    def route_mem_write(self, addr: int, size: int, value: int) -> bool:
        for base, end, bar in self._decoders:
            if base <= addr < end:
                self.mmio_write(bar.index, addr - base, size, value)
                return True
        return False

    def mmio_read(self, bar: int, off: int, size: int) -> int:
        """Registers behind a BAR; unimplemented space reads as zero."""
        return 0

    def mmio_write(self, bar: int, off: int, size: int, value: int) -> None:
        """Writes to unimplemented space are ignored, as hardware does."""

    def mmio_error(self, register: str, off: int, size: int, what: str) -> MmioAccessError:
        return MmioAccessError(self.name, register, off, size, what)

    # -- bus mastering: this function's own writes and reads ----------------
    def bus_master_write(self, addr: int, size: int, value: int) -> bool:
        """Issue a memory write upstream (an MSI, or DMA); False if nothing took it."""
        if not self.read_command() & PCI_COMMAND_MASTER or self.upstream is None:
            self.master_aborted_writes += 1
            return False
        return self.upstream.upstream_write(addr, size, value, self)

    def bus_master_read(self, addr: int, size: int) -> int | None:
        if not self.read_command() & PCI_COMMAND_MASTER or self.upstream is None:
            return None
        return self.upstream.upstream_read(addr, size, self)

    # -- reset ----------------------------------------------------------------
    def reset(self) -> None:
        """Conventional reset: config space to power-on values, device state cleared."""
        for cap in (self.msix, self.msi):
            if cap is not None:
                cap.reset_state()  # first: it counts the Pending Bits the reset clears
        self.cfg.reset()
        self._decode_changed(0, 0, 0)
        self.reset_state()

    def reset_state(self) -> None:
        """Device state outside config space returns to power-on; override."""

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name} {self.bdf}>"
