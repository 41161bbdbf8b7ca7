"""The AER root-port service, ``aerdrv`` (``drivers/pci/pcie/aer.c``).

A device that detects an error sends ERR_COR / ERR_NONFATAL / ERR_FATAL to
its root port, which logs it in the AER capability's Root Error Status
(Correctable/Uncorrectable received, Multiple..., First Uncorrectable
Fatal, Non-Fatal/Fatal received) and Error Source Identification (the
requester IDs), and interrupts if Root Error Command enables that class.

``aer_probe`` (root ports and event collectors): allocate the ``aer_rpc``
(devm), ``request_irq(dev.irq, aer_irq, IRQF_SHARED, "aerdrv", dev)`` and
``aer_enable_rootport``: clear Device Status, stop the port from also
signalling system errors for error messages (Root Control SECEE/SENFEE/
SEFEE off), clear Root Error Status and the port's own Correctable and
Uncorrectable Error Status, then enable all three interrupt enables in Root
Error Command. ``aer_remove``: ``aer_disable_rootport`` (Root Error Command
off, Root Error Status cleared); the IRQ is freed by devres.

``aer_irq`` (hard IRQ): read Root Error Status; nothing received ->
``IRQ_NONE``; else read Error Source, write the status back (RW1C: clears
it, so the port can interrupt again) and put the pair in the ``aer_fifo``
for the IRQ thread. ``aer_isr`` (the thread) takes each entry and logs it as
Linux does — "Correctable error message received from 0000:01:00.0",
"Multiple Uncorrectable (Fatal) error message received from ..." — with the
correctable one first when both are present.

Where the model simplifies: the thread runs as described in
:mod:`vmdsim.kernel.workqueue` (the IRQ core has no threaded
handlers); no error recovery (``pcie_do_recovery``, driver
``err_handler`` callbacks, link reset), no reading of the source device's
own AER status or header log (``find_source_device``/``aer_print_error``),
no statistics in sysfs. ``aer_rpc.received`` keeps every (status, source)
pair the hard handler took, and ``aer_rpc.log`` the lines the thread
printed, for views and tests.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from vmdsim.drivers.pcieport.bus import (
    PCIE_PORT_SERVICE_AER,
    get_service_data,
    pcie_device,
    pcie_port_service_driver,
    pcie_port_service_register,
    set_service_data,
)
from vmdsim.hw.regs import (
    PCI_ERR_COR_STATUS,
    PCI_ERR_ROOT_CMD_COR_EN,
    PCI_ERR_ROOT_CMD_FATAL_EN,
    PCI_ERR_ROOT_CMD_NONFATAL_EN,
    PCI_ERR_ROOT_COMMAND,
    PCI_ERR_ROOT_COR_RCV,
    PCI_ERR_ROOT_ERR_SRC,
    PCI_ERR_ROOT_FATAL_RCV,
    PCI_ERR_ROOT_MULTI_COR_RCV,
    PCI_ERR_ROOT_MULTI_UNCOR_RCV,
    PCI_ERR_ROOT_STATUS,
    PCI_ERR_ROOT_UNCOR_RCV,
    PCI_ERR_UNCOR_STATUS,
    PCI_EXP_DEVSTA,
    PCI_EXP_RTCTL,
    PCI_EXP_RTCTL_SECEE,
    PCI_EXP_RTCTL_SEFEE,
    PCI_EXP_RTCTL_SENFEE,
    PCI_EXP_TYPE_RC_EC,
    PCI_EXP_TYPE_ROOT_PORT,
)
from vmdsim.kernel.errno import ENODEV, ENOMEM
from vmdsim.kernel.irq.flags import IRQ_HANDLED, IRQ_NONE, IRQF_SHARED
from vmdsim.kernel.locking import spin_lock_irqsave, spin_unlock_irqrestore, spinlock_t
from vmdsim.kernel.pci import (
    PCI_FUNC,
    PCI_SLOT,
    devm_add_action,
    devm_kzalloc,
    pci_domain_nr,
    pci_pcie_type,
    pci_read_config_dword,
    pci_write_config_dword,
    pcie_capability_clear_word,
    pcie_capability_read_word,
    pcie_capability_write_word,
)
from vmdsim.kernel.pci.subsys import pci_err, pci_info
from vmdsim.kernel.shared import KObject
from vmdsim.kernel.workqueue import INIT_WORK, cancel_work_sync, schedule_work

if TYPE_CHECKING:
    from vmdsim.kernel.core import Kernel

AER_ERROR_SOURCES_MAX = 128  # the kfifo's size
AER_ERR_STATUS_MASK = PCI_ERR_ROOT_UNCOR_RCV | PCI_ERR_ROOT_COR_RCV
SYSTEM_ERROR_INTR_ON_MESG_MASK = PCI_EXP_RTCTL_SECEE | PCI_EXP_RTCTL_SENFEE | PCI_EXP_RTCTL_SEFEE
ROOT_PORT_INTR_ON_MESG_MASK = (PCI_ERR_ROOT_CMD_COR_EN | PCI_ERR_ROOT_CMD_NONFATAL_EN
                               | PCI_ERR_ROOT_CMD_FATAL_EN)
AER_NONFATAL, AER_FATAL, AER_CORRECTABLE = 0, 1, 2
aer_error_severity_string = ["Uncorrectable (Non-Fatal)", "Uncorrectable (Fatal)",
                             "Correctable"]


class aer_rpc(KObject):
    """``struct aer_rpc``: the root port and the fifo between the two handler halves."""

    def __init__(self, dev: pcie_device) -> None:
        self.rpd = dev.port
        self.aer_fifo: list[tuple[int, int]] = []
        # kfifo_put/get's ordering
        self.fifo_lock = spinlock_t(f"{dev.name}.aer_fifo", key="aer_rpc.aer_fifo_lock")
        self.work = INIT_WORK(dev.k, aer_isr, dev, f"irq/{dev.irq}-aerdrv")
        self.received: list[tuple[int, int]] = []  # model only
        self.log: list[str] = []  # model only


def aer_enable_rootport(rpc: aer_rpc) -> None:
    pdev = rpc.rpd
    aer = pdev.aer_cap
    _, reg16 = pcie_capability_read_word(pdev, PCI_EXP_DEVSTA)
    pcie_capability_write_word(pdev, PCI_EXP_DEVSTA, reg16)
    pcie_capability_clear_word(pdev, PCI_EXP_RTCTL, SYSTEM_ERROR_INTR_ON_MESG_MASK)
    for reg in (PCI_ERR_ROOT_STATUS, PCI_ERR_COR_STATUS, PCI_ERR_UNCOR_STATUS):
        _, reg32 = pci_read_config_dword(pdev, aer + reg)
        pci_write_config_dword(pdev, aer + reg, reg32)
    _, reg32 = pci_read_config_dword(pdev, aer + PCI_ERR_ROOT_COMMAND)
    pci_write_config_dword(pdev, aer + PCI_ERR_ROOT_COMMAND, reg32 | ROOT_PORT_INTR_ON_MESG_MASK)


def aer_disable_rootport(rpc: aer_rpc) -> None:
    pdev = rpc.rpd
    aer = pdev.aer_cap
    _, reg32 = pci_read_config_dword(pdev, aer + PCI_ERR_ROOT_COMMAND)
    pci_write_config_dword(pdev, aer + PCI_ERR_ROOT_COMMAND,
                           reg32 & ~ROOT_PORT_INTR_ON_MESG_MASK)
    _, reg32 = pci_read_config_dword(pdev, aer + PCI_ERR_ROOT_STATUS)
    pci_write_config_dword(pdev, aer + PCI_ERR_ROOT_STATUS, reg32)


def aer_irq(irq: int, dev: pcie_device) -> int:
    """Hard handler: take the port's Root Error Status and source IDs, clear them."""
    rpc: aer_rpc = get_service_data(dev)
    rp = rpc.rpd
    aer = rp.aer_cap
    _, status = pci_read_config_dword(rp, aer + PCI_ERR_ROOT_STATUS)
    if not status & AER_ERR_STATUS_MASK:
        return IRQ_NONE
    _, src = pci_read_config_dword(rp, aer + PCI_ERR_ROOT_ERR_SRC)
    pci_write_config_dword(rp, aer + PCI_ERR_ROOT_STATUS, status)
    flags = spin_lock_irqsave(rpc.fifo_lock)
    full = len(rpc.aer_fifo) >= AER_ERROR_SOURCES_MAX
    if not full:
        rpc.aer_fifo.append((status, src))
        rpc.received.append((status, src))
    spin_unlock_irqrestore(rpc.fifo_lock, flags)
    if not full:
        schedule_work(rpc.work)  # Linux: return IRQ_WAKE_THREAD
    return IRQ_HANDLED


def _bdf(port: Any, rid: int) -> str:
    return (f"{pci_domain_nr(port.bus):04x}:{rid >> 8:02x}:{PCI_SLOT(rid & 0xFF):02x}."
            f"{PCI_FUNC(rid & 0xFF)}")


def aer_print_port_info(rpc: aer_rpc, severity: int, multi: bool, rid: int) -> None:
    line = (f"AER: {'Multiple ' if multi else ''}{aer_error_severity_string[severity]} "
            f"error message received from {_bdf(rpc.rpd, rid)}")
    rpc.log.append(line)
    pci_info(rpc.rpd, line)


def aer_isr_one_error(rpc: aer_rpc, status: int, src: int) -> None:
    """Correctable first, then uncorrectable, as Linux reports them."""
    if status & PCI_ERR_ROOT_COR_RCV:
        aer_print_port_info(rpc, AER_CORRECTABLE, bool(status & PCI_ERR_ROOT_MULTI_COR_RCV),
                            src & 0xFFFF)
    if status & PCI_ERR_ROOT_UNCOR_RCV:
        sev = AER_FATAL if status & PCI_ERR_ROOT_FATAL_RCV else AER_NONFATAL
        aer_print_port_info(rpc, sev, bool(status & PCI_ERR_ROOT_MULTI_UNCOR_RCV),
                            (src >> 16) & 0xFFFF)


def aer_isr(dev: pcie_device) -> None:
    """The IRQ thread: log every error source the hard handler queued."""
    rpc: aer_rpc | None = get_service_data(dev)
    if rpc is None:
        return
    while True:
        flags = spin_lock_irqsave(rpc.fifo_lock)
        e = rpc.aer_fifo.pop(0) if rpc.aer_fifo else None
        spin_unlock_irqrestore(rpc.fifo_lock, flags)
        if e is None:
            return
        aer_isr_one_error(rpc, *e)


def _aer_free_irq(dev: pcie_device) -> None:
    """The devres release of the IRQ (Linux: devm_request_threaded_irq). The thread is
    stopped with the IRQ, as free_irq stops an IRQ thread."""
    dev.k.irq.free_irq(dev.irq, dev)
    rpc = get_service_data(dev)
    if rpc is not None:
        cancel_work_sync(rpc.work)


def aer_probe(dev: pcie_device) -> int:
    port = dev.port
    if pci_pcie_type(port) not in (PCI_EXP_TYPE_RC_EC, PCI_EXP_TYPE_ROOT_PORT):
        return -ENODEV
    k = dev.k
    rpc = devm_kzalloc(dev.device, aer_rpc, dev, owner="pcieport")
    if rpc is None:
        return -ENOMEM
    set_service_data(dev, rpc)
    status = k.irq.request_irq(dev.irq, aer_irq, IRQF_SHARED, "aerdrv", dev)
    if status:
        pci_err(port, f"AER: request AER IRQ {dev.irq} failed")
        return status
    if devm_add_action(dev.device, _aer_free_irq, dev):
        _aer_free_irq(dev)
        return -ENOMEM
    aer_enable_rootport(rpc)
    pci_info(port, f"AER: enabled with IRQ {dev.irq}")  # dev_fmt "AER: "
    return 0


def aer_remove(dev: pcie_device) -> None:
    aer_disable_rootport(get_service_data(dev))


def pcie_aer_init(k: Kernel) -> int:
    drv = pcie_port_service_driver("aer", PCIE_PORT_SERVICE_AER, probe=aer_probe,
                                   remove=aer_remove)
    return pcie_port_service_register(k, drv)
