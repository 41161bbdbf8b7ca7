"""Config space of the VMD's domain, through CFGBAR (``vmd_cfg_addr``, ``vmd_cfg_read``,
``vmd_cfg_write`` and the ``vmd_ops`` the root bus is created with).

The CFGBAR is an ECAM window whose offset 0 is the domain's first bus
(``busn_start``): a config cycle to ``bus:devfn`` register ``reg`` is the
memory access at ``((bus - busn_start) << 20) | (devfn << 12) | reg``. An
access whose end falls outside the BAR fails with -EFAULT before touching
anything. Every access takes the VMD's config lock with interrupts off
("CPU may deadlock if config space is not serialized on some versions of
this hardware"), and a write is followed by a read of the same register: the
VMD turns config writes into posted memory writes, and the read forces the
write to complete before the accessor returns.

Where the model differs: Linux rejects ``offset + len >= size`` (one byte too
eagerly: the last dword of CFGBAR is unreachable); the model rejects only an
access that really ends past the BAR, as VMD-FACTS.md states it.
"""

from __future__ import annotations

from typing import Any

from vmdsim.drivers.vmd.dev import vmd_dev, vmd_from_bus
from vmdsim.drivers.vmd.features import VMD_CFGBAR
from vmdsim.kernel.errno import EFAULT, EINVAL
from vmdsim.kernel.io import iomem, readb, readl, readw, writeb, writel, writew
from vmdsim.kernel.locking import raw_spin_lock_irqsave, raw_spin_unlock_irqrestore
from vmdsim.kernel.pci import pci_ops, resource_size

_ONES = {1: 0xFF, 2: 0xFFFF, 4: 0xFFFFFFFF}


def PCIE_ECAM_OFFSET(bus: int, devfn: int, where: int) -> int:  # noqa: N802 - Linux's macro
    return ((bus & 0xFF) << 20) | ((devfn & 0xFF) << 12) | (where & 0xFFF)


def vmd_cfg_addr(vmd: vmd_dev, bus: Any, devfn: int, reg: int, length: int) -> iomem | None:
    """The CFGBAR address of a config access, or None if it would leave the BAR."""
    busnr_ecam = bus.number - vmd.busn_start
    offset = PCIE_ECAM_OFFSET(busnr_ecam, devfn, reg)
    if busnr_ecam < 0 or offset + length > resource_size(vmd.dev.resource[VMD_CFGBAR]):
        return None
    return vmd.cfgbar + offset


def vmd_cfg_read(bus: Any, devfn: int, reg: int, length: int) -> tuple[int, int]:
    """``pci_ops.read`` of a VMD domain: (0, value), or (-EFAULT/-EINVAL, all-ones)."""
    vmd = vmd_from_bus(bus)
    addr = vmd_cfg_addr(vmd, bus, devfn, reg, length)
    if addr is None:
        return -EFAULT, _ONES.get(length, 0xFFFFFFFF)
    flags = raw_spin_lock_irqsave(vmd.cfg_lock)
    try:
        if length == 1:
            return 0, readb(addr)
        if length == 2:
            return 0, readw(addr)
        if length == 4:
            return 0, readl(addr)
        return -EINVAL, 0xFFFFFFFF
    finally:
        raw_spin_unlock_irqrestore(vmd.cfg_lock, flags)


def vmd_cfg_write(bus: Any, devfn: int, reg: int, length: int, value: int) -> int:
    """``pci_ops.write`` of a VMD domain: write, then read back; 0 or -EFAULT/-EINVAL."""
    vmd = vmd_from_bus(bus)
    addr = vmd_cfg_addr(vmd, bus, devfn, reg, length)
    if addr is None:
        return -EFAULT
    flags = raw_spin_lock_irqsave(vmd.cfg_lock)
    try:
        if length == 1:
            writeb(value, addr)
            readb(addr)
        elif length == 2:
            writew(value, addr)
            readw(addr)
        elif length == 4:
            writel(value, addr)
            readl(addr)
        else:
            return -EINVAL
        return 0
    finally:
        raw_spin_unlock_irqrestore(vmd.cfg_lock, flags)


# One static pci_ops for every VMD domain, as in Linux; the VMD is found from the bus.
vmd_ops = pci_ops(vmd_cfg_read, vmd_cfg_write, name="vmd")
