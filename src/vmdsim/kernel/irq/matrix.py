"""The per-CPU vector allocator (``kernel/irq/matrix.c``), as x86 uses it.

Each CPU has 256 vectors; those in ``[alloc_start, alloc_end)`` can be
handed to devices. ``irq_matrix_alloc(mask)`` picks the CPU in ``mask`` with
the most free vectors (the least loaded; ties go to the lowest-numbered CPU)
and gives it the lowest free vector there, as ``matrix_find_best_cpu`` and
``matrix_alloc_area`` do.

Where the model simplifies: no managed reservations (managed IRQs allocate
from their mask like any other), no global reservation counters, every CPU
online.
"""

from __future__ import annotations

from vmdsim.kernel.errno import ENOSPC
from vmdsim.kernel.shared import KObject


class cpumap:
    """One CPU's row of the matrix."""

    def __init__(self, available: int) -> None:
        self.available = available
        self.allocated = 0
        self.online = True
        self.alloc_map: set[int] = set()


class irq_matrix(KObject):
    """``struct irq_matrix``: ``maps[cpu].alloc_map`` holds the vectors in use."""

    def __init__(self, ncpus: int, matrix_bits: int, alloc_start: int, alloc_end: int) -> None:
        self.matrix_bits = matrix_bits
        self.alloc_start = alloc_start
        self.alloc_end = alloc_end
        self.alloc_size = alloc_end - alloc_start
        self.maps = [cpumap(self.alloc_size) for _ in range(ncpus)]
        self.total_allocated = 0

    def find_best_cpu(self, msk: frozenset[int]) -> int:
        best, maxavl = -1, -1
        for cpu in sorted(msk):
            if not 0 <= cpu < len(self.maps):
                continue
            cm = self.maps[cpu]
            if cm.online and cm.available > maxavl:
                best, maxavl = cpu, cm.available
        return best

    def alloc(self, msk: frozenset[int]) -> tuple[int, int]:
        """``irq_matrix_alloc``: (vector, cpu), or (-ENOSPC, -1)."""
        cpu = self.find_best_cpu(msk)
        if cpu < 0:
            return -ENOSPC, -1
        cm = self.maps[cpu]
        for bit in range(self.alloc_start, self.alloc_end):
            if bit not in cm.alloc_map:
                cm.alloc_map.add(bit)
                cm.allocated += 1
                cm.available -= 1
                self.total_allocated += 1
                return bit, cpu
        return -ENOSPC, -1

    def free(self, cpu: int, bit: int) -> None:
        """``irq_matrix_free``."""
        cm = self.maps[cpu]
        if bit not in cm.alloc_map:
            return
        cm.alloc_map.discard(bit)
        cm.allocated -= 1
        cm.available += 1
        self.total_allocated -= 1

    def allocated(self, cpu: int | None = None) -> int:
        """Vectors in use on ``cpu`` (or on all CPUs)."""
        if cpu is None:
            return self.total_allocated
        return self.maps[cpu].allocated
