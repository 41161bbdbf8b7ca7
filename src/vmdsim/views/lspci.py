"""``lspci`` as pciutils prints it, from what the kernel knows.

Everything comes from the kernel's ``pci_dev`` objects and config reads
through the kernel's accessors (so a VMD domain is read through CFGBAR),
never from hardware objects. Names come from a small built-in slice of the
PCI ID database covering the devices the model builds; anything else prints
as pciutils does for an unknown ID ("Device 1234").

Formats: ``lspci`` (``-D`` is implied: several domains exist), ``-n``
numeric IDs, ``-v`` verbose (memory regions, bus numbers and windows of
bridges, capabilities found, the driver in use), ``-t`` the tree.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from vmdsim.kernel.pci import (
    PCI_BRIDGE_MEM_WINDOW,
    PCI_BRIDGE_PREF_MEM_WINDOW,
    pci_name,
    pci_read_config_byte,
)
from vmdsim.kernel.pci.resource import IORESOURCE_MEM_64, IORESOURCE_PREFETCH, IORESOURCE_UNSET

if TYPE_CHECKING:
    from vmdsim.kernel.core import Kernel

VENDORS = {0x8086: "Intel Corporation"}
DEVICES = {
    (0x8086, 0x2020): "Sky Lake-E DMI3 Registers",
    (0x8086, 0x201D): "Volume Management Device NVMe RAID Controller",
    (0x8086, 0x28C0): "Volume Management Device NVMe RAID Controller",
    (0x8086, 0x467F): "Volume Management Device NVMe RAID Controller",
    (0x8086, 0x4C3D): "Volume Management Device NVMe RAID Controller",
    (0x8086, 0xA77F): "Volume Management Device NVMe RAID Controller Intel Corporation",
    (0x8086, 0x9A0B): "Volume Management Device NVMe RAID Controller",
    (0x8086, 0x2030): "Sky Lake-E PCI Express Root Port A",
    (0x8086, 0x0A54): "NVMe Datacenter SSD [3DNAND, Beta Rock Controller]",
}
CLASSES = {
    0x0104: "RAID bus controller",
    0x0108: "Non-Volatile memory controller",
    0x0600: "Host bridge",
    0x0604: "PCI bridge",
}
CAP_NAMES = {0x01: "Power Management", 0x05: "MSI", 0x09: "Vendor Specific Information",
             0x10: "Express", 0x11: "MSI-X"}


def device_name(vendor: int, device: int) -> str:
    v = VENDORS.get(vendor, f"Device {vendor:04x}")
    return f"{v} {DEVICES.get((vendor, device), f'Device {device:04x}')}"


def class_name(class24: int) -> str:
    cls = class24 >> 8
    return CLASSES.get(cls, f"Class {cls:04x}")


def all_devices(k: Kernel) -> list[Any]:
    """Every device, by domain then bus then devfn, as lspci sorts them."""
    return k.pci.lspci()


def line(dev: Any, numeric: bool = False) -> str:
    # pciutils: only a nonzero Revision ID is printed
    rev = f" (rev {dev.revision:02x})" if dev.revision else ""
    if numeric:
        return (f"{pci_name(dev)} {dev.class_ >> 8:04x}: "
                f"{dev.vendor:04x}:{dev.device:04x}{rev}")
    return f"{pci_name(dev)} {class_name(dev.class_)}: {device_name(dev.vendor, dev.device)}{rev}"


def _size(n: int) -> str:
    for unit, shift in (("G", 30), ("M", 20), ("K", 10)):
        if n >= 1 << shift and n % (1 << shift) == 0:
            return f"{n >> shift}{unit}"
    return str(n)


def _capabilities(dev: Any) -> list[str]:

    out, pos, seen = [], pci_read_config_byte(dev, 0x34)[1] & 0xFC, 0
    while pos and seen < 48:
        cap = pci_read_config_byte(dev, pos)[1]
        out.append(f"Capabilities: [{pos:02x}] {CAP_NAMES.get(cap, f'#{cap:02x}')}")
        pos = pci_read_config_byte(dev, pos + 1)[1] & 0xFC
        seen += 1
    return out


def verbose(dev: Any) -> list[str]:
    out = [line(dev)]
    if dev.subordinate is not None:
        sub = dev.subordinate
        out.append(f"\tBus: primary={dev.bus.number:02x}, secondary={sub.number:02x}, "
                   f"subordinate={sub.busn_res.end if sub.busn_res else sub.number:02x}")
        for idx, what in ((PCI_BRIDGE_MEM_WINDOW, "Memory"),
                          (PCI_BRIDGE_PREF_MEM_WINDOW, "Prefetchable memory")):
            r = dev.resource[idx] if idx < len(dev.resource) else None
            if r is not None and r.flags and not r.flags & IORESOURCE_UNSET and r.end > r.start:
                out.append(f"\t{what} behind bridge: {r.start:08x}-{r.end:08x} "
                           f"[size={_size(r.end - r.start + 1)}]")
    for i in range(6):
        r = dev.resource[i] if i < len(dev.resource) else None
        if r is None or not r.flags or r.end <= r.start:
            continue
        kind = ("64-bit" if r.flags & IORESOURCE_MEM_64 else "32-bit") + ", " + \
               ("prefetchable" if r.flags & IORESOURCE_PREFETCH else "non-prefetchable")
        where = "[virtual] " if r.flags & IORESOURCE_UNSET else ""
        out.append(f"\tMemory at {r.start:x} {where}({kind}) [size={_size(r.end - r.start + 1)}]")
    out.extend("\t" + c for c in _capabilities(dev))
    if dev.driver is not None:
        out.append(f"\tKernel driver in use: {dev.driver.name}")
    return out


def tree(k: Kernel) -> str:
    """``lspci -t``: one tree per domain (highest first, as lspci prints them)."""
    roots = sorted(k.pci.pci_root_buses, key=lambda b: (b.domain_nr, b.number), reverse=True)
    out: list[str] = []
    for n, bus in enumerate(roots):
        label = f"[{bus.domain_nr:04x}:{bus.number:02x}]-"
        if len(roots) == 1:
            lead, cont = "-", " "
        else:
            lead = "-+-" if n == 0 else (" \\-" if n == len(roots) - 1 else " +-")
            cont = "   " if n == len(roots) - 1 else " | "
        body = _bus_lines(bus)
        out.append(lead + label + body[0])
        out.extend(cont + " " * (len(label) + len(lead) - len(cont)) + b for b in body[1:])
    return "\n".join(out)


def _bus_lines(bus: Any) -> list[str]:
    devs = sorted(bus.devices, key=lambda d: d.devfn)
    if not devs:
        return [""]
    lines: list[str] = []
    for i, dev in enumerate(devs):
        only, last = len(devs) == 1, i == len(devs) - 1
        text = ("--" if only else "\\-" if last else "+-") + f"{dev.devfn >> 3:02x}.{dev.devfn & 7}"
        rest: list[str] = []
        sub = dev.subordinate
        if sub is not None:
            text += f"-[{sub.number:02x}]"
            if sub.devices:
                child = _bus_lines(sub)
                text += "--"
                pad = ("  " if only or last else "| ") + " " * (len(text) - 2)
                rest = [pad + c for c in child[1:]]
                text += child[0]
            else:
                text += "--"
        lines.append(text)
        lines.extend(rest)
    return lines


def lspci(k: Kernel, *, as_tree: bool = False, verbose_: bool = False, numeric: bool = False
          ) -> str:
    if as_tree:
        return tree(k)
    devs = all_devices(k)
    if verbose_:
        return "\n\n".join("\n".join(verbose(d)) for d in devs)
    return "\n".join(line(d, numeric) for d in devs)
