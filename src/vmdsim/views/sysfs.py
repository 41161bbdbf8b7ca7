"""``/sys/bus/pci``: the devices' links, the drivers bound, and the VMD's ``domain`` link.

Paths follow Linux's device hierarchy (``drivers/pci/probe.c``): a PCI
device's parent is the bridge above it, or the host bridge ``pci<DDDD>:<BB>``
for a root bus; a VMD's host bridge (``pci10000:00``) sits under the VMD's own
device. A bus is a class device under its bridge (``.../pci_bus/<DDDD>:<BB>``),
which is where the VMD driver's ``domain`` link points: user space (mdadm,
for VROC) follows it to tell which disks sit behind which VMD. The listing is
``ls -l``'s ``NAME -> TARGET`` part of each link, relative as sysfs makes them.

Where the model simplifies: only the links are shown (no attribute files, no
``bind``/``unbind``); the host bridge of domain 0 is ``pci0000:00`` at
``/sys/devices``, as on x86 with one root bus.
"""

from __future__ import annotations

import posixpath
from typing import TYPE_CHECKING, Any

from vmdsim.kernel.pci import pci_name

if TYPE_CHECKING:
    from vmdsim.kernel.core import Kernel


def _host_bridge_path(bus: Any) -> str:
    """The sysfs path of a root bus's host bridge (``/sys/devices/pci0000:00``)."""
    name = f"pci{bus.domain_nr:04x}:{bus.number:02x}"
    parent = bus.k.pci.find_pci_dev(bus.bridge.dev.parent)  # a VMD's host bridge hangs
    if parent is not None:                                 # under the VMD's device
        return f"{device_path(parent)}/{name}"
    return f"/sys/devices/{name}"


def device_path(dev: Any) -> str:
    """Where a PCI device lives under ``/sys/devices``."""
    bridge = dev.bus.self
    above = device_path(bridge) if bridge is not None else _host_bridge_path(_root(dev.bus))
    return f"{above}/{pci_name(dev)}"


def bus_path(bus: Any) -> str:
    """A bus's class device: under its bridge (or host bridge), in ``pci_bus/``."""
    above = device_path(bus.self) if bus.self is not None else _host_bridge_path(bus)
    return f"{above}/pci_bus/{bus.domain_nr:04x}:{bus.number:02x}"


def _root(bus: Any) -> Any:
    while bus.parent is not None:
        bus = bus.parent
    return bus


def _link(where: str, target: str) -> str:
    return posixpath.relpath(target, where)


def sysfs(k: Kernel) -> str:
    """``ls -l`` of ``/sys/bus/pci/devices``, of each driver's directory, and the links each
    bound VMD made."""
    devs = k.pci.lspci()
    out = ["/sys/bus/pci/devices:"]
    out += [f"{pci_name(d)} -> {_link('/sys/bus/pci/devices', device_path(d))}" for d in devs]
    for drv in sorted({d.driver.name for d in devs if d.driver is not None}):
        where = f"/sys/bus/pci/drivers/{drv}"
        out += ["", f"{where}:"]
        out += [f"{pci_name(d)} -> {_link(where, device_path(d))}"
                for d in devs if d.driver is not None and d.driver.name == drv]
    for d in devs:
        target = d.dev.links.get("domain")
        if target is None:
            continue
        bus = next((b for b in _buses(k) if b.dev is target), None)
        if bus is None:
            continue
        here = device_path(d)
        out += ["", f"{here}/domain -> {_link(here, bus_path(bus))}"]
    return "\n".join(out)


def _buses(k: Kernel) -> list[Any]:
    found: list[Any] = []

    def walk(bus: Any) -> None:
        found.append(bus)
        for child in bus.children:
            walk(child)

    for root in k.pci.pci_root_buses:
        walk(root)
    return found
