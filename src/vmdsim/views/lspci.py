"""``lspci`` as pciutils prints it, from what the kernel knows.

Everything comes from the kernel's ``pci_dev`` objects and config reads
through the kernel's accessors (so a VMD domain is read through CFGBAR),
never from hardware objects. Names come from a small built-in slice of the
PCI ID database covering the devices the model builds; anything else prints
as pciutils does for an unknown ID ("Device 1234").

Formats (pciutils 3.10 and later, 2023-): ``lspci``; ``-n`` numeric IDs, ``-nn`` names and IDs;
``-v`` verbose (memory regions, bus numbers and windows of bridges,
capabilities found, the driver in use); ``-k`` the driver in use and the
kernel modules that could drive it; ``-x`` (``-xxx``, ``-xxxx``) a hex dump of
the first 64 (256, 4096) bytes of config space; ``-t`` the tree, with names
under ``-v`` and IDs under ``-n``/``-nn``; ``-s`` and ``-d`` select devices;
``-D`` shows domain numbers, which lspci shows anyway once any device is
outside domain 0 (always, with a VMD domain). ``-vv`` and ``-vvv`` are refused:
the model does not print their register decodes yet.

Kernel modules: the distributions build ``vmd`` and ``nvme`` as modules and
the port services driver (``pcieport``) into the kernel, so ``-k`` names a
module for the first two only.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from vmdsim.errors import VmdsimError
from vmdsim.kernel.pci import (
    PCI_BRIDGE_MEM_WINDOW,
    PCI_BRIDGE_PREF_MEM_WINDOW,
    pci_name,
    pci_read_config_byte,
)
from vmdsim.kernel.pci.resource import IORESOURCE_MEM_64, IORESOURCE_PREFETCH, IORESOURCE_UNSET

if TYPE_CHECKING:
    from vmdsim.kernel.core import Kernel

VENDORS = {0x8086: "Intel Corporation", 0x1C5C: "SK hynix", 0x15B7: "Sandisk Corp",
           0x144D: "Samsung Electronics Co Ltd", 0x2646: "Kingston Technology Company, Inc."}
DEVICES = {
    (0x8086, 0x2020): "Sky Lake-E DMI3 Registers",
    (0x8086, 0x201D): "Volume Management Device NVMe RAID Controller",
    (0x8086, 0x28C0): "Volume Management Device NVMe RAID Controller",
    (0x8086, 0x467F): "Volume Management Device NVMe RAID Controller",
    (0x8086, 0x4C3D): "Volume Management Device NVMe RAID Controller",
    (0x8086, 0xA77F): "Volume Management Device NVMe RAID Controller Intel Corporation",
    (0x8086, 0x9A0B): "Volume Management Device NVMe RAID Controller",
    (0x8086, 0x2030): "Sky Lake-E PCI Express Root Port A",
    (0x8086, 0x2031): "Sky Lake-E PCI Express Root Port B",
    (0x8086, 0x2032): "Sky Lake-E PCI Express Root Port C",
    (0x8086, 0x2033): "Sky Lake-E PCI Express Root Port D",
    (0x8086, 0x464D): "12th Gen Core Processor PCI Express x4 Controller #0",
    (0x8086, 0xA0B0): "Tiger Lake-LP PCI Express Root Port #9",
    (0x8086, 0x0A54): "NVMe Datacenter SSD [3DNAND, Beta Rock Controller]",
    # drives seen behind client VMDs (pci.ids names)
    (0x1C5C, 0x1959): "Platinum P41/PC801 NVMe Solid State Drive",
    (0x15B7, 0x5009): "WD Blue SN550 NVMe SSD",
    (0x15B7, 0x5006): "WD Black SN750 / PC SN730 / Red SN700 NVMe SSD",
    (0x2646, 0x5013): "KC3000/Renegade NVMe SSD",
}
CLASSES = {
    0x0104: "RAID bus controller",
    0x0108: "Non-Volatile memory controller",
    0x0600: "Host bridge",
    0x0604: "PCI bridge",
}
CAP_NAMES = {0x01: "Power Management", 0x05: "MSI", 0x09: "Vendor Specific Information",
             0x10: "Express", 0x11: "MSI-X"}


MODULES = {"vmd": "vmd", "nvme": "nvme"}  # driver -> loadable module (pcieport: built in)
HEXDUMP_BYTES = {1: 64, 2: 64, 3: 256, 4: 4096}  # -x, -xx, -xxx, -xxxx


class LspciError(VmdsimError):
    """A selector (``-s``, ``-d``) or flag lspci would refuse; the message names it."""


def device_name(vendor: int, device: int, numeric: int = 0) -> str:
    """pciutils' ``format_name_pair``: names, or for an unknown device ``Intel Corporation
    Device 9a04`` (unknown vendor: ``Device 1c5c:1959``); ``numeric`` 1 the IDs only, 2
    (``-nn``) names and IDs (``Device [1c5c:1959]`` when the vendor is unknown)."""
    ids = f"{vendor:04x}:{device:04x}"
    v = VENDORS.get(vendor)
    d = DEVICES.get((vendor, device))
    if numeric == 1:
        return ids
    if numeric:
        return f"{v} {d} [{ids}]" if v and d else f"{v} Device [{ids}]" if v \
            else f"Device [{ids}]"
    return f"{v} {d}" if v and d else f"{v} Device {device:04x}" if v else f"Device {ids}"


def class_name(class24: int) -> str:
    cls = class24 >> 8
    return CLASSES.get(cls, f"Class {cls:04x}")


def all_devices(k: Kernel) -> list[Any]:
    """Every device, by domain then bus then devfn, as lspci sorts them."""
    return k.pci.lspci()


def line(dev: Any, numeric: int = 0) -> str:
    """One device: ``numeric`` 0 names, 1 IDs (``-n``), 2 both (``-nn``)."""
    # pciutils: only a nonzero Revision ID is printed
    rev = f" (rev {dev.revision:02x})" if dev.revision else ""
    cls = dev.class_ >> 8
    ids = f"{dev.vendor:04x}:{dev.device:04x}"
    if numeric == 1:
        return f"{pci_name(dev)} {cls:04x}: {ids}{rev}"
    kind, what = class_name(dev.class_), device_name(dev.vendor, dev.device, min(numeric, 2))
    name = f"{kind} [{cls:04x}]: {what}" if numeric >= 2 else f"{kind}: {what}"
    return f"{pci_name(dev)} {name}{rev}"


def _driver_lines(dev: Any) -> list[str]:
    """The driver bound and the module that provides it (``-k``, and the end of ``-v``)."""
    if dev.driver is None:
        return []
    out = [f"\tKernel driver in use: {dev.driver.name}"]
    if dev.driver.name in MODULES:
        out.append(f"\tKernel modules: {MODULES[dev.driver.name]}")
    return out


def kernel_lines(dev: Any) -> list[str]:
    """``-k``: the subsystem, the driver bound and the module that provides it."""
    out = []
    if dev.subsystem_vendor:
        out.append(f"\tSubsystem: {device_name(dev.subsystem_vendor, dev.subsystem_device)}")
    return out + _driver_lines(dev)


def hexdump(dev: Any, nbytes: int) -> list[str]:
    """``-x``: config space, 16 bytes a line, as the kernel's accessors read it."""
    out = []
    for base in range(0, nbytes, 16):
        row = " ".join(f"{pci_read_config_byte(dev, base + i)[1]:02x}" for i in range(16))
        out.append(f"{base:02x}: {row}" if nbytes <= 256 else f"{base:03x}: {row}")
    return out


def _hex_field(text: str, what: str, limit: int, flag: str, spec: str) -> int | None:
    if text in ("", "*"):
        return None
    try:
        value = int(text, 16)
    except ValueError:
        raise LspciError(f"{flag} {spec}: invalid {what} {text!r}") from None
    if not 0 <= value <= limit:
        raise LspciError(f"{flag} {spec}: invalid {what} {text!r}")
    return value


def slot_filter(spec: str) -> SlotFilter:
    """``-s [[[[<domain>]:]<bus>]:][<slot>][.[<func>]]``: (domain, bus, slot, func)."""
    head, dot, func = spec.partition(".")
    parts = head.split(":")
    if len(parts) > 3:
        raise LspciError(f"-s {spec}: too many ':' (write [[[[domain]:]bus]:][slot][.[func]])")
    while len(parts) < 3:
        parts.insert(0, "")
    return (_hex_field(parts[0], "domain number", 0x7FFFFFFF, "-s", spec),
            _hex_field(parts[1], "bus number", 0xFF, "-s", spec),
            _hex_field(parts[2], "slot number", 0x1F, "-s", spec),
            _hex_field(func, "function number", 7, "-s", spec) if dot else None)


def id_filter(spec: str) -> IdFilter:
    """``-d [<vendor>]:[<device>][:<class>]``: (vendor, device, class)."""
    parts = spec.split(":")
    if len(parts) < 2 or len(parts) > 3:
        raise LspciError(f"-d {spec}: write [vendor]:[device][:class]")
    return (_hex_field(parts[0], "vendor ID", 0xFFFF, "-d", spec),
            _hex_field(parts[1], "device ID", 0xFFFF, "-d", spec),
            _hex_field(parts[2], "class code", 0xFFFF, "-d", spec) if len(parts) == 3
            else None)


SlotFilter = tuple[int | None, int | None, int | None, int | None]
IdFilter = tuple[int | None, int | None, int | None]


def selected(dev: Any, where: SlotFilter | None, which: IdFilter | None) -> bool:
    """``dev`` matches the parsed ``-s`` (``where``) and ``-d`` (``which``) selectors."""
    if where is not None:
        dom, bus, sl, fn = where
        if (dom is not None and dev.bus.domain_nr != dom
                or bus is not None and dev.bus.number != bus
                or sl is not None and dev.devfn >> 3 != sl
                or fn is not None and dev.devfn & 7 != fn):
            return False
    if which is not None:
        ven, did, cls = which
        if (ven is not None and dev.vendor != ven or did is not None and dev.device != did
                or cls is not None and dev.class_ >> 8 != cls):
            return False
    return True


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


def verbose(dev: Any, numeric: int = 0) -> list[str]:
    out = [line(dev, numeric)]
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
    return out + _driver_lines(dev)


def tree(k: Kernel, names: bool = False, numeric: int = 0) -> str:
    """``lspci -t`` as pciutils 3.10+ (2023) prints it: one tree per PCI domain, in
    ascending order (the VMD's 10000 after 0000); a domain with several root buses (one
    per socket) lists them under one root. With ``names`` (``-tv``) and/or ``numeric``
    (``-tn``, ``-tnn``) each device that is not a bridge is named."""
    domains: dict[int, list[Any]] = {}
    for bus in sorted(k.pci.pci_root_buses, key=lambda b: (b.domain_nr, b.number)):
        domains.setdefault(bus.domain_nr, []).append(bus)
    out: list[str] = []
    for roots in domains.values():
        for n, bus in enumerate(roots):
            label = f"[{bus.domain_nr:04x}:{bus.number:02x}]-"
            if len(roots) == 1:
                lead, cont = "-", " "
            else:
                lead = "-+-" if n == 0 else (" \\-" if n == len(roots) - 1 else " +-")
                cont = "   " if n == len(roots) - 1 else " | "
            body = _bus_lines(bus, names, numeric)
            out.append(lead + label + body[0])
            out.extend(cont + " " * (len(label) + len(lead) - len(cont)) + b for b in body[1:])
    return "\n".join(out)


def _tree_name(dev: Any, names: bool, numeric: int) -> str:
    """What ``-tv`` prints after a device that is not a bridge (pciutils names no bridge):
    its name, its IDs (``-tvn``), or both (``-tvnn``); nothing without ``-v``."""
    if not names:
        return ""
    return f"  {device_name(dev.vendor, dev.device, min(numeric, 2))}"


def _bus_lines(bus: Any, names: bool = False, numeric: int = 0) -> list[str]:
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
            end = sub.busn_res.end if sub.busn_res is not None else sub.number
            text += (f"-[{sub.number:02x}]" if end == sub.number
                     else f"-[{sub.number:02x}-{end:02x}]")
            if sub.devices:
                child = _bus_lines(sub, names, numeric)
                text += "--"
                pad = ("  " if only or last else "| ") + " " * (len(text) - 2)
                rest = [pad + c for c in child[1:]]
                text += child[0]
            else:
                text += "--"
        else:
            text += _tree_name(dev, names, numeric)
        lines.append(text)
        lines.extend(rest)
    return lines


def check_flags(*, as_tree: bool = False, verbose_: int = 0, hexdump_: int = 0,
                slot: str | None = None, ids: str | None = None
                ) -> tuple[SlotFilter | None, IdFilter | None]:
    """Refuse what lspci would, or what the model does not print, before anything runs;
    the ``-s`` and ``-d`` selectors, parsed."""
    if verbose_ > 1:
        raise LspciError(f"-{'v' * verbose_}: the model prints -v's detail only; the "
                         "register decodes of -vv and -vvv are not modelled yet")
    if hexdump_ > 4:
        raise LspciError(f"-{'x' * hexdump_}: lspci dumps at most 4096 bytes (-xxxx)")
    if as_tree and (slot is not None or ids is not None):
        raise LspciError("-t with -s or -d: the model prints whole trees only")
    return (slot_filter(slot) if slot is not None else None,
            id_filter(ids) if ids is not None else None)


def lspci(k: Kernel, *, as_tree: bool = False, verbose_: int = 0, numeric: int = 0,
          kernel: bool = False, hexdump_: int = 0, slot: str | None = None,
          ids: str | None = None) -> str:
    """What ``lspci`` prints with these flags (``verbose_``: the number of ``-v``,
    ``numeric``: of ``-n``, ``hexdump_``: of ``-x``; ``slot``/``ids``: ``-s``/``-d``)."""
    where, which = check_flags(as_tree=as_tree, verbose_=verbose_, hexdump_=hexdump_,
                               slot=slot, ids=ids)
    devs = [d for d in all_devices(k) if selected(d, where, which)]
    if as_tree:
        return tree(k, bool(verbose_), numeric)
    blocks = []
    for d in devs:
        lines = verbose(d, numeric) if verbose_ else [line(d, numeric)]
        if kernel and not verbose_:
            lines += kernel_lines(d)
        if hexdump_:
            lines += hexdump(d, HEXDUMP_BYTES[hexdump_])
        blocks.append(lines)
    # -v and -x end each device with a blank line (the caller ends the last one)
    return ("\n\n" if verbose_ or hexdump_ else "\n").join("\n".join(b) for b in blocks)
