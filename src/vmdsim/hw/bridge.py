"""A PCI-to-PCI bridge (type-1 header): bus numbers, memory windows, forwarding.

Downstream, the bridge claims memory transactions that fall inside its
memory window or prefetchable window (while Command.Memory Space is set) and
passes them to its secondary bus. Upstream, it forwards what devices below it
master only while its own Command.Bus Master is set (otherwise the request is
an Unsupported Request, counted as a master abort); an upstream address that
falls inside its own windows is peer-to-peer traffic and goes back down.

Bridge Control.Secondary Bus Reset resets every function below the bridge.

Simplifications: no I/O window, no VGA or ISA routing, no subtractive decode.
"""

from __future__ import annotations

from vmdsim.hw.bus import MasterAbortLog, PciBus, all_ones
from vmdsim.hw.function import Bar, PciFunction
from vmdsim.hw.observe import DEVICE_READ
from vmdsim.hw.regs import (
    PCI_BRIDGE_CONTROL,
    PCI_BRIDGE_CTL_BUS_RESET,
    PCI_BRIDGE_CTL_PARITY,
    PCI_BRIDGE_CTL_SERR,
    PCI_COMMAND_MASTER,
    PCI_MEMORY_BASE,
    PCI_PREF_BASE_UPPER32,
    PCI_PREF_LIMIT_UPPER32,
    PCI_PREF_MEMORY_BASE,
    PCI_PREF_RANGE_TYPE_64,
    PCI_PRIMARY_BUS,
    PCI_SEC_LATENCY_TIMER,
    PCI_SEC_STATUS,
    PCI_SECONDARY_BUS,
    PCI_STATUS_RW1C,
    PCI_SUBORDINATE_BUS,
)


class PciBridge(PciFunction):
    """A type-1 function with a secondary bus segment behind it."""

    header_type = 1
    bar_count = 2
    is_bridge = True

    def __init__(
        self,
        name: str,
        vendor: int,
        device: int,
        class_code: int = 0x060400,
        *,
        aborts: MasterAbortLog,
        bars: tuple[Bar, ...] = (),
        link: bool = True,
        revision: int = 0,
    ) -> None:
        super().__init__(name, vendor, device, class_code, bars=bars, revision=revision)
        cfg = self.cfg
        cfg.init(PCI_PRIMARY_BUS, 1, 0, wmask=0xFF)
        cfg.init(PCI_SECONDARY_BUS, 1, 0, wmask=0xFF)
        cfg.init(PCI_SUBORDINATE_BUS, 1, 0, wmask=0xFF)
        cfg.init(PCI_SEC_LATENCY_TIMER, 1, 0)
        cfg.init(PCI_SEC_STATUS, 2, 0, w1c=PCI_STATUS_RW1C)
        # Memory base/limit: address bits 31:20, 1 MiB granularity.
        cfg.init(PCI_MEMORY_BASE, 4, 0, wmask=0xFFF0FFF0)
        # Prefetchable base/limit: 64-bit capable, upper 32 bits in their own registers.
        cfg.init(PCI_PREF_MEMORY_BASE, 4, PCI_PREF_RANGE_TYPE_64 | (PCI_PREF_RANGE_TYPE_64 << 16),
                 wmask=0xFFF0FFF0)
        cfg.init(PCI_PREF_BASE_UPPER32, 4, 0, wmask=0xFFFFFFFF)
        cfg.init(PCI_PREF_LIMIT_UPPER32, 4, 0, wmask=0xFFFFFFFF)
        cfg.init(PCI_BRIDGE_CONTROL, 2, 0,
                 wmask=PCI_BRIDGE_CTL_PARITY | PCI_BRIDGE_CTL_SERR | PCI_BRIDGE_CTL_BUS_RESET)
        cfg.on_write(PCI_MEMORY_BASE, PCI_PREF_LIMIT_UPPER32 + 4, self._decode_changed)
        cfg.on_write(PCI_BRIDGE_CONTROL, PCI_BRIDGE_CONTROL + 2, self._bridge_control_written)
        self.secondary = PciBus(self, aborts, parent_bridge=self, link=link)
        self._windows: list[tuple[int, int]] = []
        self._in_reset = False

    # -- bus numbers ------------------------------------------------------------
    @property
    def secondary_bus(self) -> int:
        return self.cfg.data[PCI_SECONDARY_BUS]

    @property
    def subordinate_bus(self) -> int:
        return self.cfg.data[PCI_SUBORDINATE_BUS]

    # -- windows ----------------------------------------------------------------
    def memory_window(self) -> tuple[int, int] | None:
        """[base, limit] of the non-prefetchable window, or None when closed."""
        base = (self.cfg.hw_read(PCI_MEMORY_BASE, 2) & 0xFFF0) << 16
        limit = ((self.cfg.hw_read(PCI_MEMORY_BASE + 2, 2) & 0xFFF0) << 16) | 0xFFFFF
        return (base, limit) if base <= limit else None

    def prefetch_window(self) -> tuple[int, int] | None:
        base = (self.cfg.hw_read(PCI_PREF_MEMORY_BASE, 2) & 0xFFF0) << 16
        limit = ((self.cfg.hw_read(PCI_PREF_MEMORY_BASE + 2, 2) & 0xFFF0) << 16) | 0xFFFFF
        base |= self.cfg.hw_read(PCI_PREF_BASE_UPPER32, 4) << 32
        limit |= self.cfg.hw_read(PCI_PREF_LIMIT_UPPER32, 4) << 32
        return (base, limit) if base <= limit else None

    def _decode_changed(self, off: int, size: int, value: int) -> None:
        super()._decode_changed(off, size, value)
        wins = []
        if self.memory_enabled:
            for w in (self.memory_window(), self.prefetch_window()):
                if w is not None:
                    wins.append(w)
        self._windows = wins

    def _in_windows(self, addr: int) -> bool:
        for base, limit in self._windows:
            if base <= addr <= limit:
                return True
        return False

    # -- downstream memory ----------------------------------------------------
    def route_mem_read(self, addr: int, size: int) -> int | None:
        value = super().route_mem_read(addr, size)
        if value is None and self._in_windows(addr):
            value = self.secondary.mem_read(addr, size)
            if value is None:
                self.secondary.aborts.record("mem-read", addr)
                return all_ones(size)
        return value

    def route_mem_write(self, addr: int, size: int, value: int) -> bool:
        if super().route_mem_write(addr, size, value):
            return True
        if self._in_windows(addr):
            if not self.secondary.mem_write(addr, size, value):
                self.secondary.aborts.record("mem-write", addr)
            return True  # the bridge claimed it; what happened below is its business
        return False

    # -- upstream: transactions mastered by functions below -------------------
    def upstream_write(self, addr: int, size: int, value: int, requester: PciFunction) -> bool:
        if not self.read_command() & PCI_COMMAND_MASTER or self.upstream is None:
            self.secondary.aborts.record("upstream-write-blocked", addr)
            return False
        self._consult_windows()
        if self._windows and self._in_windows(addr):
            if self.secondary.mem_write(addr, size, value):
                return True
            self.secondary.aborts.record("peer-write", addr)
            return False
        return self.upstream.upstream_write(addr, size, value, requester)

    def upstream_read(self, addr: int, size: int, requester: PciFunction) -> int | None:
        if not self.read_command() & PCI_COMMAND_MASTER or self.upstream is None:
            self.secondary.aborts.record("upstream-read-blocked", addr)
            return None
        self._consult_windows()
        if self._windows and self._in_windows(addr):
            return self.secondary.mem_read(addr, size)
        return self.upstream.upstream_read(addr, size, requester)

    def _consult_windows(self) -> None:
        """Forwarding a transaction upstream, the bridge reads its memory windows (a write
        that falls in them goes back down, peer to peer)."""
        self.cfg.report(PCI_MEMORY_BASE, PCI_PREF_LIMIT_UPPER32 + 4 - PCI_MEMORY_BASE,
                        DEVICE_READ)

    # -- secondary bus reset --------------------------------------------------
    def _bridge_control_written(self, off: int, size: int, value: int) -> None:
        asserted = bool(self.cfg.data[PCI_BRIDGE_CONTROL] & PCI_BRIDGE_CTL_BUS_RESET)
        if asserted and not self._in_reset:
            for fn in list(self.secondary.walk()):
                fn.reset()
        self._in_reset = asserted

    def reset_state(self) -> None:
        self._windows = []
        self._in_reset = False
        for fn in list(self.secondary.walk()):
            fn.reset()
