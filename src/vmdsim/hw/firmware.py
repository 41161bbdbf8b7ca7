"""What platform firmware (BIOS) has done before the OS starts.

On x86 the BIOS assigns the BARs of the devices it found and Linux keeps
them. The VMD in particular must come up configured: Linux's vmd driver
relies on the BIOS having placed MEMBAR1/MEMBAR2 below 4 GiB when it wants
32-bit windows out of them. The model's firmware does that much: every BAR
of every endpoint on the primary root bus goes into the host bridge's 32-bit
window, naturally aligned, largest first, and memory decode is enabled.

Left to the OS, as Linux does on its own: bus numbers and windows of bridges,
the devices below them, and everything inside a VMD's hidden domain (firmware
configures that too on real machines, but the vmd driver clears and reassigns
it anyway).
"""

from __future__ import annotations

from vmdsim.errors import VmdsimError
from vmdsim.hw.fabric import RootComplex
from vmdsim.hw.function import PciFunction
from vmdsim.hw.regs import PCI_BASE_ADDRESS_0, PCI_COMMAND, PCI_COMMAND_MEMORY


class FirmwareError(VmdsimError):
    """The firmware could not fit BAR ``bar`` of ``fn`` into the primary domain's window."""

    def __init__(self, fn: PciFunction, bar: int, message: str) -> None:
        self.fn, self.bar = fn, bar
        super().__init__(message)


def bios_assign_resources(rc: RootComplex) -> None:
    """Place every root-bus endpoint BAR in the 32-bit host window and enable decode."""
    base, limit = rc.windows[0]
    bus = rc.root_bus  # firmware speaks config cycles, like everyone else
    bars = []
    for fn in bus.devices.values():
        if getattr(fn, "is_bridge", False):
            continue
        for bar in fn.bars.values():
            bars.append((bar.size, fn.devfn, fn, bar))
    bars.sort(key=lambda b: (-b[0], b[1], b[3].index))
    cursor = base
    for size, _, fn, bar in bars:
        addr = (cursor + size - 1) & ~(size - 1)
        if addr + size - 1 > limit:
            raise FirmwareError(fn, bar.index, f"{fn.name}: BAR{bar.index} ({size:#x} bytes) "
                                f"does not fit the 32-bit host window {base:#x}-{limit:#x}")
        off = PCI_BASE_ADDRESS_0 + 4 * bar.index
        bus.config_write(0, fn.devfn, off, 4, addr & 0xFFFFFFFF)
        if bar.is64:
            bus.config_write(0, fn.devfn, off + 4, 4, addr >> 32)
        cursor = addr + size
    for fn in bus.devices.values():
        if fn.bars and not getattr(fn, "is_bridge", False):
            cmd = bus.config_read(0, fn.devfn, PCI_COMMAND, 2)
            bus.config_write(0, fn.devfn, PCI_COMMAND, 2, cmd | PCI_COMMAND_MEMORY)
