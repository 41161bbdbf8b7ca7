"""Coherent DMA memory: ``dma_alloc_coherent`` / ``dma_free_coherent`` (kernel/dma/mapping.c).

A driver that shares memory with its device (NVMe queues, descriptor
rings) asks for a buffer both can reach: the CPU through a kernel virtual
address, the device through a bus address (``dma_addr_t``) it writes into
its registers or commands. On x86 without an IOMMU translation, as here,
the bus address is the physical address.

The model's pieces, where Linux has them:

- ``k.pages`` (:class:`PageAllocator`, the buddy allocator's part the model
  needs): whole 4 KiB pages of the machine's RAM, handed out first fit above
  the first 16 MiB (where the kernel image and early allocations live) and
  merged again on free. Created by ``boot`` from the RAM firmware reports.
- ``dma_alloc_coherent(k, dev, size)`` -> :class:`dma_coherent`: the pages
  rounded up from ``size``, zeroed (as Linux's coherent allocations are), with
  ``dma_handle`` (the bus address) and ``cpu_addr`` (a cookie the CPU reads
  and writes through). The bookkeeping object comes from ``k.mem``, so a
  buffer never freed is a leak report and a use after free a KASAN report.

CPU accesses go to RAM through the root complex, and each is a scheduling
point keyed by the physical address, like an MMIO access: in C they are
plain loads and stores (``READ_ONCE`` on a completion entry), and a device
writing the same bytes by DMA races with them exactly as with a register.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from vmdsim.errors import VmdsimError
from vmdsim.kernel.io import iomem, vm_struct
from vmdsim.kernel.shared import KObject

if TYPE_CHECKING:
    from vmdsim.kernel.base.core import device
    from vmdsim.kernel.core import Kernel

PAGE_SIZE = 4096
RESERVED_LOW = 16 << 20  # the kernel image and early allocations: never handed out here


class DmaError(VmdsimError):
    """A DMA API misuse the kernel would warn about (a bad free, a zero-sized request)."""


class PageAllocator:
    """Free page ranges of RAM, first fit, merged on free (``k.pages``)."""

    def __init__(self, ram_size: int, reserved_low: int = RESERVED_LOW) -> None:
        start = min(reserved_low, ram_size) // PAGE_SIZE
        self.free: list[tuple[int, int]] = []  # (first page, number of pages), sorted
        if ram_size // PAGE_SIZE > start:
            self.free.append((start, ram_size // PAGE_SIZE - start))
        self.allocated: dict[int, int] = {}  # first page -> number of pages

    def alloc_pages(self, npages: int) -> int | None:
        """The physical address of ``npages`` contiguous free pages, or None."""
        for i, (first, n) in enumerate(self.free):
            if n >= npages:
                if n == npages:
                    del self.free[i]
                else:
                    self.free[i] = (first + npages, n - npages)
                self.allocated[first] = npages
                return first * PAGE_SIZE
        return None

    def free_pages(self, addr: int) -> None:
        first = addr // PAGE_SIZE
        npages = self.allocated.pop(first, None)
        if npages is None or addr % PAGE_SIZE:
            raise DmaError(f"free of {addr:#x}: not an address the page allocator gave out")
        self.free.append((first, npages))
        self.free.sort()
        merged: list[tuple[int, int]] = []
        for f, n in self.free:
            if merged and merged[-1][0] + merged[-1][1] == f:
                merged[-1] = (merged[-1][0], merged[-1][1] + n)
            else:
                merged.append((f, n))
        self.free = merged


class dma_coherent(KObject):
    """One coherent buffer: ``size`` bytes at bus address ``dma_handle``, for ``owner``."""

    def __init__(self, dev: Any, dma_handle: int, size: int, vm: vm_struct) -> None:
        self.dev = dev
        self.dma_handle = dma_handle
        self.size = size
        self.vm = vm

    @property
    def cpu_addr(self) -> iomem:
        return iomem(self.vm, 0)

    def __repr__(self) -> str:
        return f"<dma_coherent {self.dma_handle:#x}+{self.size:#x}>"


def dma_alloc_coherent(k: Kernel, dev: Any, size: int, owner: str = "dma") -> dma_coherent | None:
    """``size`` bytes of zeroed memory both the CPU and ``dev`` reach; None when out of
    memory (Linux: NULL)."""
    if size <= 0:
        raise DmaError(f"dma_alloc_coherent({dev!r}, {size}): the size must be positive")
    pages: PageAllocator = k.pages
    npages = -(-size // PAGE_SIZE)
    phys = pages.alloc_pages(npages)
    if phys is None:
        return None
    vm = k.mem.kzalloc(vm_struct, k.io.bus, phys, npages * PAGE_SIZE, "dma_alloc_coherent",
                       owner=owner)
    if vm is None:
        pages.free_pages(phys)
        return None
    buf = k.mem.kzalloc(dma_coherent, dev, phys, size, vm, owner=owner)
    if buf is None:
        k.mem.kfree(vm)
        pages.free_pages(phys)
        return None
    for off in range(0, npages * PAGE_SIZE, PAGE_SIZE):  # zeroed: coherent memory always is
        k.io.bus.mem_write(phys + off, PAGE_SIZE, 0)
    return buf


def dma_free_coherent(k: Kernel, buf: dma_coherent) -> None:
    """Give ``buf`` back: its pages to the page allocator, its bookkeeping to the slab."""
    phys = buf.dma_handle
    k.mem.kfree(buf.vm)
    k.mem.kfree(buf)
    k.pages.free_pages(phys)


def DMA_BIT_MASK(n: int) -> int:
    return (1 << n) - 1


def dma_set_mask_and_coherent(dev: device, mask: int) -> int:
    """Record the DMA addressing limit; 0 (the model's RAM sits below 3 GiB: any mask fits)."""
    dev.dma_mask = dev.coherent_dma_mask = mask
    return 0
