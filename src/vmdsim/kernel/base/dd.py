"""Binding devices to drivers (``drivers/base/dd.c``), for any bus.

A :class:`bus_type` is static, as in Linux: the bus's own callbacks, ``match``
(Linux ``bus->match``: what matched, such as a device ID, or a false value),
``probe`` and ``remove`` (``bus->probe``/``bus->remove``, which call the
driver's; ``remove`` is only the driver's unless a bus says otherwise), and
four model hooks for what each bus does around a binding (the PCI core logs it
and keeps the driver's device list; the PCIe port bus clears the service's data).

``really_probe`` binds or, when the probe fails, undoes the binding and
releases what the driver managed (devres), as Linux does; the PCI core
(``kernel/pci/driver.py``) and the PCIe port bus (``drivers/pcieport/bus.py``)
both bind through it.

The lists of a bus's devices and drivers (Linux: ``bus->p->klist_devices`` and
``klist_drivers``, in the order they were added, which is the order they bind in)
belong to each kernel; they are passed to the functions that walk them.

Simplifications: no deferred probing, no asynchronous probing, no ``struct
device_driver`` (the bus's driver structure is used directly), and the bus is
passed explicitly instead of found through ``dev->bus``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from vmdsim.kernel.base.core import KOBJ_BIND, device, kobject_uevent
from vmdsim.kernel.base.devres import devres_release_all


def _nothing(dev: Any, drv: Any, *rc: int) -> None:
    return None


def driver_remove(dev: Any, drv: Any) -> None:
    """The bus's remove when all it does is the driver's: ``drv.remove(dev)``, if it has one."""
    if drv.remove is not None:
        drv.remove(dev)


@dataclass(eq=False)
class bus_type:
    """``struct bus_type``: ``match(dev, drv)``, ``probe(dev, drv, id)``, ``remove(dev, drv)``;
    ``dev_of(dev)`` is the bus device's embedded ``struct device``."""

    name: str
    match: Callable[[Any, Any], Any]
    probe: Callable[[Any, Any, Any], int]
    dev_of: Callable[[Any], device]
    remove: Callable[[Any, Any], None] = driver_remove
    bound: Callable[[Any, Any], None] = _nothing  # after a probe succeeded
    probe_failed: Callable[[Any, Any, int], None] = _nothing
    unbinding: Callable[[Any, Any], None] = _nothing  # after remove, before devres goes
    unbound: Callable[[Any, Any], None] = _nothing  # at the end of an unbind

    def __repr__(self) -> str:
        return f"<bus_type {self.name}>"


def release_driver_resources(bus: bus_type, dev: Any) -> None:
    """What the core undoes when a driver lets go: its managed resources, its data."""
    d = bus.dev_of(dev)
    devres_release_all(d)
    d.driver_data = None


def really_probe(bus: bus_type, dev: Any, drv: Any, id: Any) -> int:
    """Bind ``drv`` to ``dev`` through the bus's probe; 0, or the probe's -errno after
    everything the binding set up is undone."""
    dev.driver = drv
    try:
        rc = bus.probe(dev, drv, id)
    except BaseException:
        dev.driver = None  # the exception (a model bug or a KASAN report) goes on up
        raise
    if rc == 0:
        bus.bound(dev, drv)
        kobject_uevent(bus.dev_of(dev), KOBJ_BIND)  # driver_bound()
        return 0
    dev.driver = None
    release_driver_resources(bus, dev)
    bus.probe_failed(dev, drv, rc)
    return rc


def __device_attach(bus: bus_type, drivers: list[Any], dev: Any) -> bool:
    """Bind the first of the bus's ``drivers`` that matches and probes successfully."""
    if dev.driver is not None:
        return True
    for drv in list(drivers):
        id = bus.match(dev, drv)
        if id and really_probe(bus, dev, drv, id) == 0:
            return True
    return False


def __driver_attach(bus: bus_type, devices: list[Any], drv: Any) -> None:
    """Bind ``drv`` to every unbound one of the bus's ``devices`` it matches, in order."""
    for dev in list(devices):
        if dev.driver is not None:
            continue
        id = bus.match(dev, drv)
        if id:
            really_probe(bus, dev, drv, id)


def __device_release_driver(bus: bus_type, dev: Any) -> None:
    """Unbind: the bus's remove (the driver's), then the managed resources go."""
    drv = dev.driver
    if drv is None:
        return
    bus.remove(dev, drv)
    dev.driver = None
    bus.unbinding(dev, drv)
    release_driver_resources(bus, dev)
    bus.unbound(dev, drv)
