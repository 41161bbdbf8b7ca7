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
``pcie_ports=compat`` / ``pcie_ports=dpc-native``; ``pcie_port_bus_of(k).native``
stands for ``pcie_ports=native`` and ``pcie_port_bus_of(k).disabled`` for
``pcie_ports=compat``. The port bus itself (service devices and drivers, and
binding them) is :mod:`~vmdsim.drivers.pcieport.bus`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from vmdsim.drivers.pcieport.aer import pcie_aer_init
from vmdsim.drivers.pcieport.bus import (
    PCIE_PORT_DEVICE_MAXSERVICES,
    PCIE_PORT_SERVICE_AER,
    PCIE_PORT_SERVICE_AER_SHIFT,
    PCIE_PORT_SERVICE_BWCTRL,
    PCIE_PORT_SERVICE_BWCTRL_SHIFT,
    PCIE_PORT_SERVICE_HP,
    PCIE_PORT_SERVICE_HP_SHIFT,
    PCIE_PORT_SERVICE_PME,
    PCIE_PORT_SERVICE_PME_SHIFT,
    _device_attach,
    _device_release_driver,
    pcie_device,
    pcie_port_bus_of,
    pcie_port_service_unregister,
)
from vmdsim.drivers.pcieport.pciehp import pcie_hp_init
from vmdsim.drivers.pcieport.pme import pcie_pme_init, pcie_pme_interrupt_enable
from vmdsim.hw.regs import (
    PCI_CLASS_BRIDGE_PCI_NORMAL,
    PCI_ERR_ROOT_AER_IRQ,
    PCI_ERR_ROOT_AER_IRQ_SHIFT,
    PCI_ERR_ROOT_STATUS,
    PCI_EXP_FLAGS,
    PCI_EXP_FLAGS_IRQ,
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
    pci_pcie_type,
    pci_read_config_dword,
    pci_register_driver,
    pci_save_state,
    pci_set_master,
    pci_unregister_driver,
    pcie_capability_clear_word,
    pcie_capability_read_word,
)
from vmdsim.kernel.pci.msi import (
    PCI_IRQ_MSI,
    PCI_IRQ_MSIX,
    pci_alloc_irq_vectors,
    pci_free_irq_vectors,
    pci_irq_vector,
)
from vmdsim.kernel.sched import current

if TYPE_CHECKING:
    from vmdsim.kernel.core import Kernel

PCIE_PORT_MAX_MSI_ENTRIES = 32


# -- services and their interrupts --------------------------------------------------------
def pci_aer_available(k: Kernel) -> bool:
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
        pci_free_irq_vectors(dev)
        pci_disable_device(dev)
        return -ENODEV
    return 0


def pcie_port_device_remove(dev: Any) -> None:
    """Unbind and delete every service device of ``dev``, then free the port's vectors."""
    bus = pcie_port_bus_of(dev.k)
    for pcie in bus.services_of(dev):
        _device_release_driver(pcie)
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


def pcie_portdrv_init(k: Kernel) -> int:
    """``module_init(pcie_portdrv_init)``: the service drivers, then ``pcieport``.

    Runs as a task on CPU 0 (``kernel_init``) unless called from one; before or after
    ``boot``. Returns 0, -EACCES (``pcie_ports=compat``) or -EBUSY (already done)."""
    ctx = current()
    if ctx.kind == "task" and ctx.cpu.id >= 0:
        return _pcie_portdrv_init(k)
    with k.on_cpu(0, "kernel_init"):
        return _pcie_portdrv_init(k)


def _pcie_portdrv_init(k: Kernel) -> int:
    bus = pcie_port_bus_of(k)
    if bus.disabled:
        return -EACCES
    if bus.portdriver is not None:
        return -EBUSY
    pcie_aer_init(k)
    pcie_pme_init(k)
    pcie_hp_init(k)
    drv = pci_driver("pcieport", port_pci_ids(), probe=pcie_portdrv_probe,
                     remove=pcie_portdrv_remove, shutdown=pcie_portdrv_shutdown)
    bus.portdriver = drv
    return pci_register_driver(k, drv)


def pcie_portdrv_exit(k: Kernel) -> None:
    """Unregister ``pcieport`` (every port's services stop) and the service drivers."""
    bus = pcie_port_bus_of(k)
    if bus.portdriver is not None:
        pci_unregister_driver(k, bus.portdriver)
        bus.portdriver = None
    for drv in list(bus.drivers):
        pcie_port_service_unregister(k, drv)
