"""MSI-X: the capability in config space, the table and PBA that live in a BAR.

As the PCI spec has it:

- Message Control holds the table size (N-1, read-only), Function Mask and
  MSI-X Enable. Table Offset/BIR and PBA Offset/BIR say which BAR holds them.
- Each 16-byte table entry: message address (low, high), message data, vector
  control (bit 0 = mask; every entry comes out of reset masked).
- Firing vector n while MSI-X is enabled and neither the function nor the
  entry is masked is a memory write of the entry's data to its address,
  read from the table at that moment. Masked, the Pending Bit is set instead,
  and the message goes out (and the bit clears) as soon as it is unmasked.
- With MSI-X disabled a function would fall back to INTx, which the model
  does not signal: such a firing is dropped and counted.

Every read or change of Message Control, a table entry or the PBA by the
function's own logic is reported (``hw/observe.py``) at the address where the
CPU reaches it, so the explorer orders a firing against the kernel's masking
and rewriting of the entry.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from vmdsim.hw.observe import DEVICE_READ, DEVICE_WRITE, device_access, observer
from vmdsim.hw.regs import (
    PCI_CAP_ID_MSIX,
    PCI_MSIX_ENTRY_CTRL_MASKBIT,
    PCI_MSIX_ENTRY_SIZE,
    PCI_MSIX_FLAGS,
    PCI_MSIX_FLAGS_ENABLE,
    PCI_MSIX_FLAGS_MASKALL,
    PCI_MSIX_PBA,
    PCI_MSIX_TABLE,
)

if TYPE_CHECKING:
    from vmdsim.hw.function import PciFunction


class MsixCapability:
    """MSI-X for one function, with ``nvec`` table entries."""

    def __init__(self, fn: PciFunction, nvec: int, table_bar: int, table_offset: int,
                 pba_bar: int | None = None, pba_offset: int | None = None,
                 at: int | None = None) -> None:
        if not 1 <= nvec <= 2048:
            raise ValueError(f"{fn.name}: MSI-X table size {nvec} outside 1..2048")
        if pba_bar is None:
            pba_bar = table_bar
        if pba_offset is None:
            pba_offset = (table_offset + nvec * PCI_MSIX_ENTRY_SIZE + 7) & ~7
        for bar, off, what in ((table_bar, table_offset, "table"), (pba_bar, pba_offset, "PBA")):
            if bar not in fn.bars:
                raise ValueError(f"{fn.name}: MSI-X {what} in BAR{bar}, which does not exist")
            if off & 7:
                raise ValueError(f"{fn.name}: MSI-X {what} offset {off:#x} not 8-byte aligned")
        if table_offset + nvec * PCI_MSIX_ENTRY_SIZE > fn.bars[table_bar].size:
            raise ValueError(f"{fn.name}: MSI-X table overruns BAR{table_bar}")
        self.fn = fn
        self.nvec = nvec
        self.table_bar, self.table_offset = table_bar, table_offset
        self.pba_bar, self.pba_offset = pba_bar, pba_offset
        self.table_end = table_offset + nvec * PCI_MSIX_ENTRY_SIZE
        self.pba_end = pba_offset + ((nvec + 63) // 64) * 8
        cfg = fn.cfg
        self.pos = pos = cfg.add_capability(PCI_CAP_ID_MSIX, 12, at=at)
        cfg.init(pos + PCI_MSIX_FLAGS, 2, nvec - 1,
                 wmask=PCI_MSIX_FLAGS_ENABLE | PCI_MSIX_FLAGS_MASKALL)
        cfg.init(pos + PCI_MSIX_TABLE, 4, table_offset | table_bar)
        cfg.init(pos + PCI_MSIX_PBA, 4, pba_offset | pba_bar)
        cfg.on_write(pos + PCI_MSIX_FLAGS, pos + PCI_MSIX_FLAGS + 2, self._control_written)
        # Every firing ends in exactly one of: sent (at once, or later from its Pending
        # Bit), dropped (MSI-X off), merged (its Pending Bit was already set), discarded
        # (pending at a reset), or still pending: fired = sent + dropped + merged +
        # discarded + pending_count, at any moment.
        self.fired = 0
        self.sent = 0  # messages written onto the bus
        self.dropped = 0  # firings while MSI-X was disabled
        self.merged = 0  # firings of an entry whose Pending Bit was already set
        self.discarded = 0  # Pending Bits cleared by a reset, never sent
        self.pending = 0
        self.reset_state()

    @property
    def pending_count(self) -> int:
        return self.pending.bit_count()

    def reset_state(self) -> None:
        n = self.nvec
        self.discarded += self.pending_count
        self.addr = [0] * n  # 64-bit message address
        self.data = [0] * n
        self.ctrl = [PCI_MSIX_ENTRY_CTRL_MASKBIT] * n
        self.pending = 0  # bit n = Pending Bit of entry n
        self.enabled = False
        self.fmask = False

    # -- where the CPU reaches the registers the function's logic consults -----
    def _report_control(self) -> None:
        self.fn.cfg.report(self.pos + PCI_MSIX_FLAGS, 2, DEVICE_READ)

    def _report_entry(self, n: int) -> None:
        base = self.fn.bar_address(self.table_bar)
        if base:
            device_access(base + self.table_offset + n * PCI_MSIX_ENTRY_SIZE,
                          PCI_MSIX_ENTRY_SIZE, DEVICE_READ)

    def _report_pba(self, n: int, kind: str) -> None:
        base = self.fn.bar_address(self.pba_bar)
        if base:
            device_access(base + self.pba_offset + 8 * (n // 64), 8, kind)

    # -- the function's own logic ---------------------------------------------
    def fire(self, n: int) -> bool:
        """The function signals vector ``n``; True if a message went onto the bus."""
        self.fired += 1
        listening = observer.fn is not None
        if listening:
            self._report_control()
        if not self.enabled:
            self.dropped += 1
            return False
        if listening:
            self._report_entry(n)
        if self.fmask or self.ctrl[n] & PCI_MSIX_ENTRY_CTRL_MASKBIT:
            if self.pending >> n & 1:
                self.merged += 1
            if listening:
                self._report_pba(n, DEVICE_WRITE)
            self.pending |= 1 << n
            return False
        self.sent += 1
        return self.fn.bus_master_write(self.addr[n], 4, self.data[n])

    def is_masked(self, n: int) -> bool:
        return self.fmask or bool(self.ctrl[n] & PCI_MSIX_ENTRY_CTRL_MASKBIT)

    def _deliver_pending(self) -> None:
        listening = observer.fn is not None
        if listening:
            self._report_control()
        if not self.enabled or self.fmask:
            return
        if listening:
            for word in range(0, self.nvec, 64):
                self._report_pba(word, DEVICE_READ)
        if not self.pending:
            return
        for n in range(self.nvec):
            if not self.pending >> n & 1:
                continue
            if listening:
                self._report_entry(n)
            if not self.ctrl[n] & PCI_MSIX_ENTRY_CTRL_MASKBIT:
                if listening:
                    self._report_pba(n, DEVICE_WRITE)
                self.pending &= ~(1 << n)
                self.sent += 1
                self.fn.bus_master_write(self.addr[n], 4, self.data[n])

    def _control_written(self, off: int, size: int, value: int) -> None:
        flags = self.fn.cfg.hw_read(self.pos + PCI_MSIX_FLAGS, 2)
        self.enabled = bool(flags & PCI_MSIX_FLAGS_ENABLE)
        self.fmask = bool(flags & PCI_MSIX_FLAGS_MASKALL)
        self._deliver_pending()

    # -- memory accesses to the table and PBA --------------------------------
    def claims(self, bar: int, off: int) -> bool:
        return (bar == self.table_bar and self.table_offset <= off < self.table_end) or (
            bar == self.pba_bar and self.pba_offset <= off < self.pba_end)

    def mmio_read(self, bar: int, off: int, size: int) -> int:
        self._check(off, size)
        if bar == self.table_bar and self.table_offset <= off < self.table_end:
            rel = off - self.table_offset
            value = 0
            for i in range(0, size, 4):
                value |= self._read_entry_dword(rel + i) << (8 * i)
            return value
        rel = off - self.pba_offset
        word = self.pending >> (8 * (rel & ~7)) & 0xFFFFFFFFFFFFFFFF
        return (word >> (8 * (rel & 7))) & ((1 << (8 * size)) - 1)

    def mmio_write(self, bar: int, off: int, size: int, value: int) -> None:
        self._check(off, size)
        if not (bar == self.table_bar and self.table_offset <= off < self.table_end):
            return  # the PBA is read-only
        rel = off - self.table_offset
        for i in range(0, size, 4):
            self._write_entry_dword(rel + i, (value >> (8 * i)) & 0xFFFFFFFF)

    def _read_entry_dword(self, rel: int) -> int:
        n, field = divmod(rel, PCI_MSIX_ENTRY_SIZE)
        if field == 0:
            return self.addr[n] & 0xFFFFFFFF
        if field == 4:
            return self.addr[n] >> 32
        if field == 8:
            return self.data[n]
        return self.ctrl[n]

    def _write_entry_dword(self, rel: int, value: int) -> None:
        n, field = divmod(rel, PCI_MSIX_ENTRY_SIZE)
        if field == 0:
            self.addr[n] = (self.addr[n] & ~0xFFFFFFFF) | (value & 0xFFFFFFFC)
        elif field == 4:
            self.addr[n] = (self.addr[n] & 0xFFFFFFFF) | (value << 32)
        elif field == 8:
            self.data[n] = value
        else:
            was_masked = self.ctrl[n] & PCI_MSIX_ENTRY_CTRL_MASKBIT
            self.ctrl[n] = value & PCI_MSIX_ENTRY_CTRL_MASKBIT
            if was_masked and not self.ctrl[n]:
                self._deliver_pending()

    def _check(self, off: int, size: int) -> None:
        if size not in (4, 8) or off % size:
            raise self.fn.mmio_error("MSI-X table/PBA", off, size,
                                     "access must be an aligned dword or qword")
