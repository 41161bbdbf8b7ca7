"""Errors a person can act on.

Every error names where it happened: the file, line and field of bad topology
input, or the device, register and offset of a bad register access.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import ClassVar


class VmdsimError(Exception):
    """Base of every error vmdsim raises on purpose.

    ``on_raise`` is set by the scheduler: an error made inside an explored
    context marks the moment of the failure, so the unwinding that follows
    (Python runs ``finally`` blocks; a KASAN report in Linux does not unwind)
    is not drawn as steps of its own.
    """

    on_raise: ClassVar[Callable[[VmdsimError], None] | None] = None

    def __init__(self, *args: object) -> None:
        super().__init__(*args)
        hook = VmdsimError.on_raise
        if hook is not None:
            hook(self)


class ConfigAccessError(VmdsimError):
    """A configuration access the hardware cannot perform (size, alignment, range)."""

    def __init__(self, device: str, offset: int, size: int, what: str) -> None:
        self.device, self.offset, self.size = device, offset, size
        super().__init__(f"{device}: config {what} at offset {offset:#05x} (size {size})")


class MmioAccessError(VmdsimError):
    """A memory access a device model cannot perform (size, alignment)."""

    def __init__(self, device: str, register: str, offset: int, size: int, what: str) -> None:
        self.device, self.register, self.offset, self.size = device, register, offset, size
        super().__init__(f"{device}: {register} {what} at offset {offset:#x} (size {size})")


class BusAccessError(VmdsimError):
    """A memory transaction no PCIe fabric can carry (address, size or data out of range)."""

    def __init__(self, who: str, addr: int, size: int, what: str) -> None:
        self.addr, self.size = addr, size
        super().__init__(f"{who}: memory transaction at {addr:#x} (size {size}): {what}")


class TopologyError(VmdsimError):
    """Bad topology input; names the file, line and field."""

    def __init__(self, file: str, line: int | None, field: str, message: str) -> None:
        self.file, self.line, self.field = file, line, field
        where = f"{file}:{line}" if line is not None else file
        super().__init__(f"{where}: {field}: {message}")


class Violation(VmdsimError):
    """A property a scenario checks does not hold (a handler ran after ``free_irq``
    returned, ...); ``kind`` names it in the explorer's verdict. Defined here, not in
    the explorer, because the models that notice it (drivers, the IRQ core) sit below."""

    def __init__(self, kind: str, message: str) -> None:
        self.kind = kind
        super().__init__(message)
