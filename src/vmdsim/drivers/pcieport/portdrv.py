"""The PCI Express port bus driver (``drivers/pci/pcie/portdrv.c``).

``pcieport`` binds to every PCI-to-PCI bridge (class 0x0604xx) and keeps the
ones that are PCIe root ports, switch ports or event collectors. For each it
works out which *services* firmware lets the OS drive
(:func:`get_port_device_capability`):

* hot-plug (``pciehp``) on a hot-plug capable root or downstream port, if the
  host bridge's ``native_pcie_hotplug`` is set (or ``pcie_ports=native``);
* AER on a root port (or event collector) with the AER capability, if
  ``native_aer``;
* PME on a root port (or event collector), if ``native_pme``; the PME
  interrupt is disabled until the PME service enables it.

For a VMD domain these flags are the ones the VMD driver copied from its own
host bridge. Then it allocates the port's interrupt vectors
(:func:`pcie_port_enable_irq_vec`): as many MSI-X or MSI vectors as the port
has (at most 32), then — having read which vector each service uses from
config space, the *Interrupt Message Number* of the PCIe Capabilities
register for PME/hot-plug and of the AER Root Error Status register for AER
— as few as cover the highest number used. Each service becomes a
:class:`pcie_device` named ``<port>:pcie<service mask, %03x>`` on the port
bus, and the service driver registered for it (``aer``, ``pcie_pme``,
``pciehp``) probes it with its IRQ.

Registering: :func:`pcie_portdrv_init(k) <pcie_portdrv_init>` is
``module_init``: it registers the service drivers, then the PCI driver, so
the ports bind (and the services start) at once if the kernel has booted, or
during boot's ``pci_bus_add_devices`` if it has not.

Where the model simplifies: no legacy INTx fallback (the model's hardware has
no INTx; a port without MSI/MSI-X keeps only hot-plug, as Linux does when
``pcie_init_service_irqs`` fails, and pciehp then cannot get an IRQ), no DPC
or bandwidth-control services, no runtime PM or D3 of bridges, no
``pcie_ports=compat`` / ``pcie_ports=dpc-native``; ``k.pcie_port.native``
stands for ``pcie_ports=native`` and ``k.pcie_port.disabled`` for
``pcie_ports=compat``. The port bus is a plain list of service devices and
drivers (no sysfs, no reference counts).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from vmdsim.hw.regs import (
    PCI_CLASS_BRIDGE_PCI_NORMAL,
    PCI_ERR_ROOT_AER_IRQ,
    PCI_ERR_ROOT_AER_IRQ_SHIFT,
    PCI_ERR_ROOT_STATUS,
    PCI_EXP_FLAGS,
    PCI_EXP_FLAGS_IRQ,
    PCI_EXP_RTCTL,
    PCI_EXP_RTCTL_PMEIE,
    PCI_EXP_SLTCTL,
    PCI_EXP_SLTCTL_CCIE,
    PCI_EXP_SLTCTL_HPIE,
    PCI_EXP_TYPE_DOWNSTREAM,
    PCI_EXP_TYPE_RC_EC,
    PCI_EXP_TYPE_ROOT_PORT,
    PCI_EXP_TYPE_UPSTREAM,
)
from vmdsim.kernel.errno import EACCES, EBUSY, EIO, ENODEV, ENOMEM
from vmdsim.kernel.pci import (
    PCI_DEVICE_CLASS,
    pci_disable_device,
    pci_driver,
    pci_enable_device,
    pci_find_host_bridge,
    pci_is_pcie,
    pci_name,
    pci_pcie_type,
    pci_read_config_dword,
    pci_register_driver,
    pci_save_state,
    pci_set_master,
    pci_unregister_driver,
    pcie_capability_clear_word,
    pcie_capability_read_word,
    pcie_capability_set_word,
)
from vmdsim.kernel.pci.device import device, devres_release_all
from vmdsim.kernel.pci.subsys import pci_subsys
from vmdsim.kernel.sched import current
from vmdsim.kernel.shared import KObject
from vmdsim.kernel.workqueue import system_wq

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
PCIE_PORT_MAX_MSI_ENTRIES = 32
PCIE_ANY_PORT = 0xFFFFFFFF

SERVICE_NAMES = {PCIE_PORT_SERVICE_PME: "pme", PCIE_PORT_SERVICE_AER: "aer",
                 PCIE_PORT_SERVICE_HP: "pciehp", PCIE_PORT_SERVICE_DPC: "dpc",
                 PCIE_PORT_SERVICE_BWCTRL: "bwctrl"}



class pcie_device(KObject):
    """``struct pcie_device``: one service of one port, a device on the port bus."""

    def __init__(self, k: Any, port: Any, service: int, irq: int) -> None:
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
    """``k.pcie_port``: the ``pci_express`` bus (its devices and drivers), the
    ``pcie_ports=`` options, and the port services' deferred work."""

    def __init__(self, k: Any) -> None:
        self.k = k
        self.drivers: list[pcie_port_service_driver] = []
        self.devices: list[pcie_device] = []
        self.native = False  # pcie_ports=native: ignore what firmware granted
        self.disabled = False  # pcie_ports=compat: no port services at all
        self.portdriver: pci_driver | None = None
        self.hotplug_slots: list[Any] = []  # pciehp controllers (pci_hp_add)
        self.wq = system_wq(k)

    def services_of(self, port: Any) -> list[pcie_device]:
        return [d for d in self.devices if d.port is port]


def pcie_port_bus_of(k: Any) -> pcie_port_bus:
    """``k.pcie_port``, created on first use."""
    bus = getattr(k, "pcie_port", None)
    if bus is None:
        bus = pcie_port_bus(k)
        k.pcie_port = bus
    return bus


# -- the port bus: matching and binding (portdrv.c: pcie_port_bus_type) --------------------
def pcie_port_bus_match(dev: pcie_device, drv: pcie_port_service_driver) -> bool:
    if drv.service != dev.service:
        return False
    return drv.port_type in (PCIE_ANY_PORT, pci_pcie_type(dev.port))


def pcie_port_probe_service(dev: pcie_device, drv: pcie_port_service_driver) -> int:
    """Bind ``drv`` to ``dev``; on failure, release what the probe managed (devres)."""
    if drv.probe is None:
        return -ENODEV
    dev.driver = drv
    try:
        status = drv.probe(dev)
    except BaseException:
        dev.driver = None
        raise
    if status:
        dev.driver = None
        devres_release_all(dev.device)
        dev.priv_data = None
        return status
    return 0


def pcie_port_remove_service(dev: pcie_device) -> None:
    drv = dev.driver
    if drv is None:
        return
    if drv.remove is not None:
        drv.remove(dev)
    dev.driver = None
    devres_release_all(dev.device)
    dev.priv_data = None


def _device_attach(dev: pcie_device) -> None:
    for drv in list(pcie_port_bus_of(dev.k).drivers):
        if pcie_port_bus_match(dev, drv) and pcie_port_probe_service(dev, drv) == 0:
            return


def pcie_port_service_register(k: Any, drv: pcie_port_service_driver) -> int:
    """Register a service driver and bind it to the matching unbound service devices."""
    bus = pcie_port_bus_of(k)
    if bus.disabled:
        return -ENODEV
    if drv in bus.drivers:
        return -EBUSY
    bus.drivers.append(drv)
    for dev in list(bus.devices):
        if dev.driver is None and pcie_port_bus_match(dev, drv):
            pcie_port_probe_service(dev, drv)
    return 0


def pcie_port_service_unregister(k: Any, drv: pcie_port_service_driver) -> None:
    bus = pcie_port_bus_of(k)
    for dev in list(bus.devices):
        if dev.driver is drv:
            pcie_port_remove_service(dev)
    bus.drivers.remove(drv)


# -- services and their interrupts --------------------------------------------------------
def pcie_pme_interrupt_enable(dev: Any, enable: bool) -> None:
    """Set or clear PME Interrupt Enable in Root Control."""
    if enable:
        pcie_capability_set_word(dev, PCI_EXP_RTCTL, PCI_EXP_RTCTL_PMEIE)
    else:
        pcie_capability_clear_word(dev, PCI_EXP_RTCTL, PCI_EXP_RTCTL_PMEIE)


def pci_aer_available(k: Any) -> bool:
    """``pci=noaer`` is not modelled: AER is always available."""
    return True


def get_port_device_capability(dev: Any) -> int:
    """The services the OS may run on ``dev``: PCIE_PORT_SERVICE_* bits."""
    bus = pcie_port_bus_of(dev.k)
    host = pci_find_host_bridge(dev.bus)
    native = bus.native
    typ = pci_pcie_type(dev)
    services = 0
    hp_driver = any(d.service == PCIE_PORT_SERVICE_HP for d in bus.drivers)
    if (dev.is_hotplug_bridge and typ in (PCI_EXP_TYPE_ROOT_PORT, PCI_EXP_TYPE_DOWNSTREAM)
            and (native or host.native_pcie_hotplug)):
        services |= PCIE_PORT_SERVICE_HP
        # Linux: if CONFIG_HOTPLUG_PCI_PCIE is off, turn off hot-plug interrupts firmware
        # may have enabled; the model's counterpart is "no pciehp driver registered".
        if not hp_driver:
            pcie_capability_clear_word(dev, PCI_EXP_SLTCTL,
                                       PCI_EXP_SLTCTL_CCIE | PCI_EXP_SLTCTL_HPIE)
    if (typ in (PCI_EXP_TYPE_ROOT_PORT, PCI_EXP_TYPE_RC_EC) and dev.aer_cap
            and pci_aer_available(dev.k) and (native or host.native_aer)):
        services |= PCIE_PORT_SERVICE_AER
    if typ in (PCI_EXP_TYPE_ROOT_PORT, PCI_EXP_TYPE_RC_EC) and (native or host.native_pme):
        services |= PCIE_PORT_SERVICE_PME
        # Off until the PME service driver enables it.
        pcie_pme_interrupt_enable(dev, False)
    return services


def pcie_message_numbers(dev: Any, mask: int) -> tuple[int, int, int]:
    """How many vectors the services in ``mask`` need, and which one PME/hot-plug and AER
    use: ``(nvec, pme, aer)``, read from the Interrupt Message Number fields."""
    nvec = pme = aer = 0
    if mask & (PCIE_PORT_SERVICE_PME | PCIE_PORT_SERVICE_HP | PCIE_PORT_SERVICE_BWCTRL):
        _, reg16 = pcie_capability_read_word(dev, PCI_EXP_FLAGS)
        pme = (reg16 & PCI_EXP_FLAGS_IRQ) >> 9
        nvec = pme + 1
    if mask & PCIE_PORT_SERVICE_AER and dev.aer_cap:
        _, reg32 = pci_read_config_dword(dev, dev.aer_cap + PCI_ERR_ROOT_STATUS)
        aer = (reg32 & PCI_ERR_ROOT_AER_IRQ) >> PCI_ERR_ROOT_AER_IRQ_SHIFT
        nvec = max(nvec, aer + 1)
    return nvec, pme, aer


def pcie_port_enable_irq_vec(dev: Any, irqs: list[int], mask: int) -> int:
    """Allocate MSI-X (else MSI) vectors and fill ``irqs`` per service; 0 or -errno."""
    from vmdsim.kernel.pci.msi import (
        PCI_IRQ_MSI,
        PCI_IRQ_MSIX,
        pci_alloc_irq_vectors,
        pci_free_irq_vectors,
        pci_irq_vector,
    )

    flags = PCI_IRQ_MSIX | PCI_IRQ_MSI
    nr_entries = pci_alloc_irq_vectors(dev, 1, PCIE_PORT_MAX_MSI_ENTRIES, flags)
    if nr_entries < 0:
        return nr_entries
    # See how many and which Interrupt Message Numbers the services use. With MSI the
    # numbers may change when the vector count does; Linux assumes they will not.
    nvec, pme, aer = pcie_message_numbers(dev, mask)
    if nvec > nr_entries:
        pci_free_irq_vectors(dev)
        return -EIO
    if nvec != nr_entries:
        # More than needed: free them and allocate just enough. pci_irq_vector() only
        # after this, because reallocating may change which IRQs we get.
        pci_free_irq_vectors(dev)
        nr_entries = pci_alloc_irq_vectors(dev, nvec, nvec, flags)
        if nr_entries < 0:
            return nr_entries
    if mask & (PCIE_PORT_SERVICE_PME | PCIE_PORT_SERVICE_HP | PCIE_PORT_SERVICE_BWCTRL):
        # PME, hot-plug and bandwidth notification share one vector.
        irq = pci_irq_vector(dev, pme)
        for shift in (PCIE_PORT_SERVICE_PME_SHIFT, PCIE_PORT_SERVICE_HP_SHIFT,
                      PCIE_PORT_SERVICE_BWCTRL_SHIFT):
            irqs[shift] = irq
    if mask & PCIE_PORT_SERVICE_AER:
        irqs[PCIE_PORT_SERVICE_AER_SHIFT] = pci_irq_vector(dev, aer)
    return 0


def pcie_init_service_irqs(dev: Any, irqs: list[int], mask: int) -> int:
    """Per-service IRQ numbers (-1: none). Linux falls back to INTx when MSI/MSI-X cannot
    be had; the model's hardware has no INTx, so that fails with -ENODEV."""
    for i in range(PCIE_PORT_DEVICE_MAXSERVICES):
        irqs[i] = -1
    if pcie_port_enable_irq_vec(dev, irqs, mask) == 0:
        return 0
    return -ENODEV


def pcie_device_init(pdev: Any, service: int, irq: int) -> int:
    """Create the service device and bind its driver; 0 or -ENOMEM."""
    k = pdev.k
    pcie = k.mem.kzalloc(pcie_device, k, pdev, service, irq, owner="pcieport")
    if pcie is None:
        return -ENOMEM
    bus = pcie_port_bus_of(k)
    bus.devices.append(pcie)  # device_register
    _device_attach(pcie)
    return 0


def pcie_port_device_register(dev: Any) -> int:
    status = pci_enable_device(dev)
    if status:
        return status
    capabilities = get_port_device_capability(dev)
    if not capabilities:
        return 0
    pci_set_master(dev)
    irqs = [-1] * PCIE_PORT_DEVICE_MAXSERVICES
    # Services that need an interrupt are dropped if there is none; hot-plug stays (Linux's
    # pciehp could poll; the model's pciehp has no poll mode, so its probe then fails).
    status = pcie_init_service_irqs(dev, irqs, capabilities)
    if status:
        capabilities &= PCIE_PORT_SERVICE_HP
        if not capabilities:
            pci_disable_device(dev)
            return status
    nr_service = 0
    for i in range(PCIE_PORT_DEVICE_MAXSERVICES):
        service = 1 << i
        if not capabilities & service:
            continue
        if not pcie_device_init(dev, service, irqs[i]):
            nr_service += 1
    if not nr_service:
        from vmdsim.kernel.pci.msi import pci_free_irq_vectors

        pci_free_irq_vectors(dev)
        pci_disable_device(dev)
        return -ENODEV
    return 0


def pcie_port_device_remove(dev: Any) -> None:
    """Unbind and delete every service device of ``dev``, then free the port's vectors."""
    from vmdsim.kernel.pci.msi import pci_free_irq_vectors

    bus = pcie_port_bus_of(dev.k)
    for pcie in bus.services_of(dev):
        pcie_port_remove_service(pcie)
        bus.devices.remove(pcie)  # device_unregister -> release_pcie_device
        dev.k.mem.kfree(pcie)
    pci_free_irq_vectors(dev)


# -- the PCI driver ---------------------------------------------------------------------
def pcie_portdrv_probe(dev: Any, id: Any) -> int:
    typ = pci_pcie_type(dev)
    if not pci_is_pcie(dev) or typ not in (PCI_EXP_TYPE_ROOT_PORT, PCI_EXP_TYPE_UPSTREAM,
                                           PCI_EXP_TYPE_DOWNSTREAM, PCI_EXP_TYPE_RC_EC):
        return -ENODEV
    status = pcie_port_device_register(dev)
    if status:
        return status
    pci_save_state(dev)
    return 0


def pcie_portdrv_remove(dev: Any) -> None:
    pcie_port_device_remove(dev)
    pci_disable_device(dev)


def pcie_portdrv_shutdown(dev: Any) -> None:
    pcie_port_device_remove(dev)


PCI_CLASS_BRIDGE_PCI_SUBTRACTIVE = 0x060401
PCI_CLASS_SYSTEM_RCEC = 0x0807


def port_pci_ids() -> list:
    return [
        PCI_DEVICE_CLASS(PCI_CLASS_BRIDGE_PCI_NORMAL, 0xFFFFFF),  # any PCIe port
        PCI_DEVICE_CLASS(PCI_CLASS_BRIDGE_PCI_SUBTRACTIVE, 0xFFFFFF),
        PCI_DEVICE_CLASS(PCI_CLASS_SYSTEM_RCEC << 8, 0xFFFFFF),  # event collectors
    ]


def pcie_portdrv_init(k: Any) -> int:
    """``module_init(pcie_portdrv_init)``: the service drivers, then ``pcieport``.

    Runs as a task on CPU 0 (``kernel_init``) unless called from one; before or after
    ``boot``. Returns 0, -EACCES (``pcie_ports=compat``) or -EBUSY (already done)."""
    ctx = current()
    if ctx.kind == "task" and ctx.cpu.id >= 0:
        return _pcie_portdrv_init(k)
    with k.on_cpu(0, "kernel_init"):
        return _pcie_portdrv_init(k)


def _pcie_portdrv_init(k: Any) -> int:
    from vmdsim.drivers.pcieport.aer import pcie_aer_init
    from vmdsim.drivers.pcieport.pciehp import pcie_hp_init
    from vmdsim.drivers.pcieport.pme import pcie_pme_init

    bus = pcie_port_bus_of(k)
    if bus.disabled:
        return -EACCES
    if bus.portdriver is not None:
        return -EBUSY
    pci_subsys(k)
    pcie_aer_init(k)
    pcie_pme_init(k)
    pcie_hp_init(k)
    drv = pci_driver("pcieport", port_pci_ids(), probe=pcie_portdrv_probe,
                     remove=pcie_portdrv_remove, shutdown=pcie_portdrv_shutdown)
    bus.portdriver = drv
    return pci_register_driver(k, drv)


def pcie_portdrv_exit(k: Any) -> None:
    """Unregister ``pcieport`` (every port's services stop) and the service drivers."""
    bus = pcie_port_bus_of(k)
    if bus.portdriver is not None:
        pci_unregister_driver(k, bus.portdriver)
        bus.portdriver = None
    for drv in list(bus.drivers):
        pcie_port_service_unregister(k, drv)
