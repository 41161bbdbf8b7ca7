"""An ``lspci -tv``-like picture of a machine's hardware.

One tree for the primary domain and one for each VMD's hidden domain, each
function on its own line: tree position (device.function, and for a bridge
the ``[secondary-subordinate]`` bus range it has been given, ``[--]`` before
any OS numbered it), vendor:device, class, the model's name for it and what
it is. An empty slot is shown under its root port.

This is the view of someone holding the hardware, not of an OS: hidden
domains have no PCI domain number until a VMD driver makes one, and bus
numbers are whatever has been programmed so far. It reads registers
directly (no configuration cycles), so looking changes nothing.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from vmdsim.hw.bridge import PciBridge
from vmdsim.hw.bus import PciBus
from vmdsim.hw.function import PciFunction
from vmdsim.hw.nvme import NvmeController
from vmdsim.hw.regs import PCI_CLASS_REVISION, PCI_DEVICE_ID, PCI_VENDOR_ID
from vmdsim.hw.rootport import RootPort
from vmdsim.hw.vmd import VMD_CFGBAR, VMD_MEMBAR1, VMD_MEMBAR2, Vmd

if TYPE_CHECKING:
    from vmdsim.hw.machine import Machine

CLASS_NAMES = {
    0x0600: "Host bridge",
    0x0604: "PCI bridge",
    0x0104: "RAID bus controller",
    0x0108: "Non-Volatile memory controller",
}

Row = tuple[str, str, str, str, str]  # tree, ids, class, name, details


def describe_machine(m: Machine) -> str:
    """The whole machine: the primary domain, then each VMD's hidden domain."""
    rc = m.rc
    out = [f"0000:00  primary domain  (ECAM at {rc.mmconfig_base:#x}, "
           f"{m.ncpus} CPUs, {_size(rc.ram.size)} RAM)"]
    out += _table(_bus_rows(rc.root_bus, " "))
    for vmd in m.vmds:
        out.append("")
        out.append(f"{vmd.name}  hidden domain behind 0000:{vmd.bdf}")
        out.append(f"  {_vmd_bars(vmd)}")
        out += _table(_bus_rows(vmd.hidden_bus, " "))
    return "\n".join(out)


def _vmd_bars(vmd: Vmd) -> str:
    def bar(what: str, i: int) -> str:
        return f"{what} {_size(vmd.bars[i].size)} at {vmd.bar_address(i):#x}"

    start = vmd.bus_start
    if start is None:
        buses = "unreachable: VMCONFIG bus restriction is invalid"
    else:
        last = min(0xFF, start + (vmd.bars[VMD_CFGBAR].size >> 20) - 1)
        buses = f"buses {start:02x}-{last:02x}"
    return (f"{bar('CFGBAR', VMD_CFGBAR)} ({buses}), {bar('MEMBAR1', VMD_MEMBAR1)}, "
            f"{bar('MEMBAR2', VMD_MEMBAR2)}")


def _bus_rows(bus: PciBus, indent: str) -> list[Row]:
    rows: list[Row] = []
    fns = [bus.devices[d] for d in sorted(bus.devices)]
    for i, fn in enumerate(fns):
        last = i == len(fns) - 1
        where = f"{fn.devfn >> 3:02x}.{fn.devfn & 7}"
        if isinstance(fn, PciBridge):
            sec, sub = fn.secondary_bus, fn.subordinate_bus
            where += f"-[{sec:02x}-{sub:02x}]" if sec else "-[--]"
        branch = "\\-" if last else "+-"
        rows.append((indent + branch + where, *_identity(fn)))
        if isinstance(fn, PciBridge):
            below = indent + ("   " if last else "|  ")
            child_rows = _bus_rows(fn.secondary, below)
            if not child_rows and isinstance(fn, RootPort):
                child_rows = [(f"{below}\\- (empty slot {fn.slot_number})", "", "", "", "")]
            rows += child_rows
    return rows


def _identity(fn: PciFunction) -> tuple[str, str, str, str]:
    cfg = fn.cfg
    ids = f"{cfg.hw_read(PCI_VENDOR_ID, 2):04x}:{cfg.hw_read(PCI_DEVICE_ID, 2):04x}"
    cls = cfg.hw_read(PCI_CLASS_REVISION, 4) >> 16
    return ids, CLASS_NAMES.get(cls, f"Class {cls:04x}"), fn.name, _details(fn)


def _details(fn: PciFunction) -> str:
    if isinstance(fn, Vmd):
        remap = "on" if fn.remapping_enabled else "off (bypass)"
        return f"VMD, {fn.msix.nvec} MSI-X vectors, MSI remapping {remap}"
    if isinstance(fn, RootPort):
        hp = "hot-plug" if fn.hotplug else "no hot-plug"
        irq = f"MSI-X ({fn.msix.nvec})" if fn.msix is not None else "MSI"
        return f"root port, slot {fn.slot_number}, {hp}, {irq}"
    if isinstance(fn, NvmeController):
        return f"NVMe, {fn.nr_io_queues} I/O queues, {fn.msix.nvec} MSI-X vectors"
    return ""


def _table(rows: list[Row]) -> list[str]:
    """Aligned columns; a row with no IDs (an empty slot) is its tree text alone."""
    widths = [max((len(r[i]) for r in rows if r[1]), default=0) for i in range(4)]
    out = []
    for row in rows:
        if not row[1]:
            out.append(row[0])
            continue
        cells = [c.ljust(w) for c, w in zip(row[:4], widths, strict=True)] + [row[4]]
        out.append("  ".join(cells).rstrip())
    return out


def _size(n: int) -> str:
    for unit, shift in (("G", 30), ("M", 20), ("K", 10)):
        if n >= 1 << shift and n % (1 << shift) == 0:
            return f"{n >> shift}{unit}"
    return f"{n}"
