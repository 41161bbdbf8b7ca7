"""Configuration-space access: ``pci_ops`` and the accessors (``drivers/pci/access.c``).

Every config read or write the kernel makes goes through the ``pci_ops`` of
the bus the device sits on: ``ops.read(bus, devfn, where, size) -> (ret, value)``
and ``ops.write(bus, devfn, where, size, value) -> ret``, ``ret`` being a
``PCIBIOS_*`` code or a negative errno, as in Linux (where ``read`` stores the
value through a pointer; here it is handed back beside the code). Domain 0's
ops are x86's MMCONFIG accessors (``x86.py``); a VMD installs its own ops that
go through its CFGBAR.

The accessors return what Linux's do: ``pci_read_config_dword(dev, where)``
gives ``(ret, value)`` (on failure ``value`` is all-ones, Linux's
``PCI_SET_ERROR_RESPONSE``), writes give ``ret``. A misaligned offset is
``PCIBIOS_BAD_REGISTER_NUMBER`` and never reaches the bus.

x86 selects ``CONFIG_PCI_LOCKLESS_CONFIG``, so ``pci_lock`` is not taken around
config accesses; the ECAM accesses are plain MMIO.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import cast

from vmdsim.hw.regs import (
    PCI_EXP_DEVCAP,
    PCI_EXP_DEVCAP2,
    PCI_EXP_DEVCTL,
    PCI_EXP_DEVCTL2,
    PCI_EXP_DEVSTA,
    PCI_EXP_FLAGS,
    PCI_EXP_FLAGS_SLOT,
    PCI_EXP_LNKCAP,
    PCI_EXP_LNKCAP2,
    PCI_EXP_LNKCTL,
    PCI_EXP_LNKCTL2,
    PCI_EXP_LNKSTA,
    PCI_EXP_LNKSTA2,
    PCI_EXP_RTCAP,
    PCI_EXP_RTCTL,
    PCI_EXP_RTSTA,
    PCI_EXP_SLTCAP,
    PCI_EXP_SLTCTL,
    PCI_EXP_SLTSTA,
    PCI_EXP_SLTSTA_PDS,
    PCI_EXP_TYPE_DOWNSTREAM,
    PCI_EXP_TYPE_ENDPOINT,
    PCI_EXP_TYPE_LEG_END,
    PCI_EXP_TYPE_PCI_BRIDGE,
    PCI_EXP_TYPE_PCIE_BRIDGE,
    PCI_EXP_TYPE_RC_EC,
    PCI_EXP_TYPE_ROOT_PORT,
    PCI_EXP_TYPE_UPSTREAM,
)
from vmdsim.kernel.errno import EFAULT, EIO, ENODEV, ENOENT, ENOSPC, ENOTTY, ERANGE
from vmdsim.kernel.io import iomem, readb, readl, readw, writeb, writel, writew
from vmdsim.kernel.pci.pci_h import (
    PCI_FUNC,
    PCI_SLOT,
    PciError,
    pci_bus,
    pci_dev,
    pci_dev_is_disconnected,
    pci_is_pcie,
    pci_pcie_type,
    pcie_cap_version,
    pcie_downstream_port,
)

# include/linux/pci.h
PCIBIOS_SUCCESSFUL = 0x00
PCIBIOS_FUNC_NOT_SUPPORTED = 0x81
PCIBIOS_BAD_VENDOR_ID = 0x83
PCIBIOS_DEVICE_NOT_FOUND = 0x86
PCIBIOS_BAD_REGISTER_NUMBER = 0x87
PCIBIOS_SET_FAILED = 0x88
PCIBIOS_BUFFER_TOO_SMALL = 0x89

PCI_ERROR_RESPONSE = 0xFFFFFFFF
_ONES = {1: 0xFF, 2: 0xFFFF, 4: 0xFFFFFFFF}

ReadOp = Callable[["pci_bus", int, int, int], tuple[int, int]]
WriteOp = Callable[["pci_bus", int, int, int, int], int]
MapBusOp = Callable[["pci_bus", int, int], "iomem | None"]


def PCI_POSSIBLE_ERROR(val: int, size: int = 4) -> bool:
    """True when a read returned all-ones, which is what a failed access yields."""
    return val == _ONES[size]


def pcibios_err_to_errno(err: int) -> int:
    """A PCIBIOS_* code as a negative errno (errnos pass through)."""
    if err <= PCIBIOS_SUCCESSFUL:
        return err
    return {
        PCIBIOS_FUNC_NOT_SUPPORTED: -ENOENT,
        PCIBIOS_BAD_VENDOR_ID: -ENOTTY,
        PCIBIOS_DEVICE_NOT_FOUND: -ENODEV,
        PCIBIOS_BAD_REGISTER_NUMBER: -EFAULT,
        PCIBIOS_SET_FAILED: -EIO,
        PCIBIOS_BUFFER_TOO_SMALL: -ENOSPC,
    }.get(err, -ERANGE)


class pci_ops:
    """``struct pci_ops``: how config cycles for a root bus (and its children) are made.

    ``read(bus, devfn, where, size) -> (ret, value)``,
    ``write(bus, devfn, where, size, value) -> ret``; ``map_bus(bus, devfn, where)``
    for ECAM-style controllers that use :func:`pci_generic_config_read`.
    """

    __slots__ = ("name", "read", "write", "map_bus", "add_bus", "remove_bus")

    def __init__(self, read: ReadOp | None = None, write: WriteOp | None = None, *,
                 map_bus: MapBusOp | None = None, add_bus: Callable | None = None,
                 remove_bus: Callable | None = None, name: str = "") -> None:
        if read is None or write is None:
            raise TypeError(f"pci_ops {name!r}: both read and write are required")
        self.name = name
        self.read = read
        self.write = write
        self.map_bus = map_bus
        self.add_bus = add_bus
        self.remove_bus = remove_bus

    def __repr__(self) -> str:
        return f"<pci_ops {self.name}>"


# -- generic ECAM accessors (for ops that provide map_bus) -------------------------
def pci_generic_config_read(bus: pci_bus, devfn: int, where: int, size: int) -> tuple[int, int]:
    addr = cast(MapBusOp, bus.ops.map_bus)(bus, devfn, where)  # ECAM ops provide it
    if addr is None:
        return PCIBIOS_DEVICE_NOT_FOUND, _ONES.get(size, PCI_ERROR_RESPONSE)
    if size == 1:
        return PCIBIOS_SUCCESSFUL, readb(addr)
    if size == 2:
        return PCIBIOS_SUCCESSFUL, readw(addr)
    return PCIBIOS_SUCCESSFUL, readl(addr)


def pci_generic_config_write(bus: pci_bus, devfn: int, where: int, size: int, val: int) -> int:
    addr = cast(MapBusOp, bus.ops.map_bus)(bus, devfn, where)  # ECAM ops provide it
    if addr is None:
        return PCIBIOS_DEVICE_NOT_FOUND
    if size == 1:
        writeb(val, addr)
    elif size == 2:
        writew(val, addr)
    else:
        writel(val, addr)
    return PCIBIOS_SUCCESSFUL


# -- bus-level accessors ----------------------------------------------------------
def _bus_read(bus: pci_bus, devfn: int, pos: int, size: int) -> tuple[int, int]:
    if pos & (size - 1):
        return PCIBIOS_BAD_REGISTER_NUMBER, _ONES[size]
    try:
        ret, data = bus.ops.read(bus, devfn, pos, size)
    except (TypeError, ValueError) as e:
        raise _bad_ops(bus, devfn, pos, size, "read", e) from e
    if ret:
        return ret, _ONES[size]
    return ret, data & _ONES[size]


def _bad_ops(bus: pci_bus, devfn: int, pos: int, size: int, what: str,
             e: Exception) -> PciError:
    return PciError(
        f"config {what} of {size} byte(s) at {bus.domain_nr:04x}:{bus.number:02x}:"
        f"{PCI_SLOT(devfn):02x}.{PCI_FUNC(devfn)} offset {pos:#x} through {bus.ops!r}: "
        f"ops.read must return (PCIBIOS code, value) ({type(e).__name__}: {e})")


def _bus_write(bus: pci_bus, devfn: int, pos: int, size: int, value: int) -> int:
    if pos & (size - 1):
        return PCIBIOS_BAD_REGISTER_NUMBER
    return bus.ops.write(bus, devfn, pos, size, value & _ONES[size])


def pci_bus_read_config_byte(bus: pci_bus, devfn: int, pos: int) -> tuple[int, int]:
    return _bus_read(bus, devfn, pos, 1)


def pci_bus_read_config_word(bus: pci_bus, devfn: int, pos: int) -> tuple[int, int]:
    return _bus_read(bus, devfn, pos, 2)


def pci_bus_read_config_dword(bus: pci_bus, devfn: int, pos: int) -> tuple[int, int]:
    return _bus_read(bus, devfn, pos, 4)


def pci_bus_write_config_byte(bus: pci_bus, devfn: int, pos: int, value: int) -> int:
    return _bus_write(bus, devfn, pos, 1, value)


def pci_bus_write_config_word(bus: pci_bus, devfn: int, pos: int, value: int) -> int:
    return _bus_write(bus, devfn, pos, 2, value)


def pci_bus_write_config_dword(bus: pci_bus, devfn: int, pos: int, value: int) -> int:
    return _bus_write(bus, devfn, pos, 4, value)


# -- device-level accessors ---------------------------------------------------------
def _dev_read(dev: pci_dev, where: int, size: int) -> tuple[int, int]:
    if pci_dev_is_disconnected(dev):
        return PCIBIOS_DEVICE_NOT_FOUND, _ONES[size]
    return _bus_read(dev.bus, dev.devfn, where, size)


def _dev_write(dev: pci_dev, where: int, size: int, val: int) -> int:
    if pci_dev_is_disconnected(dev):
        return PCIBIOS_DEVICE_NOT_FOUND
    return _bus_write(dev.bus, dev.devfn, where, size, val)


def pci_read_config_byte(dev: pci_dev, where: int) -> tuple[int, int]:
    return _dev_read(dev, where, 1)


def pci_read_config_word(dev: pci_dev, where: int) -> tuple[int, int]:
    return _dev_read(dev, where, 2)


def pci_read_config_dword(dev: pci_dev, where: int) -> tuple[int, int]:
    return _dev_read(dev, where, 4)


def pci_write_config_byte(dev: pci_dev, where: int, val: int) -> int:
    return _dev_write(dev, where, 1, val)


def pci_write_config_word(dev: pci_dev, where: int, val: int) -> int:
    return _dev_write(dev, where, 2, val)


def pci_write_config_dword(dev: pci_dev, where: int, val: int) -> int:
    return _dev_write(dev, where, 4, val)


def pci_clear_and_set_config_dword(dev: pci_dev, pos: int, clear: int, set_: int) -> None:
    _, v = pci_read_config_dword(dev, pos)
    pci_write_config_dword(dev, pos, (v & ~clear) | set_)


# -- PCI Express capability accessors --------------------------------------------
def pcie_cap_has_lnkctl(dev: pci_dev) -> bool:
    return pci_pcie_type(dev) in (
        PCI_EXP_TYPE_ROOT_PORT, PCI_EXP_TYPE_ENDPOINT, PCI_EXP_TYPE_LEG_END,
        PCI_EXP_TYPE_UPSTREAM, PCI_EXP_TYPE_DOWNSTREAM, PCI_EXP_TYPE_PCI_BRIDGE,
        PCI_EXP_TYPE_PCIE_BRIDGE)


def pcie_cap_has_sltctl(dev: pci_dev) -> bool:
    return pcie_downstream_port(dev) and bool(dev.pcie_flags_reg & PCI_EXP_FLAGS_SLOT)


def pcie_cap_has_rtctl(dev: pci_dev) -> bool:
    return pci_pcie_type(dev) in (PCI_EXP_TYPE_ROOT_PORT, PCI_EXP_TYPE_RC_EC)


def pcie_capability_reg_implemented(dev: pci_dev, pos: int) -> bool:
    """Which PCIe capability registers exist for this port type (PCIe r6.0 sec 7.5.3)."""
    if not pci_is_pcie(dev):
        return False
    if pos in (PCI_EXP_FLAGS, PCI_EXP_DEVCAP, PCI_EXP_DEVCTL, PCI_EXP_DEVSTA):
        return True
    if pos in (PCI_EXP_LNKCAP, PCI_EXP_LNKCTL, PCI_EXP_LNKSTA):
        return pcie_cap_has_lnkctl(dev)
    if pos in (PCI_EXP_SLTCAP, PCI_EXP_SLTCTL, PCI_EXP_SLTSTA):
        return pcie_cap_has_sltctl(dev)
    if pos in (PCI_EXP_RTCTL, PCI_EXP_RTCAP, PCI_EXP_RTSTA):
        return pcie_cap_has_rtctl(dev)
    if pos in (PCI_EXP_DEVCAP2, PCI_EXP_DEVCTL2, PCI_EXP_LNKCAP2, PCI_EXP_LNKCTL2,
               PCI_EXP_LNKSTA2):
        return pcie_cap_version(dev) > 1
    return False


def _pcie_read(dev: pci_dev, pos: int, size: int) -> tuple[int, int]:
    if pos & (size - 1):
        return PCIBIOS_BAD_REGISTER_NUMBER, 0
    if pcie_capability_reg_implemented(dev, pos):
        ret, val = _dev_read(dev, dev.pcie_cap + pos, size)
        return ret, (0 if ret else val)
    # Registers a function does not implement read as zero, except that a downstream
    # port without a slot reports Presence Detect State set (PCIe r3.0 sec 7.8).
    if pci_is_pcie(dev) and pcie_downstream_port(dev) and pos == PCI_EXP_SLTSTA:
        return PCIBIOS_SUCCESSFUL, PCI_EXP_SLTSTA_PDS
    return PCIBIOS_SUCCESSFUL, 0


def _pcie_write(dev: pci_dev, pos: int, size: int, val: int) -> int:
    if pos & (size - 1):
        return PCIBIOS_BAD_REGISTER_NUMBER
    if not pcie_capability_reg_implemented(dev, pos):
        return PCIBIOS_SUCCESSFUL
    return _dev_write(dev, dev.pcie_cap + pos, size, val)


def pcie_capability_read_word(dev: pci_dev, pos: int) -> tuple[int, int]:
    return _pcie_read(dev, pos, 2)


def pcie_capability_read_dword(dev: pci_dev, pos: int) -> tuple[int, int]:
    return _pcie_read(dev, pos, 4)


def pcie_capability_write_word(dev: pci_dev, pos: int, val: int) -> int:
    return _pcie_write(dev, pos, 2, val)


def pcie_capability_write_dword(dev: pci_dev, pos: int, val: int) -> int:
    return _pcie_write(dev, pos, 4, val)


def pcie_capability_clear_and_set_word(dev: pci_dev, pos: int, clear: int, set_: int) -> int:
    ret, val = pcie_capability_read_word(dev, pos)
    if ret:
        return ret
    return pcie_capability_write_word(dev, pos, (val & ~clear) | set_)


def pcie_capability_clear_and_set_dword(dev: pci_dev, pos: int, clear: int, set_: int) -> int:
    ret, val = pcie_capability_read_dword(dev, pos)
    if ret:
        return ret
    return pcie_capability_write_dword(dev, pos, (val & ~clear) | set_)


def pcie_capability_set_word(dev: pci_dev, pos: int, set_: int) -> int:
    return pcie_capability_clear_and_set_word(dev, pos, 0, set_)


def pcie_capability_clear_word(dev: pci_dev, pos: int, clear: int) -> int:
    return pcie_capability_clear_and_set_word(dev, pos, clear, 0)


def pcie_capability_set_dword(dev: pci_dev, pos: int, set_: int) -> int:
    return pcie_capability_clear_and_set_dword(dev, pos, 0, set_)


def pcie_capability_clear_dword(dev: pci_dev, pos: int, clear: int) -> int:
    return pcie_capability_clear_and_set_dword(dev, pos, clear, 0)
