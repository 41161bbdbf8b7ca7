"""The PCIe native PME service (``drivers/pci/pcie/pme.c``).

A device below a root port that wants to be woken sends a PM_PME message;
the root port latches its requester ID in Root Status (PME Status, PME
Pending when more are queued behind it) and, with PME Interrupt Enable set
in Root Control, interrupts.

``pcie_pme_probe``: PME interrupt off, Root Status PME cleared,
``request_irq(srv.irq, pcie_pme_irq, IRQF_SHARED, "PCIe PME", srv)``, then
the interrupt on. ``pcie_pme_irq`` (hard IRQ): read Root Status; not our
PME -> ``IRQ_NONE``; else turn the PME interrupt off and schedule the work.
``pcie_pme_work_fn``: while Root Status shows a PME, clear it (RW1C) —
which lets the port present the next queued one — and handle the request;
then turn the interrupt back on. (Linux also spins while Pending is set
without PME Status; the model's port never shows that state.)
Handling a request finds the device by requester ID (the port itself, or a
device on the bus the ID names) and checks and clears its PM Control/Status
PME Status (``pci_check_pme_status``; it also clears PME Enable to stop an
interrupt flood). A request no device owns is logged "Spurious native
interrupt!".

Where the model simplifies: no runtime resume (``pm_request_resume``), no
wakeup events, no PCIe-to-PCI bridge or ``pme_poll`` handling, and
``pcie_pme_mark_devices`` has nothing to mark. The work runs as described in
:mod:`vmdsim.kernel.workqueue`. Counters for views and tests:
``pme_service.requests`` (PMEs taken from Root Status) and ``found``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from vmdsim.drivers.pcieport.bus import (
    PCIE_PORT_SERVICE_PME,
    get_service_data,
    pcie_device,
    pcie_port_service_driver,
    pcie_port_service_register,
    set_service_data,
)
from vmdsim.hw.regs import (
    PCI_EXP_RTCTL,
    PCI_EXP_RTCTL_PMEIE,
    PCI_EXP_RTSTA,
    PCI_EXP_RTSTA_PME,
    PCI_EXP_TYPE_RC_EC,
    PCI_EXP_TYPE_ROOT_PORT,
    PCI_PM_CTRL,
    PCI_PM_CTRL_PME_ENABLE,
    PCI_PM_CTRL_PME_STATUS,
)
from vmdsim.kernel.errno import ENODEV, ENOMEM
from vmdsim.kernel.irq.flags import IRQ_HANDLED, IRQ_NONE, IRQF_SHARED
from vmdsim.kernel.locking import (
    spin_lock_irq,
    spin_lock_irqsave,
    spin_unlock_irq,
    spin_unlock_irqrestore,
    spinlock_t,
)
from vmdsim.kernel.pci import (
    PCI_FUNC,
    PCI_POSSIBLE_ERROR,
    PCI_SLOT,
    pci_domain_nr,
    pci_pcie_type,
    pci_read_config_word,
    pci_write_config_word,
    pcie_capability_clear_word,
    pcie_capability_read_dword,
    pcie_capability_set_word,
)
from vmdsim.kernel.pci.access import pcie_capability_set_dword
from vmdsim.kernel.pci.subsys import pci_info
from vmdsim.kernel.shared import KObject, poke, shared
from vmdsim.kernel.workqueue import INIT_WORK, cancel_work_sync, schedule_work

if TYPE_CHECKING:
    from vmdsim.kernel.core import Kernel

PCI_EXP_RTSTA_PME_RQID = 0xFFFF


class pcie_pme_service_data(KObject):
    """``struct pcie_pme_service_data``; ``noirq`` is shared by the hard handler, the
    work and the removal."""

    noirq = shared()

    def __init__(self, srv: pcie_device) -> None:
        poke(self, "noirq", False)
        self.srv = srv
        self.lock = spinlock_t(f"{srv.name}.pme_lock", key="pcie_pme_service_data.lock")
        self.work = INIT_WORK(srv.k, pcie_pme_work_fn, self, f"kworker/pme:{srv.name}")
        self.requests = 0  # model only: PME requests taken from Root Status
        self.found = 0  # model only: requests whose source device had PME Status set


def pcie_pme_interrupt_enable(dev: Any, enable: bool) -> None:
    """Set or clear PME Interrupt Enable in Root Control (the port driver calls it too)."""
    if enable:
        pcie_capability_set_word(dev, PCI_EXP_RTCTL, PCI_EXP_RTCTL_PMEIE)
    else:
        pcie_capability_clear_word(dev, PCI_EXP_RTCTL, PCI_EXP_RTCTL_PMEIE)


def pcie_clear_root_pme_status(dev: Any) -> None:
    """Write 1 to Root Status PME Status (RW1C)."""
    pcie_capability_set_dword(dev, PCI_EXP_RTSTA, PCI_EXP_RTSTA_PME)


def pci_check_pme_status(dev: Any) -> bool:
    """True if ``dev`` signalled PME (PME Status and PME Enable set); clears PME Status
    and, if it was the source, PME Enable (to stop an interrupt flood)."""
    if not dev.pm_cap:
        return False
    pos = dev.pm_cap + PCI_PM_CTRL
    _, pmcsr = pci_read_config_word(dev, pos)
    if not pmcsr & PCI_PM_CTRL_PME_STATUS:
        return False
    ret = False
    if pmcsr & PCI_PM_CTRL_PME_ENABLE:
        pmcsr &= ~PCI_PM_CTRL_PME_ENABLE
        ret = True
    pci_write_config_word(dev, pos, pmcsr)  # PME Status is RW1C: writing it back clears it
    return ret


def pcie_pme_handle_request(port: Any, req_id: int) -> bool:
    busnr, devfn = req_id >> 8, req_id & 0xFF
    found = False
    if port.devfn == devfn and port.bus.number == busnr:
        found = pci_check_pme_status(port)
    else:
        bus = port.k.pci.pci_find_bus(pci_domain_nr(port.bus), busnr)
        dev = None
        if bus is not None:
            dev = next((d for d in bus.devices if d.devfn == devfn), None)
        if dev is not None:
            found = pci_check_pme_status(dev)
        elif bus is not None and devfn:
            pci_info(port, f"PME: interrupt generated for non-existent device "
                           f"{busnr:02x}:{PCI_SLOT(devfn):02x}.{PCI_FUNC(devfn)}")
    if not found:
        pci_info(port, "PME: Spurious native interrupt!")  # dev_fmt "PME: "
    return found


def pcie_pme_irq(irq: int, srv: pcie_device) -> int:
    """Hard handler: is it our PME? Then mask the PME interrupt and schedule the work."""
    port = srv.port
    data: pcie_pme_service_data = get_service_data(srv)
    flags = spin_lock_irqsave(data.lock)
    _, rtsta = pcie_capability_read_dword(port, PCI_EXP_RTSTA)
    if PCI_POSSIBLE_ERROR(rtsta) or not rtsta & PCI_EXP_RTSTA_PME:
        spin_unlock_irqrestore(data.lock, flags)
        return IRQ_NONE
    pcie_pme_interrupt_enable(port, False)
    spin_unlock_irqrestore(data.lock, flags)
    schedule_work(data.work)
    return IRQ_HANDLED


def pcie_pme_work_fn(data: pcie_pme_service_data) -> None:
    port = data.srv.port
    spin_lock_irq(data.lock)
    while True:
        if data.noirq:
            break
        _, rtsta = pcie_capability_read_dword(port, PCI_EXP_RTSTA)
        if PCI_POSSIBLE_ERROR(rtsta):
            break
        if rtsta & PCI_EXP_RTSTA_PME:
            # Clear the port's PME Status; another pending PME sets it again.
            pcie_clear_root_pme_status(port)
            spin_unlock_irq(data.lock)
            data.requests += 1
            if pcie_pme_handle_request(port, rtsta & PCI_EXP_RTSTA_PME_RQID):
                data.found += 1
            spin_lock_irq(data.lock)
            continue
        # Linux spins (cpu_relax) while Pending is set without PME Status, waiting for
        # the port to present the next request. The model's port presents it as soon as
        # PME Status is cleared, so that state never lasts: stop either way.
        break
    if not data.noirq:
        pcie_pme_interrupt_enable(port, True)
    spin_unlock_irq(data.lock)


def pcie_pme_disable_interrupt(port: Any, data: pcie_pme_service_data) -> None:
    spin_lock_irq(data.lock)
    pcie_pme_interrupt_enable(port, False)
    pcie_clear_root_pme_status(port)
    data.noirq = True
    spin_unlock_irq(data.lock)


def pcie_pme_probe(srv: pcie_device) -> int:
    port = srv.port
    if pci_pcie_type(port) not in (PCI_EXP_TYPE_RC_EC, PCI_EXP_TYPE_ROOT_PORT):
        return -ENODEV
    k = srv.k
    data = k.mem.kzalloc(pcie_pme_service_data, srv, owner="pcieport")
    if data is None:
        return -ENOMEM
    set_service_data(srv, data)
    pcie_pme_interrupt_enable(port, False)
    pcie_clear_root_pme_status(port)
    ret = k.irq.request_irq(srv.irq, pcie_pme_irq, IRQF_SHARED, "PCIe PME", srv)
    if ret:
        k.mem.kfree(data)
        return ret
    pci_info(port, f"PME: Signaling with IRQ {srv.irq}")
    pcie_pme_interrupt_enable(port, True)
    return 0


def pcie_pme_remove(srv: pcie_device) -> None:
    data = get_service_data(srv)
    pcie_pme_disable_interrupt(srv.port, data)
    srv.k.irq.free_irq(srv.irq, srv)
    cancel_work_sync(data.work)
    srv.k.mem.kfree(data)


def pcie_pme_init(k: Kernel) -> int:
    drv = pcie_port_service_driver("pcie_pme", PCIE_PORT_SERVICE_PME,
                                   port_type=PCI_EXP_TYPE_ROOT_PORT, probe=pcie_pme_probe,
                                   remove=pcie_pme_remove)
    return pcie_port_service_register(k, drv)
