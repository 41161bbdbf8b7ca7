"""A function's configuration space: bytes, write masks and capability lists.

Real hardware decides per bit what a configuration write does: read-only bits
ignore it, read-write bits take it, and write-one-to-clear (RW1C) status bits
clear where a one is written. The model keeps one byte array for the register
contents and two masks beside it, and applies them per byte exactly that way.
Device models change read-only state (a presence-detect bit, a pending status)
with ``hw_set``/``hw_clear``, which bypass the masks, as the device's own logic
would.

After each write the owning device is told which bytes changed through its
write hooks (``on_write``), which is how BAR placement, the command register,
MSI-X enable and friends take effect.
"""

from __future__ import annotations

from collections.abc import Callable

from vmdsim.errors import ConfigAccessError
from vmdsim.hw.observe import DEVICE_READ, DEVICE_WRITE, device_access, observer
from vmdsim.hw.regs import (
    PCI_CAP_LIST_NEXT,
    PCI_CAPABILITY_LIST,
    PCI_CFG_SPACE_EXP_SIZE,
    PCI_CFG_SPACE_SIZE,
    PCI_STATUS,
    PCI_STATUS_CAP_LIST,
)

WriteHook = Callable[[int, int, int], None]
PageLocator = Callable[[], "int | None"]

_SIZES = (1, 2, 4)


class ConfigSpace:
    """Configuration registers of one PCI function.

    ``size`` is 256 for conventional PCI and 4096 for PCI Express (extended
    capabilities live at 0x100 and above).
    """

    def __init__(self, owner: str, size: int = PCI_CFG_SPACE_EXP_SIZE) -> None:
        self.owner = owner
        self.size = size
        self.data = bytearray(size)
        self.wmask = bytearray(size)
        self.w1cmask = bytearray(size)
        self._hooks: list[tuple[int, int, WriteHook]] = []
        self._reset_image: bytes | None = None
        self._next_cap = 0x40
        self._last_cap = 0
        self._last_ext_cap = 0
        self._next_ext_cap = PCI_CFG_SPACE_SIZE
        # Where the CPU reaches this space (set by the owning function): reads and writes
        # by the device's own logic are reported to the explorer at that address.
        self.page: PageLocator | None = None

    # -- set-up (what the silicon designer fixed) ---------------------------
    def init(self, off: int, size: int, value: int, wmask: int = 0, w1c: int = 0) -> None:
        """Give a register its power-on value and per-bit write behaviour."""
        self._check_range(off, size, "init")
        for i in range(size):
            self.data[off + i] = (value >> (8 * i)) & 0xFF
            self.wmask[off + i] = (wmask >> (8 * i)) & 0xFF
            self.w1cmask[off + i] = (w1c >> (8 * i)) & 0xFF

    def on_write(self, start: int, end: int, hook: WriteHook) -> None:
        """Call ``hook(off, size, value)`` after any write touching [start, end)."""
        self._hooks.append((start, end, hook))

    def add_capability(self, cap_id: int, length: int, at: int | None = None) -> int:
        """Append a standard capability to the list at 0x34; returns its offset."""
        off = self._next_cap if at is None else at
        off = (off + 3) & ~3
        if off < 0x40 or off + length > PCI_CFG_SPACE_SIZE:
            raise ValueError(f"{self.owner}: capability {cap_id:#x} does not fit at {off:#x}")
        self.data[off] = cap_id
        self.data[off + PCI_CAP_LIST_NEXT] = 0
        if self._last_cap:
            self.data[self._last_cap + PCI_CAP_LIST_NEXT] = off
        else:
            self.data[PCI_CAPABILITY_LIST] = off
            self.data[PCI_STATUS] |= PCI_STATUS_CAP_LIST
        self._last_cap = off
        self._next_cap = max(self._next_cap, (off + length + 3) & ~3)
        return off

    def add_ext_capability(self, cap_id: int, version: int, length: int) -> int:
        """Append a PCIe extended capability (header: id 15:0, ver 19:16, next 31:20)."""
        if self.size < PCI_CFG_SPACE_EXP_SIZE:
            raise ValueError(f"{self.owner}: no extended config space for cap {cap_id:#x}")
        off = self._next_ext_cap
        if off + length > self.size:
            raise ValueError(f"{self.owner}: extended capability {cap_id:#x} does not fit")
        self._put32(off, cap_id | (version << 16))
        if self._last_ext_cap:
            hdr = self._get32(self._last_ext_cap)
            self._put32(self._last_ext_cap, (hdr & 0x000FFFFF) | (off << 20))
        self._last_ext_cap = off
        self._next_ext_cap = (off + length + 3) & ~3
        return off

    def save_reset_state(self) -> None:
        """Remember the current contents as the power-on / reset image."""
        self._reset_image = bytes(self.data)

    def reset(self) -> None:
        """Conventional reset: every register back to its power-on value."""
        if self._reset_image is not None:
            self.data[:] = self._reset_image

    # -- the bus side: configuration read and write cycles ------------------
    def read(self, off: int, size: int) -> int:
        self._check(off, size, "read")
        if size == 4:
            return int.from_bytes(self.data[off : off + 4], "little")
        if size == 2:
            return self.data[off] | (self.data[off + 1] << 8)
        return self.data[off]

    def write(self, off: int, size: int, value: int) -> None:
        self._check(off, size, "write")
        data, wmask, w1c = self.data, self.wmask, self.w1cmask
        for i in range(size):
            o = off + i
            b = (value >> (8 * i)) & 0xFF
            m = wmask[o]
            data[o] = ((data[o] & ~m) | (b & m)) & ~(b & w1c[o]) & 0xFF
        end = off + size
        for start, stop, hook in self._hooks:
            if off < stop and start < end:
                hook(off, size, value)

    # -- the device side: its own logic reading and changing its registers --
    def hw_read(self, off: int, size: int) -> int:
        if observer.fn is not None:
            self.report(off, size, DEVICE_READ)
        return int.from_bytes(self.data[off : off + size], "little")

    def hw_write(self, off: int, size: int, value: int) -> None:
        if observer.fn is not None:
            self.report(off, size, DEVICE_WRITE)
        self.data[off : off + size] = (value & ((1 << (8 * size)) - 1)).to_bytes(size, "little")

    def report(self, off: int, size: int, kind: str) -> None:
        """The device's logic reads or changes registers at ``off`` (``hw/observe.py``):
        ``hw_read``/``hw_write`` call it; logic that keeps a copy of a register (MSI-X
        enable, the bridge's windows) calls it where it consults the copy."""
        page = self.page
        if observer.fn is not None and page is not None:
            base = page()
            device_access(None if base is None else base + off, size, kind)

    def hw_set(self, off: int, size: int, bits: int) -> None:
        self.hw_write(off, size, self.hw_read(off, size) | bits)

    def hw_clear(self, off: int, size: int, bits: int) -> None:
        self.hw_write(off, size, self.hw_read(off, size) & ~bits)

    def capabilities(self) -> list[tuple[int, int]]:
        """(id, offset) of each standard capability, walking the list as software does."""
        out: list[tuple[int, int]] = []
        if not self.data[PCI_STATUS] & PCI_STATUS_CAP_LIST:
            return out
        off = self.data[PCI_CAPABILITY_LIST] & ~3
        while off and len(out) < 48:
            out.append((self.data[off], off))
            off = self.data[off + PCI_CAP_LIST_NEXT] & ~3
        return out

    # -- helpers ------------------------------------------------------------
    def _get32(self, off: int) -> int:
        return int.from_bytes(self.data[off : off + 4], "little")

    def _put32(self, off: int, value: int) -> None:
        self.data[off : off + 4] = value.to_bytes(4, "little")

    def _check_range(self, off: int, size: int, what: str) -> None:
        if off < 0 or off + size > self.size:
            raise ConfigAccessError(self.owner, off, size, f"{what} outside config space")

    def _check(self, off: int, size: int, what: str) -> None:
        if size not in _SIZES:
            raise ConfigAccessError(self.owner, off, size, f"{what} of unsupported size")
        if off % size:
            raise ConfigAccessError(self.owner, off, size, f"misaligned {what}")
        self._check_range(off, size, what)
