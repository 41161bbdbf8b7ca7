"""Removing devices and buses (``drivers/pci/remove.c``).

Stopping unbinds drivers (children before their bridge, last device on a bus
first); removing then takes each device off its bus and the device list,
releases its resources from the resource tree, and frees it and its buses.
After ``pci_stop_root_bus`` + ``pci_remove_root_bus`` nothing the PCI core
allocated for that hierarchy is left in ``k.mem``.
"""

from __future__ import annotations

from vmdsim.kernel.pci.driver import device_del, device_release_driver
from vmdsim.kernel.pci.pci_h import (
    PciError,
    pci_bus,
    pci_dev,
    pci_is_root_bus,
    to_pci_host_bridge,
)
from vmdsim.kernel.pci.probe import (
    pci_bus_release_busn_res,
    pci_lock_rescan_remove,
    pci_release_bus,
    pci_release_dev,
    pci_unlock_rescan_remove,
)
from vmdsim.kernel.pci.resource import release_resource
from vmdsim.kernel.rwsem import down_write, up_write


def pci_free_resources(dev: pci_dev) -> None:
    for r in dev.resource:
        if r.parent is not None:
            release_resource(r)


def pci_stop_dev(dev: pci_dev) -> None:
    if dev.is_added:
        device_release_driver(dev)
        dev.is_added = False


def pci_destroy_dev(dev: pci_dev) -> None:
    device_del(dev)
    sem = dev.k.pci.pci_bus_sem
    down_write(sem)
    dev.bus.devices.remove(dev)
    up_write(sem)
    pci_free_resources(dev)
    pci_release_dev(dev)


def pci_remove_bus(bus: pci_bus) -> None:
    """Take an (empty) bus out of the hierarchy and free it."""
    if bus.devices:
        raise PciError(f"pci_remove_bus({bus!r}): devices are still on it: {bus.devices!r}")
    k = bus.k
    if bus.parent is not None:
        bus.parent.children.remove(bus)
    else:
        k.pci.pci_root_buses.remove(bus)
    pci_bus_release_busn_res(bus)
    if bus.ops is not None and bus.ops.remove_bus is not None:
        bus.ops.remove_bus(bus)
    pci_release_bus(bus)


def pci_stop_bus_device(dev: pci_dev) -> None:
    bus = dev.subordinate
    if bus is not None:
        for child in reversed(list(bus.devices)):
            pci_stop_bus_device(child)
    pci_stop_dev(dev)


def pci_remove_bus_device(dev: pci_dev) -> None:
    bus = dev.subordinate
    if bus is not None:
        for child in list(bus.devices):
            pci_remove_bus_device(child)
        pci_remove_bus(bus)
        dev.subordinate = None
    pci_destroy_dev(dev)


def pci_stop_and_remove_bus_device(dev: pci_dev) -> None:
    """Unbind ``dev`` and everything below it, then remove and free them."""
    pci_stop_bus_device(dev)
    pci_remove_bus_device(dev)


def pci_stop_and_remove_bus_device_locked(dev: pci_dev) -> None:
    """``pci_stop_and_remove_bus_device`` under ``pci_lock_rescan_remove``."""
    k = dev.k
    pci_lock_rescan_remove(k)
    pci_stop_and_remove_bus_device(dev)
    pci_unlock_rescan_remove(k)


def pci_stop_root_bus(bus: pci_bus) -> None:
    """Unbind every driver below a root bus (last device first)."""
    if not pci_is_root_bus(bus):
        return
    for child in reversed(list(bus.devices)):
        pci_stop_bus_device(child)


def pci_remove_root_bus(bus: pci_bus) -> None:
    """Remove and free everything below a root bus, the bus and its host bridge."""
    if not pci_is_root_bus(bus):
        return
    host_bridge = to_pci_host_bridge(bus.bridge)
    for child in list(bus.devices):
        pci_remove_bus_device(child)
    pci_remove_bus(bus)
    host_bridge.bus = None
    if host_bridge.release_fn is not None:
        host_bridge.release_fn(host_bridge)
    host_bridge.windows.clear()
    host_bridge.k.mem.kfree(host_bridge)
