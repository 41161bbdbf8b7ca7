"""The PCI driver model (``drivers/pci/pci-driver.c``): ``pci_bus_type``'s callbacks
on the driver core's binding (``kernel/base/dd.py``, Linux's ``drivers/base/dd.c``).

A ``pci_driver`` names the devices it handles in an ``id_table`` of
``pci_device_id`` entries (vendor/device/subsystem IDs, ``PCI_ANY_ID``
wildcards, and a class with a mask). Registering a driver binds it to every
matching device already added, in the order the devices were added (scan
order); adding a device binds the first registered driver that matches and
whose ``probe`` succeeds. ``probe(dev, id)`` returns 0 or a negative errno; on
failure the device stays unbound, its driver data is cleared and every
managed (devm/pcim) resource is released, and the next matching driver gets
its turn, as ``really_probe`` does. Unbinding calls ``remove`` and then
releases the managed resources.

``suspend``/``resume`` stand in for the driver's ``dev_pm_ops`` system-sleep
callbacks and take the ``pci_dev``.

Simplifications: no dynamic IDs, ``driver_override``, deferred or
asynchronous probing, device locks or runtime PM.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

from vmdsim.kernel.base.dd import (
    __device_attach,
    __device_release_driver,
    __driver_attach,
    bus_type,
    release_driver_resources,
)
from vmdsim.kernel.errno import EBUSY, ENODEV, ENXIO
from vmdsim.kernel.pci.pci_h import (
    PCI_ANY_ID,
    PCI_D0,
    PCI_UNKNOWN,
    PciError,
    pci_dev,
    pci_name,
)
from vmdsim.kernel.pci.subsys import pci_err, pci_warn
from vmdsim.kernel.printk import pr_err

if TYPE_CHECKING:
    from vmdsim.kernel.core import Kernel


@dataclass(frozen=True)
class pci_device_id:
    """``struct pci_device_id``. Unlike a zero-filled C initializer, omitted IDs default
    to ``PCI_ANY_ID`` (what ``PCI_DEVICE()`` gives), and class matching is off unless a
    ``class_mask`` is set."""

    vendor: int = PCI_ANY_ID
    device: int = PCI_ANY_ID
    subvendor: int = PCI_ANY_ID
    subdevice: int = PCI_ANY_ID
    class_: int = 0
    class_mask: int = 0
    driver_data: Any = 0


def PCI_DEVICE(vendor: int, device: int, driver_data: Any = 0) -> pci_device_id:
    return pci_device_id(vendor, device, driver_data=driver_data)


PCI_VDEVICE = PCI_DEVICE


def PCI_DEVICE_CLASS(dev_class: int, dev_class_mask: int, driver_data: Any = 0) -> pci_device_id:
    return pci_device_id(class_=dev_class, class_mask=dev_class_mask, driver_data=driver_data)


ProbeFn = Callable[["pci_dev", pci_device_id], int]
DevFn = Callable[["pci_dev"], Any]


class pci_driver:
    """``struct pci_driver``."""

    def __init__(self, name: str, id_table: Sequence[pci_device_id], *,
                 probe: ProbeFn | None = None, remove: DevFn | None = None,
                 shutdown: DevFn | None = None, suspend: DevFn | None = None,
                 resume: DevFn | None = None, err_handler: Any = None) -> None:
        self.name = name
        self.id_table = list(id_table)
        self.probe = probe
        self.remove = remove
        self.shutdown = shutdown
        self.suspend = suspend
        self.resume = resume
        self.err_handler = err_handler
        self.devices: list[pci_dev] = []  # bound devices, in binding order
        self.k: Kernel | None = None  # the kernel it is registered with (None: none)
        # driver.owner: the module that registered it (a driver's own module object)
        self.owner: object = None

    def __repr__(self) -> str:
        return f"<pci_driver {self.name}>"


# -- matching ----------------------------------------------------------------------------
def pci_match_one_device(id: pci_device_id, dev: pci_dev) -> pci_device_id | None:
    if ((id.vendor == PCI_ANY_ID or id.vendor == dev.vendor)
            and (id.device == PCI_ANY_ID or id.device == dev.device)
            and (id.subvendor == PCI_ANY_ID or id.subvendor == dev.subsystem_vendor)
            and (id.subdevice == PCI_ANY_ID or id.subdevice == dev.subsystem_device)
            and not (id.class_ ^ dev.class_) & id.class_mask):
        return id
    return None


def _is_terminator(id: pci_device_id) -> bool:
    return id.vendor == 0 and id.subvendor == 0 and id.class_mask == 0


def pci_match_id(ids: Sequence[pci_device_id], dev: pci_dev) -> pci_device_id | None:
    """The first entry of ``ids`` matching ``dev`` (an all-zero entry ends the table)."""
    for id in ids:
        if _is_terminator(id):
            break
        if pci_match_one_device(id, dev) is not None:
            return id
    return None


def pci_match_device(drv: pci_driver, dev: pci_dev) -> pci_device_id | None:
    if not dev.match_driver:
        return None
    return pci_match_id(drv.id_table, dev)


# -- binding (pci-driver.c's bus callbacks; the core's part is kernel/base/dd.py) --------
def _pci_bus_match(dev: pci_dev, drv: pci_driver) -> pci_device_id | None:
    return pci_match_device(drv, dev)


def _pci_device_probe(dev: pci_dev, drv: pci_driver, id: pci_device_id) -> int:
    """``pci_device_probe``: the driver's probe; a positive return is a driver bug."""
    rc = drv.probe(dev, id) if drv.probe is not None else 0
    if rc is None:
        dev.driver = None
        release_driver_resources(pci_bus_type, dev)
        raise PciError(f"{drv.name}: probe of {pci_name(dev)} returned None; a probe returns "
                       "0 or a negative errno")
    if rc > 0:
        pci_warn(dev, f"Driver probe function unexpectedly returned {rc}")
        rc = 0
    return int(rc)


def _pci_bound(dev: pci_dev, drv: pci_driver) -> None:
    drv.devices.append(dev)  # driver_bound(): Linux logs it at debug level only


def _pci_probe_failed(dev: pci_dev, drv: pci_driver, rc: int) -> None:
    """``__driver_probe_device``'s report, with the driver already let go (so the line
    is the bus's, ``pci ...``); a probe that rejects the match (-ENODEV, -ENXIO) is a
    debug message, not logged."""
    if rc not in (-ENODEV, -ENXIO):
        pci_err(dev, f"probe with driver {drv.name} failed with error {rc}")


def _pci_unbinding(dev: pci_dev, drv: pci_driver) -> None:
    if dev.current_state == PCI_D0:
        dev.current_state = PCI_UNKNOWN


def _pci_unbound(dev: pci_dev, drv: pci_driver) -> None:
    drv.devices.remove(dev)  # Linux logs an unbind at debug level only


pci_bus_type = bus_type("pci", match=_pci_bus_match, probe=_pci_device_probe,
                        dev_of=lambda dev: dev.dev,
                        bound=_pci_bound, probe_failed=_pci_probe_failed,
                        unbinding=_pci_unbinding, unbound=_pci_unbound)


def device_attach(dev: pci_dev) -> int:
    """Bind the first registered driver that matches and probes successfully; 1 if bound."""
    return int(__device_attach(pci_bus_type, dev.k.pci.drivers, dev))


def driver_attach(drv: pci_driver) -> None:
    """Bind ``drv`` to every unbound matching device, in the order they were added."""
    __driver_attach(pci_bus_type, cast("Kernel", drv.k).pci.devices, drv)  # drv is registered


def device_release_driver(dev: pci_dev) -> None:
    """Unbind: the driver's ``remove``, then its managed resources are released."""
    __device_release_driver(pci_bus_type, dev)


def pci_register_driver(k: Kernel, drv: pci_driver) -> int:
    """Register ``drv`` with kernel ``k`` and bind it to matching devices; 0 or -EBUSY."""
    sub = k.pci
    if drv in sub.drivers:
        pr_err(k, f"Error: Driver '{drv.name}' is already registered, aborting...")
        return -EBUSY
    if drv.k is not None and drv.k is not k:
        raise PciError(f"pci_register_driver: driver {drv.name!r} is registered with another "
                       "kernel")
    drv.k = k
    sub.drivers.append(drv)
    driver_attach(drv)
    return 0


def pci_unregister_driver(k: Kernel, drv: pci_driver) -> None:
    """Unbind ``drv`` from its devices (last bound first) and forget it."""
    sub = k.pci
    if drv not in sub.drivers:
        raise PciError(f"pci_unregister_driver: driver {drv.name!r} is not registered")
    while drv.devices:
        device_release_driver(drv.devices[-1])
    sub.drivers.remove(drv)
    drv.k = None


# -- the bus type's device list -------------------------------------------------------
def device_add(dev: pci_dev) -> None:
    dev.k.pci.devices.append(dev)


def device_del(dev: pci_dev) -> None:
    device_release_driver(dev)
    dev.k.pci.devices.remove(dev)


def device_shutdown(k: Kernel) -> None:
    """Call every bound driver's ``shutdown``, last-added device first."""
    for dev in reversed(list(k.pci.devices)):
        drv = dev.driver
        if drv is not None and drv.shutdown is not None:
            drv.shutdown(dev)


def dpm_suspend(k: Kernel) -> int:
    """System sleep: ``suspend`` for every bound device, children (added later) first."""
    for dev in reversed(list(k.pci.devices)):
        drv = dev.driver
        if drv is not None and drv.suspend is not None:
            err = drv.suspend(dev)
            if err:
                return err
    return 0


def dpm_resume(k: Kernel) -> int:
    """Resume from sleep: ``resume`` for every bound device, parents first."""
    for dev in list(k.pci.devices):
        drv = dev.driver
        if drv is not None and drv.resume is not None:
            err = drv.resume(dev)
            if err:
                return err
    return 0
