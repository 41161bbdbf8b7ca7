"""The PCI Express port bus: service devices and service drivers (``drivers/pci/pcie/``).

What ``portdrv.h`` declares and ``portdrv.c`` implements for the service drivers: the
``PCIE_PORT_SERVICE_*`` bits, ``struct pcie_device`` (one service of one port, named
``<port>:pcie<service mask, %03x>``), ``struct pcie_port_service_driver``, and the
``pci_express`` bus that matches the two (``pcie_port_bus_type``) and binds them
(``pcie_port_service_register``). The service drivers (``aer``, ``pcie_pme``,
``pciehp``) are written against this module; the ``pcieport`` PCI driver that creates
the service devices is :mod:`~vmdsim.drivers.pcieport.portdrv`.

Where the model simplifies: the port bus is a plain list of service devices and
drivers (no sysfs, no reference counts); :func:`pcie_port_bus_of(k) <pcie_port_bus_of>`
also holds the ``pcie_ports=`` options and the services' deferred work.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from vmdsim.kernel.base.core import device
from vmdsim.kernel.base.dd import (
    __device_attach,
    __device_release_driver,
    __driver_attach,
    bus_type,
)
from vmdsim.kernel.errno import EBUSY, ENODEV
from vmdsim.kernel.pci import pci_driver, pci_name, pci_pcie_type
from vmdsim.kernel.shared import KObject

if TYPE_CHECKING:
    from vmdsim.kernel.core import Kernel

# Service bits (drivers/pci/pcie/portdrv.h)
PCIE_PORT_SERVICE_PME_SHIFT = 0
PCIE_PORT_SERVICE_PME = 1 << PCIE_PORT_SERVICE_PME_SHIFT
PCIE_PORT_SERVICE_AER_SHIFT = 1
PCIE_PORT_SERVICE_AER = 1 << PCIE_PORT_SERVICE_AER_SHIFT
PCIE_PORT_SERVICE_HP_SHIFT = 2
PCIE_PORT_SERVICE_HP = 1 << PCIE_PORT_SERVICE_HP_SHIFT
PCIE_PORT_SERVICE_DPC_SHIFT = 3
PCIE_PORT_SERVICE_DPC = 1 << PCIE_PORT_SERVICE_DPC_SHIFT
PCIE_PORT_SERVICE_BWCTRL_SHIFT = 4
PCIE_PORT_SERVICE_BWCTRL = 1 << PCIE_PORT_SERVICE_BWCTRL_SHIFT
PCIE_PORT_DEVICE_MAXSERVICES = 5
PCIE_ANY_PORT = 0xFFFFFFFF

SERVICE_NAMES = {PCIE_PORT_SERVICE_PME: "pme", PCIE_PORT_SERVICE_AER: "aer",
                 PCIE_PORT_SERVICE_HP: "pciehp", PCIE_PORT_SERVICE_DPC: "dpc",
                 PCIE_PORT_SERVICE_BWCTRL: "bwctrl"}


class pcie_device(KObject):
    """``struct pcie_device``: one service of one port, a device on the port bus."""

    def __init__(self, k: Kernel, port: Any, service: int, irq: int) -> None:
        self.k = k
        self.port = port
        self.irq = irq
        self.service = service
        self.priv_data: Any = None
        self.driver: pcie_port_service_driver | None = None
        name = f"{pci_name(port)}:pcie{service:03x}"
        self.device = device(k, name, port.dev)

    @property
    def name(self) -> str:
        return self.device.init_name

    def __repr__(self) -> str:
        return f"<pcie_device {self.name}>"


def get_service_data(dev: pcie_device) -> Any:
    return dev.priv_data


def set_service_data(dev: pcie_device, data: Any) -> None:
    dev.priv_data = data


ServiceProbe = Callable[[pcie_device], int]
ServiceRemove = Callable[[pcie_device], None]


class pcie_port_service_driver:
    """``struct pcie_port_service_driver``."""

    def __init__(self, name: str, service: int, *, port_type: int = PCIE_ANY_PORT,
                 probe: ServiceProbe | None = None, remove: ServiceRemove | None = None) -> None:
        self.name = name
        self.service = service
        self.port_type = port_type
        self.probe = probe
        self.remove = remove

    def __repr__(self) -> str:
        return f"<pcie_port_service_driver {self.name}>"


class pcie_port_bus:
    """``pcie_port_bus_of(k)``: the ``pci_express`` bus (its devices and drivers), the
    ``pcie_ports=`` options, and the port services' deferred work."""

    def __init__(self, k: Kernel) -> None:
        self.k = k
        self.drivers: list[pcie_port_service_driver] = []
        self.devices: list[pcie_device] = []
        self.native = False  # pcie_ports=native: ignore what firmware granted
        self.disabled = False  # pcie_ports=compat: no port services at all
        self.portdriver: pci_driver | None = None
        self.hotplug_slots: list[Any] = []  # pciehp controllers (pci_hp_add)
        self.wq = k.system_wq

    def services_of(self, port: Any) -> list[pcie_device]:
        return [d for d in self.devices if d.port is port]


def pcie_port_bus_of(k: Kernel) -> pcie_port_bus:
    """The ``pci_express`` bus of ``k`` (portdrv's statics), made on first use."""
    return k.module_state(pcie_port_bus)


# -- the port bus: matching and binding (portdrv.c: pcie_port_bus_type) --------------------
def pcie_port_bus_match(dev: pcie_device, drv: pcie_port_service_driver) -> bool:
    if drv.service != dev.service:
        return False
    return drv.port_type in (PCIE_ANY_PORT, pci_pcie_type(dev.port))


def pcie_port_probe_service(dev: pcie_device, drv: pcie_port_service_driver, id: Any) -> int:
    """The bus's probe: the service driver's (a driver without one cannot bind)."""
    if drv.probe is None:
        return -ENODEV
    return drv.probe(dev)


def _clear_service_data(dev: pcie_device, drv: Any, rc: int = 0) -> None:
    dev.priv_data = None


pcie_port_bus_type = bus_type(
    "pci_express", match=pcie_port_bus_match, probe=pcie_port_probe_service,
    dev_of=lambda dev: dev.device, probe_failed=_clear_service_data,
    unbound=_clear_service_data)


def _device_attach(dev: pcie_device) -> None:
    __device_attach(pcie_port_bus_type, pcie_port_bus_of(dev.k).drivers, dev)


def _device_release_driver(dev: pcie_device) -> None:
    __device_release_driver(pcie_port_bus_type, dev)


def pcie_port_service_register(k: Kernel, drv: pcie_port_service_driver) -> int:
    """Register a service driver and bind it to the matching unbound service devices."""
    bus = pcie_port_bus_of(k)
    if bus.disabled:
        return -ENODEV
    if drv in bus.drivers:
        return -EBUSY
    bus.drivers.append(drv)
    __driver_attach(pcie_port_bus_type, bus.devices, drv)
    return 0


def pcie_port_service_unregister(k: Kernel, drv: pcie_port_service_driver) -> None:
    bus = pcie_port_bus_of(k)
    for dev in list(bus.devices):
        if dev.driver is drv:
            _device_release_driver(dev)
    bus.drivers.remove(drv)
