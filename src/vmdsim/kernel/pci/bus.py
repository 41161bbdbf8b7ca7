"""Bus-level helpers (``drivers/pci/bus.c``, ``drivers/pci/host-bridge.c``).

Resource lists handed to ``pci_create_root_bus``, the resources a bus
forwards, allocation of a device resource from its bus's windows, CPU/bus
address translation through the host bridge's window offsets, adding devices
(which lets drivers bind), and ``pci_walk_bus``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from vmdsim.kernel.errno import ENOMEM, EPROBE_DEFER
from vmdsim.kernel.pci.driver import device_attach
from vmdsim.kernel.pci.pci_h import (
    pci_bus,
    pci_bus_for_each_resource,
    pci_dev,
    pci_dev_is_added,
    pci_find_host_bridge,
    resource_entry,
)
from vmdsim.kernel.pci.resource import (
    IORESOURCE_DISABLED,
    IORESOURCE_MEM_64,
    IORESOURCE_PREFETCH,
    IORESOURCE_TYPE_BITS,
    IORESOURCE_UNSET,
    RESOURCE_MAX,
    AlignF,
    allocate_resource,
    resource,
    resource_contains,
    resource_type,
)
from vmdsim.kernel.pci.subsys import pci_warn
from vmdsim.kernel.rwsem import down_read, up_read

# Bus-address regions an allocation may be clipped to (drivers/pci/bus.c)
PCI_32_BIT = (0, 0xFFFFFFFF)
PCI_64_BIT = (0, RESOURCE_MAX)
PCI_HIGH = (1 << 32, RESOURCE_MAX)


# -- resource lists -------------------------------------------------------------------
def pci_add_resource_offset(resources: list[resource_entry], res: resource, offset: int) -> None:
    resources.append(resource_entry(res, offset))


def pci_add_resource(resources: list[resource_entry], res: resource) -> None:
    pci_add_resource_offset(resources, res, 0)


def pci_free_resource_list(resources: list[resource_entry]) -> None:
    resources.clear()


def pci_bus_add_resource(bus: pci_bus, res: resource) -> None:
    bus.resources.append(res)


def pci_bus_remove_resources(bus: pci_bus) -> None:
    for i in range(len(bus.resource)):
        bus.resource[i] = None
    bus.resources.clear()


# -- CPU <-> bus addresses --------------------------------------------------------------
def pcibios_resource_to_bus(bus: pci_bus, res: resource) -> tuple[int, int]:
    """The bus-address region of a CPU-address resource (offset of the window holding it)."""
    bridge = pci_find_host_bridge(bus)
    offset = 0
    for window in bridge.windows:
        if resource_contains(window.res, res):
            offset = window.offset
            break
    return res.start - offset, res.end - offset


def pcibios_bus_to_resource(bus: pci_bus, res: resource, region: tuple[int, int]) -> None:
    """Set ``res`` to the CPU addresses of the bus-address ``region``."""
    bridge = pci_find_host_bridge(bus)
    offset = 0
    for window in bridge.windows:
        if resource_type(res) != resource_type(window.res):
            continue
        bstart = window.res.start - window.offset
        bend = window.res.end - window.offset
        if bstart <= region[0] and region[1] <= bend:
            offset = window.offset
            break
    res.start = region[0] + offset
    res.end = region[1] + offset


def _clip_to_region(bus: pci_bus, r: resource, region: tuple[int, int]) -> tuple[int, int]:
    bstart, bend = pcibios_resource_to_bus(bus, r)
    offset = r.start - bstart
    bstart = max(bstart, region[0])
    bend = min(bend, region[1])
    if bend < bstart:
        return r.start, r.start - 1
    return bstart + offset, bend + offset


def pci_bus_alloc_from_region(bus: pci_bus, res: resource, size: int, align: int, min_: int,
                              type_mask: int, alignf: AlignF | None, alignf_data: Any,
                              region: tuple[int, int]) -> int:
    type_mask |= IORESOURCE_TYPE_BITS
    for r in pci_bus_for_each_resource(bus):
        min_used = min_
        if r.flags & (IORESOURCE_DISABLED | IORESOURCE_UNSET):
            continue  # a window with no address (yet) holds nothing
        if (res.flags ^ r.flags) & type_mask:
            continue
        # A non-prefetchable resource cannot live in a prefetchable window.
        if r.flags & IORESOURCE_PREFETCH and not res.flags & IORESOURCE_PREFETCH:
            continue
        start, end = _clip_to_region(bus, r, region)
        if start:
            min_used = start
        if size > end - min_used + 1:
            continue
        if allocate_resource(r, res, size, min_used, end, align, alignf, alignf_data) == 0:
            return 0
    return -ENOMEM


def pci_bus_alloc_resource(bus: pci_bus, res: resource, size: int, align: int, min_: int,
                           type_mask: int, alignf: AlignF | None, alignf_data: Any) -> int:
    """Allocate ``res`` from ``bus``'s windows; 64-bit resources try above 4 GiB first."""
    if res.flags & IORESOURCE_MEM_64:
        if pci_bus_alloc_from_region(bus, res, size, align, min_, type_mask, alignf,
                                     alignf_data, PCI_HIGH) == 0:
            return 0
        return pci_bus_alloc_from_region(bus, res, size, align, min_, type_mask, alignf,
                                         alignf_data, PCI_64_BIT)
    return pci_bus_alloc_from_region(bus, res, size, align, min_, type_mask, alignf,
                                     alignf_data, PCI_32_BIT)


# -- adding devices ---------------------------------------------------------------------
def pci_bus_add_device(dev: pci_dev) -> None:
    """Make ``dev`` visible to drivers and bind one if a registered driver matches."""
    dev.match_driver = True
    retval = device_attach(dev)
    if retval < 0 and retval != -EPROBE_DEFER:
        pci_warn(dev, f"device attach failed ({retval})")
    dev.is_added = True


def pci_bus_add_devices(bus: pci_bus) -> None:
    """Add every not-yet-added device on ``bus``, then recurse into the buses below."""
    for dev in list(bus.devices):
        if pci_dev_is_added(dev):
            continue
        pci_bus_add_device(dev)
    for dev in list(bus.devices):
        if not pci_dev_is_added(dev):
            continue
        if dev.subordinate is not None:
            pci_bus_add_devices(dev.subordinate)


def pci_walk_bus(top: pci_bus, cb: Callable[[pci_dev, Any], int], userdata: Any = None) -> None:
    """Call ``cb(dev, userdata)`` for each device below ``top``, depth first, a bridge
    before its children; stop at the first non-zero return. Holds ``pci_bus_sem`` for
    reading throughout."""
    sem = top.k.pci.pci_bus_sem
    down_read(sem)
    try:
        _walk(top, cb, userdata)
    finally:
        up_read(sem)


def _walk(bus: pci_bus, cb: Callable[[pci_dev, Any], int], userdata: Any) -> int:
    for dev in list(bus.devices):
        sub = dev.subordinate
        ret = cb(dev, userdata)
        if ret:
            return ret
        if sub is not None:
            ret = _walk(sub, cb, userdata)
            if ret:
                return ret
    return 0
