"""MSI: the capability that lives wholly in config space.

The model implements the 64-bit layout with per-vector masking, as root
ports and many endpoints have it:

- Message Control: Enable, Multiple Message Capable (read-only, log2),
  Multiple Message Enable (log2 of the vectors software granted).
- Message Address (low, high) and Message Data, written by software.
- Mask Bits (read-write) and Pending Bits (read-only).

Vector n of 2**MME is signalled by writing Message Data with its low MME bits
replaced by n. A masked vector sets its pending bit and goes out on unmask.
With MSI disabled the firing would be INTx, not modelled: dropped and counted.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from vmdsim.hw.regs import (
    PCI_CAP_ID_MSI,
    PCI_MSI_ADDRESS_HI,
    PCI_MSI_ADDRESS_LO,
    PCI_MSI_DATA_64,
    PCI_MSI_FLAGS,
    PCI_MSI_FLAGS_64BIT,
    PCI_MSI_FLAGS_ENABLE,
    PCI_MSI_FLAGS_MASKBIT,
    PCI_MSI_FLAGS_QSIZE,
    PCI_MSI_MASK_64,
    PCI_MSI_PENDING_64,
)

if TYPE_CHECKING:
    from vmdsim.hw.function import PciFunction


class MsiCapability:
    """64-bit MSI with per-vector masking; ``log2_vectors`` is Multiple Message Capable."""

    def __init__(self, fn: PciFunction, log2_vectors: int = 0, at: int | None = None) -> None:
        if not 0 <= log2_vectors <= 5:
            raise ValueError(f"{fn.name}: MSI Multiple Message Capable {log2_vectors} not in 0..5")
        self.fn = fn
        self.max_vectors = 1 << log2_vectors
        cfg = fn.cfg
        self.pos = pos = cfg.add_capability(PCI_CAP_ID_MSI, 24, at=at)
        cfg.init(pos + PCI_MSI_FLAGS, 2,
                 PCI_MSI_FLAGS_64BIT | PCI_MSI_FLAGS_MASKBIT | (log2_vectors << 1),
                 wmask=PCI_MSI_FLAGS_ENABLE | PCI_MSI_FLAGS_QSIZE)
        cfg.init(pos + PCI_MSI_ADDRESS_LO, 4, 0, wmask=0xFFFFFFFC)
        cfg.init(pos + PCI_MSI_ADDRESS_HI, 4, 0, wmask=0xFFFFFFFF)
        cfg.init(pos + PCI_MSI_DATA_64, 2, 0, wmask=0xFFFF)
        cfg.init(pos + PCI_MSI_MASK_64, 4, 0, wmask=(1 << self.max_vectors) - 1)
        cfg.init(pos + PCI_MSI_PENDING_64, 4, 0)
        cfg.on_write(pos + PCI_MSI_FLAGS, pos + PCI_MSI_FLAGS + 2, self._unmasked)
        cfg.on_write(pos + PCI_MSI_MASK_64, pos + PCI_MSI_MASK_64 + 4, self._unmasked)
        # As for MSI-X: fired = sent + dropped + merged + discarded + pending_count.
        self.fired = 0
        self.sent = 0
        self.dropped = 0  # MSI off, or a vector beyond those granted
        self.merged = 0
        self.discarded = 0

    @property
    def pending_count(self) -> int:
        return self.fn.cfg.hw_read(self.pos + PCI_MSI_PENDING_64, 4).bit_count()

    def reset_state(self) -> None:
        """All MSI state is in config space, which the function's reset restores (the
        Pending Bits set before it are counted as discarded)."""
        self.discarded += self.pending_count

    @property
    def enabled(self) -> bool:
        return bool(self.fn.cfg.hw_read(self.pos + PCI_MSI_FLAGS, 2) & PCI_MSI_FLAGS_ENABLE)

    @property
    def granted(self) -> int:
        """Vectors software enabled: 2 ** Multiple Message Enable."""
        return 1 << ((self.fn.cfg.hw_read(self.pos + PCI_MSI_FLAGS, 2) & PCI_MSI_FLAGS_QSIZE) >> 4)

    def fire(self, n: int = 0) -> bool:
        """The function signals vector ``n``; True if a message went onto the bus."""
        cfg, pos = self.fn.cfg, self.pos
        self.fired += 1
        if not self.enabled or n >= self.granted:
            self.dropped += 1
            return False
        if cfg.hw_read(pos + PCI_MSI_MASK_64, 4) >> n & 1:
            if cfg.hw_read(pos + PCI_MSI_PENDING_64, 4) >> n & 1:
                self.merged += 1
            cfg.hw_set(pos + PCI_MSI_PENDING_64, 4, 1 << n)
            return False
        return self._send(n)

    def _send(self, n: int) -> bool:
        cfg, pos = self.fn.cfg, self.pos
        addr = cfg.hw_read(pos + PCI_MSI_ADDRESS_LO, 4) | (cfg.hw_read(pos + PCI_MSI_ADDRESS_HI, 4)
                                                           << 32)
        data = (cfg.hw_read(pos + PCI_MSI_DATA_64, 2) & ~(self.granted - 1)) | n
        self.sent += 1
        return self.fn.bus_master_write(addr, 4, data)

    def _unmasked(self, off: int, size: int, value: int) -> None:
        cfg, pos = self.fn.cfg, self.pos
        if not self.enabled:
            return
        ready = cfg.hw_read(pos + PCI_MSI_PENDING_64, 4) & ~cfg.hw_read(pos + PCI_MSI_MASK_64, 4)
        for n in range(self.granted):
            if ready >> n & 1:
                cfg.hw_clear(pos + PCI_MSI_PENDING_64, 4, 1 << n)
                self._send(n)
