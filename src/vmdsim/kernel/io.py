"""CPU access to device memory: ``ioremap`` and the ``readl``/``writel`` family.

On x86 a driver maps a physical MMIO range with ``ioremap(phys, size)`` and
gets a ``void __iomem *`` cookie; ``readl(addr)`` and ``writel(value, addr)``
(Linux's argument order: value first) are then uncached loads and stores that
the root complex turns into memory transactions on the PCI fabric.

The model keeps exactly that boundary. ``k.io`` is the CPU's view of the
physical address space: it forwards every access to the machine's root
complex (``rc.mem_read(addr, size)`` / ``rc.mem_write(addr, size, value)``)
and nothing else. ``ioremap`` allocates a ``vm_struct`` (the mapping, as
``get_vm_area`` does) through the kernel allocator, so a mapping that is never
``iounmap``'d shows up as a leak and an access through an unmapped cookie is a
use-after-free report. A cookie is an :class:`iomem` (mapping + offset);
``base + off`` makes a new cookie, as pointer arithmetic does in C.

Device registers are shared state: two CPUs that touch one register race
exactly as two CPUs that touch one field of a kernel object do. Every access
is therefore a scheduling point, ``(MMIO, "0x<physical address>", read|write)``;
the key is the physical address, so two mappings of one register are one
location to the explorer. Free-running, the point costs one
global load and a test; the key is only formatted when a controlled
scheduler listens.

Where the model is stricter than the hardware: an access that leaves the
mapped range raises :class:`IoAccessError` (real code would touch whatever
happens to be mapped next, or fault).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

from vmdsim.errors import VmdsimError
from vmdsim.kernel.shared import READ, WRITE, KObject, hook

if TYPE_CHECKING:
    from vmdsim.kernel.core import Kernel


class IoAccessError(VmdsimError):
    """An MMIO access outside the range that ``ioremap`` mapped."""


class _Mmio:
    """The object every MMIO scheduling point names: device memory as one shared thing.

    Not a :class:`KObject`: it is not allocated, and taking a serial number at
    import time would shift every object's serial.
    """

    __slots__ = ()

    def kname(self) -> str:
        return "mmio"

    def __repr__(self) -> str:
        return "<mmio>"


MMIO = _Mmio()


class CpuMemoryBus(Protocol):
    """What the CPU's loads and stores reach: the root complex."""

    def mem_read(self, addr: int, size: int) -> int: ...

    def mem_write(self, addr: int, size: int, value: int) -> None: ...


class vm_struct(KObject):
    """One ``ioremap`` mapping: ``size`` bytes of physical address space at ``phys_addr``."""

    def __init__(self, bus: CpuMemoryBus, phys_addr: int, size: int, caller: str) -> None:
        self.bus = bus
        self.phys_addr = phys_addr
        self.size = size
        self.caller = caller

    def __repr__(self) -> str:
        end = self.phys_addr + self.size - 1
        return f"<ioremap {self.phys_addr:#x}-{end:#x} by {self.caller}>"


class iomem:
    """A ``void __iomem *``: a mapping and an offset into it."""

    __slots__ = ("vm", "off")

    def __init__(self, vm: vm_struct, off: int = 0) -> None:
        self.vm = vm
        self.off = off

    def __add__(self, delta: int) -> iomem:
        return iomem(self.vm, self.off + delta)

    def __sub__(self, delta: int) -> iomem:
        return iomem(self.vm, self.off - delta)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, iomem) and other.vm is self.vm and other.off == self.off

    def __hash__(self) -> int:
        return hash((id(self.vm), self.off))

    @property
    def phys(self) -> int:
        """The physical address this cookie stands for (``virt_to_phys`` on an ioremap)."""
        return self.vm.phys_addr + self.off

    def __repr__(self) -> str:
        return f"<iomem {self.vm.phys_addr + self.off:#x}>"


class IoSpace:
    """``k.io``: the CPU's physical address space as the kernel reaches it."""

    def __init__(self, k: Kernel, bus: CpuMemoryBus) -> None:
        self.k = k
        self.bus = bus

    def ioremap(self, phys_addr: int, size: int, caller: str = "ioremap") -> iomem | None:
        """Map ``size`` bytes at ``phys_addr``; None when the allocation fails (Linux: NULL)."""
        if size <= 0 or phys_addr < 0:
            raise IoAccessError(f"{caller}: ioremap of {size:#x} bytes at {phys_addr:#x}: "
                                "the size must be positive and the address non-negative")
        vm = self.k.mem.kzalloc(vm_struct, self.bus, phys_addr, size, caller, owner="ioremap")
        if vm is None:
            return None
        return iomem(vm, 0)

    def iounmap(self, addr: iomem) -> None:
        """Tear down the mapping ``addr`` was returned for."""
        if addr.off != 0:
            raise IoAccessError(f"iounmap({addr!r}): not the address ioremap returned "
                                f"(offset {addr.off:#x} into {addr.vm!r})")
        self.k.mem.kfree(addr.vm)


def ioremap(k: Kernel, phys_addr: int, size: int) -> iomem | None:
    return k.io.ioremap(phys_addr, size)


def iounmap(k: Kernel, addr: iomem) -> None:
    k.io.iounmap(addr)


def _bad(addr: iomem, size: int, what: str) -> IoAccessError:
    vm = addr.vm
    return IoAccessError(f"{what} of {size} byte(s) at offset {addr.off:#x} of {vm!r}: "
                         f"outside the mapped {vm.size:#x} bytes")


def _read(addr: iomem, size: int, what: str) -> int:
    vm = addr.vm
    off = addr.off
    if off < 0 or off + size > vm.size:
        raise _bad(addr, size, what)
    phys = vm.phys_addr + off
    fn = hook.fn  # sched_point(MMIO, ..., READ), without formatting the key when free-running
    if fn is not None:
        fn(MMIO, f"{phys:#x}", READ)
    return vm.bus.mem_read(phys, size)


def _write(value: int, addr: iomem, size: int, what: str) -> None:
    vm = addr.vm
    off = addr.off
    if off < 0 or off + size > vm.size:
        raise _bad(addr, size, what)
    phys = vm.phys_addr + off
    fn = hook.fn
    if fn is not None:
        fn(MMIO, f"{phys:#x}", WRITE)
    vm.bus.mem_write(phys, size, value & ((1 << (8 * size)) - 1))


def readb(addr: iomem) -> int:
    return _read(addr, 1, "readb")


def readw(addr: iomem) -> int:
    return _read(addr, 2, "readw")


def readl(addr: iomem) -> int:
    return _read(addr, 4, "readl")


def readq(addr: iomem) -> int:
    return _read(addr, 8, "readq")


def writeb(value: int, addr: iomem) -> None:
    _write(value, addr, 1, "writeb")


def writew(value: int, addr: iomem) -> None:
    _write(value, addr, 2, "writew")


def writel(value: int, addr: iomem) -> None:
    _write(value, addr, 4, "writel")


def writeq(value: int, addr: iomem) -> None:
    _write(value, addr, 8, "writeq")


# The iomap flavour (what pci_iomap cookies are used with); on x86 MMIO they are the same.
ioread8, ioread16, ioread32, ioread64 = readb, readw, readl, readq
iowrite8, iowrite16, iowrite32, iowrite64 = writeb, writew, writel, writeq
