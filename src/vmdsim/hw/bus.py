"""A PCI bus segment: the functions on it and how transactions are routed across it.

Configuration cycles are routed by bus number: a cycle for this bus's own
number becomes a type-0 cycle to the function at ``devfn``; a cycle for a
higher number goes to the bridge whose [secondary, subordinate] range holds it.
A cycle nobody claims is a master abort: reads return all-ones, writes vanish.

Memory transactions are claimed by whichever function decodes the address
(a BAR, or a bridge window that forwards it further down).

A bus below a PCI Express downstream port is a point-to-point link: only
device 0 answers there, exactly as a port forwards type-0 cycles only to
device 0.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, cast

from vmdsim.hw.regs import PCI_HEADER_TYPE, PCI_HEADER_TYPE_MFD, pci_devfn

if TYPE_CHECKING:
    from vmdsim.hw.bridge import PciBridge
    from vmdsim.hw.function import PciFunction, UpstreamPort


def all_ones(size: int) -> int:
    """What a read nobody claims returns: every byte 0xFF (size: 1 to 4096 bytes)."""
    return (1 << 8 * size) - 1


class MasterAbortLog:
    """Transactions that nobody claimed, per fabric: counted, the last few kept."""

    def __init__(self, keep: int = 64) -> None:
        self.count = 0
        self.keep = keep
        self.recent: list[tuple[str, int]] = []

    def record(self, kind: str, addr: int) -> None:
        self.count += 1
        if len(self.recent) >= self.keep:
            del self.recent[0]
        self.recent.append((kind, addr))


class PciBus:
    """One bus segment.

    ``number`` is fixed for a root bus (``root_number``) and otherwise follows
    the secondary-bus register of the bridge above it.
    """

    def __init__(
        self,
        upstream: UpstreamPort,
        aborts: MasterAbortLog,
        *,
        root_number: int | None = None,
        parent_bridge: PciBridge | None = None,
        link: bool = False,
    ) -> None:
        self.upstream = upstream
        self.aborts = aborts
        self.root_number = root_number
        self.parent_bridge = parent_bridge
        self.link = link
        self.devices: dict[int, PciFunction] = {}
        self.bridges: list[PciBridge] = []

    @property
    def number(self) -> int:
        if self.root_number is not None:
            return self.root_number
        assert self.parent_bridge is not None
        return self.parent_bridge.secondary_bus

    def config_page(self, devfn: int) -> int | None:
        """Where the CPU reaches the config space of ``devfn`` on this bus: the window of
        the segment's root (the root complex's ECAM, or a VMD's CFGBAR); None if none."""
        root = self
        while root.parent_bridge is not None:
            above = root.parent_bridge.bus
            if above is None:
                return None
            root = above
        window = getattr(root.upstream, "config_window", None)
        return None if window is None else window(self.number, devfn)

    # -- building the hardware ------------------------------------------------
    def attach(self, fn: PciFunction, slot: int = 0, func: int = 0) -> PciFunction:
        """Plug ``fn`` in at slot.func (a hardware act: a card in a slot)."""
        devfn = pci_devfn(slot, func)
        if devfn in self.devices:
            raise ValueError(f"{fn.name}: slot {slot:02x}.{func} is taken by "
                             f"{self.devices[devfn].name}")
        if self.link and slot != 0:
            raise ValueError(f"{fn.name}: a PCIe link carries only device 0, not {slot}")
        fn.bus, fn.devfn, fn.upstream = self, devfn, self.upstream
        self.devices[devfn] = fn
        if getattr(fn, "is_bridge", False):
            self.bridges.append(cast("PciBridge", fn))
        if func:
            f0 = self.devices.get(pci_devfn(slot, 0))
            if f0 is not None:
                f0.cfg.hw_set(PCI_HEADER_TYPE, 1, PCI_HEADER_TYPE_MFD)
        elif any(d >> 3 == slot and d & 7 for d in self.devices):
            fn.cfg.hw_set(PCI_HEADER_TYPE, 1, PCI_HEADER_TYPE_MFD)
        return fn

    def detach(self, fn: PciFunction) -> None:
        """Pull ``fn`` out (surprise removal as the hardware sees it)."""
        del self.devices[fn.devfn]
        if fn in self.bridges:
            self.bridges.remove(fn)
        fn.bus, fn.upstream = None, None

    def walk(self) -> Iterator[PciFunction]:
        """Every function on this bus and below it, depth first."""
        for devfn in sorted(self.devices):
            fn = self.devices[devfn]
            yield fn
            if getattr(fn, "is_bridge", False):
                yield from cast("PciBridge", fn).secondary.walk()

    # -- configuration cycles --------------------------------------------------
    def _target(self, bus: int, devfn: int) -> PciFunction | None:
        if bus == self.number:
            if self.link and devfn >> 3:
                return None
            return self.devices.get(devfn)
        for br in self.bridges:
            if br.secondary_bus <= bus <= br.subordinate_bus and br.secondary_bus:
                return br.secondary._target(bus, devfn)
        return None

    def config_read(self, bus: int, devfn: int, off: int, size: int) -> int:
        fn = self._target(bus, devfn)
        if fn is None:
            self.aborts.record("config-read", (bus << 20) | (devfn << 12) | off)
            return all_ones(size)
        return fn.cfg_read(off, size)

    def config_write(self, bus: int, devfn: int, off: int, size: int, value: int) -> None:
        fn = self._target(bus, devfn)
        if fn is None:
            self.aborts.record("config-write", (bus << 20) | (devfn << 12) | off)
            return
        fn.cfg_write(off, size, value)

    # -- memory transactions going down ---------------------------------------
    def mem_read(self, addr: int, size: int) -> int | None:
        for fn in self.devices.values():
            value = fn.route_mem_read(addr, size)
            if value is not None:
                return value
        return None

    def mem_write(self, addr: int, size: int, value: int) -> bool:
        for fn in self.devices.values():
            if fn.route_mem_write(addr, size, value):
                return True
        return False
