"""The PCIe port driver and its services (``drivers/pci/pcie/``, ``drivers/pci/hotplug/``).

``pcie_portdrv_init(k)`` registers them with kernel ``k`` (before or after
``boot``): the ``aer``, ``pcie_pme`` and ``pciehp`` service drivers, then the
``pcieport`` PCI driver that binds every root port and starts the services
firmware lets the OS own. Modules:

- :mod:`~vmdsim.drivers.pcieport.portdrv` — the port driver: services,
  vectors by Interrupt Message Number;
- :mod:`~vmdsim.drivers.pcieport.bus` — the port bus (``pcie_port_bus_of(k)``):
  service devices, service drivers and their binding;
- :mod:`~vmdsim.drivers.pcieport.aer` — ``aerdrv``;
- :mod:`~vmdsim.drivers.pcieport.pme` — native PME;
- :mod:`~vmdsim.drivers.pcieport.pciehp` — native hot-plug;
- :mod:`~vmdsim.kernel.workqueue` — where IRQ-thread and workqueue
  work runs in the model.
"""

from vmdsim.drivers.pcieport.bus import (
    PCIE_PORT_SERVICE_AER,
    PCIE_PORT_SERVICE_HP,
    PCIE_PORT_SERVICE_PME,
    get_service_data,
    pcie_device,
    pcie_port_bus_of,
)
from vmdsim.drivers.pcieport.portdrv import pcie_portdrv_exit, pcie_portdrv_init
from vmdsim.kernel.workqueue import flush_scheduled_work

__all__ = [
    "PCIE_PORT_SERVICE_AER",
    "PCIE_PORT_SERVICE_HP",
    "PCIE_PORT_SERVICE_PME",
    "flush_scheduled_work",
    "get_service_data",
    "pcie_device",
    "pcie_port_bus_of",
    "pcie_portdrv_exit",
    "pcie_portdrv_init",
]
