"""The NVMe PCI driver, as far as probe, interrupts and removal go
(``drivers/nvme/host/pci.c`` with the parts of ``core.c`` they use).

Binding: any function of class 0x010802 (NVM Express). ``nvme_probe`` does
what Linux splits between the probe and the asynchronous ``nvme_reset_work``,
in one go:

1. ``nvme_pci_alloc_dev``: the ``nvme_dev`` and an instance number from the
   kernel's ``nvme_instance_ida`` (names ``nvme0``, ``nvme1``..., lowest free
   first, as ``ida_alloc`` gives them).
2. ``nvme_dev_map``: ``pci_request_mem_regions(pdev, "nvme")`` and a mapping
   of BAR0's registers and doorbells (``NVME_REG_DBS + 4096`` bytes).
3. ``nvme_pci_enable``: ``pci_enable_device_mem``, bus mastering, a 64-bit
   DMA mask; a controller whose CSTS reads all ones is gone (-ENODEV); one
   vector of any type for the admin queue (``pci_alloc_irq_vectors(pdev, 1,
   1, PCI_IRQ_ALL_TYPES)``); read CAP: I/O queue depth ``min(MQES + 1,
   io_queue_depth = 1024)``, doorbell stride ``4 << DSTRD``.
4. ``nvme_pci_configure_admin_queue``: disable the controller (CC.EN = 0,
   wait until CSTS.RDY = 0), allocate the admin queue (32 entries, its
   submission and completion entries in coherent DMA memory,
   :mod:`vmdsim.kernel.dma`), write AQA and the queues' bus addresses to ASQ
   and ACQ, enable it (CC: NVM command set, 4 KiB pages, round-robin,
   64-byte SQ / 16-byte CQ entries, EN; wait for CSTS.RDY) and request its
   IRQ ``nvme<N>q0`` on vector 0.
5. ``nvme_setup_io_queues``: ask for one I/O queue per CPU
   (``num_possible_cpus()``; no write or poll queues), cut to what the
   controller grants (``nvme_set_queue_count``: the admin command Set
   Features, Number of Queues, :mod:`vmdsim.drivers.nvme_admin`); free the
   admin IRQ and the
   single vector; allocate ``1 + nr_io_queues`` vectors with
   ``pci_alloc_irq_vectors_affinity(pdev, 1, 1 + nr_io_queues,
   PCI_IRQ_ALL_TYPES | PCI_IRQ_AFFINITY, {pre_vectors = 1})`` — the admin
   vector is not spread, each I/O vector gets its own group of CPUs, managed
   by the kernel; ``max_qid = max(vectors - 1, 1)``; request the admin IRQ
   again; then create I/O queues 1..max_qid with the admin commands Create
   I/O Completion Queue (interrupt vector q, or 0 if only one vector came)
   and Create I/O Submission Queue, each with its IRQ ``nvme<N>q<q>``; a
   queue the controller refuses is left out (Linux goes on with fewer).
6. ``nvme_start_ctrl``: post an Asynchronous Event Request, which completes
   (on the admin queue) when the controller reports an event.

Every IRQ is requested as ``pci_request_irq`` does: ``IRQF_SHARED``,
``dev_id`` = the queue. With a single vector the admin queue and I/O queue 1
share it, so every interrupt calls both handlers and one of them finds
nothing: the shared-vector case whose cost the simulator measures.

The handler ``nvme_irq`` asks its queue whether it has work. On the admin
queue it walks the completion entries in DMA memory by phase tag, as Linux
does. For I/O queues the model's controller keeps no entries in memory and
offers the same fact by MMIO (see :mod:`vmdsim.hw.nvme`): a read of the
queue's completion-queue head doorbell returns how many posted entries are
unconsumed. Work -> consume it all by writing the new head to the doorbell
(``nvme_ring_cq_doorbell``), count the call as *real*, ``IRQ_HANDLED``; none
(or a device that reads all ones) -> count it as *spurious*, ``IRQ_NONE``.
Per-queue counts: ``irq_real``, ``irq_spurious``, ``completions`` (entries
consumed), ``irq_cpus`` (calls per CPU); :func:`nvme_queue_stats` lists them
for views.

Removal (``nvme_remove``): if the device is gone (surprise removal: config
reads all ones, or the PCI core marked it disconnected) it is dead at once;
``nvme_dev_disable(shutdown=True)`` — if the controller is alive, a normal
shutdown notification (CC.SHN, wait for CSTS.SHST complete, as Linux; EN
stays set until the next probe's reset) — then every queue is suspended:
``pci_free_irq`` (``free_irq``: waits for a running handler), after which the
queue is marked ``irq_freed``; ``pci_free_irq_vectors``;
``pci_disable_device``. Then the queues and the mapping are freed and the
instance number returned. A handler that runs on a queue after its
``free_irq`` returned raises
:class:`~vmdsim.errors.Violation` ``("handler-after-free_irq")``; one
that runs after the queue was freed is a KASAN use-after-free report.

Any probe failure (including every ``k.mem`` allocation failing in turn)
unwinds as Linux's error labels do: nothing is left allocated or requested.

Where the model simplifies: no I/O commands are issued (completions come
from the hardware side); of the admin commands only those queue setup needs
(no Identify, namespaces, block-layer tag sets beyond a command id, resets);
the I/O queues are not deleted with admin commands before a shutdown (the
controller's shutdown and the next reset drop them). No CMB, HMB, doorbell
buffer, polled queues, INTx, runtime PM or suspend.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, cast

from vmdsim.drivers.nvme_admin import (
    CQE_SIZE,
    NVME_AQ_DEPTH,
    NVME_CQ_IRQ_ENABLED,
    NVME_FEAT_NUM_QUEUES,
    NVME_QUEUE_PHYS_CONTIG,
    NVMEQ_ENABLED,
    NVMEQ_POLLED,
    SQE_SIZE,
    ctrl_log,
    nvme_admin_create_cq,
    nvme_admin_create_sq,
    nvme_admin_delete_cq,
    nvme_admin_delete_sq,
    nvme_admin_set_features,
    nvme_command,
    nvme_pci_submit_async_event,
    nvme_poll_admin_cq,
    nvme_submit_sync_cmd,
)
from vmdsim.errors import Violation
from vmdsim.kernel.dma import dma_alloc_coherent, dma_coherent, dma_free_coherent
from vmdsim.kernel.errno import EBUSY, EIO, ENODEV, ENOMEM
from vmdsim.kernel.idr import ida, ida_alloc, ida_free
from vmdsim.kernel.io import iomem, readl, writel
from vmdsim.kernel.irq.affinity import irq_affinity
from vmdsim.kernel.irq.flags import IRQ_HANDLED, IRQ_NONE
from vmdsim.kernel.locking import mutex, mutex_lock, mutex_unlock
from vmdsim.kernel.pci import (
    DMA_BIT_MASK,
    PCI_DEVICE_CLASS,
    PCI_POSSIBLE_ERROR,
    dma_set_mask_and_coherent,
    pci_disable_device,
    pci_driver,
    pci_enable_device_mem,
    pci_get_drvdata,
    pci_iomap,
    pci_iounmap,
    pci_is_enabled,
    pci_name,
    pci_register_driver,
    pci_release_mem_regions,
    pci_request_mem_regions,
    pci_resource_len,
    pci_save_state,
    pci_set_drvdata,
    pci_set_master,
    pci_unregister_driver,
)
from vmdsim.kernel.pci.msi import (
    PCI_IRQ_AFFINITY,
    PCI_IRQ_ALL_TYPES,
    pci_alloc_irq_vectors,
    pci_alloc_irq_vectors_affinity,
    pci_free_irq,
    pci_free_irq_vectors,
    pci_irq_vector,
    pci_request_irq,
)
from vmdsim.kernel.pci.pci_h import pci_channel_io_normal, pci_dev_is_disconnected
from vmdsim.kernel.pci.probe import pci_bus_read_dev_vendor_id
from vmdsim.kernel.printk import KERN_ERR, KERN_INFO
from vmdsim.kernel.sched import current
from vmdsim.kernel.shared import KObject, init_private, shared

if TYPE_CHECKING:
    from vmdsim.kernel.core import Kernel

# include/linux/nvme.h
NVME_REG_CAP = 0x0000
NVME_REG_VS = 0x0008
NVME_REG_CC = 0x0014
NVME_REG_CSTS = 0x001C
NVME_REG_AQA = 0x0024
NVME_REG_ASQ = 0x0028
NVME_REG_ACQ = 0x0030
NVME_REG_DBS = 0x1000
NVME_CC_ENABLE = 1 << 0
NVME_CC_CSS_NVM = 0 << 4
NVME_CC_MPS_SHIFT = 7
NVME_CC_AMS_RR = 0 << 11
NVME_CC_SHN_NONE = 0 << 14
NVME_CC_SHN_NORMAL = 1 << 14
NVME_CC_SHN_MASK = 3 << 14
NVME_CC_IOSQES = 6 << 16  # 64-byte submission entries
NVME_CC_IOCQES = 4 << 20  # 16-byte completion entries
NVME_CSTS_RDY = 1 << 0
NVME_CSTS_CFS = 1 << 1
NVME_CSTS_SHST_CMPLT = 2 << 2
NVME_CSTS_SHST_MASK = 3 << 2
NVME_CTRL_PAGE_SHIFT = 12


def NVME_CAP_MQES(cap: int) -> int:  # noqa: N802
    return cap & 0xFFFF


def NVME_CAP_STRIDE(cap: int) -> int:  # noqa: N802
    return (cap >> 32) & 0xF


def NVME_CAP_TIMEOUT(cap: int) -> int:  # noqa: N802
    return (cap >> 24) & 0xFF


IO_QUEUE_DEPTH = 1024  # the io_queue_depth module parameter's default
NVME_WAIT_READY_READS = 64  # the model has no clock: how many CSTS reads stand for CAP.TO


# ctrl state (a subset of enum nvme_ctrl_state)
NVME_CTRL_NEW = "new"
NVME_CTRL_CONNECTING = "connecting"
NVME_CTRL_LIVE = "live"
NVME_CTRL_DELETING = "deleting"
NVME_CTRL_DEAD = "dead"


OWNER = "nvme"


class nvme_queue(KObject):
    """``struct nvme_queue``: one submission/completion queue pair and its IRQ.

    Shared (the handler and the teardown both touch them): ``cq_head``, ``flags``
    (``NVMEQ_ENABLED``) and ``irq_freed`` (set once ``free_irq`` returned).
    """

    cq_head = shared()
    flags = shared()
    irq_freed = shared()

    def __init__(self, dev: nvme_dev, qid: int, depth: int) -> None:
        init_private(self, cq_head=0, flags=0, irq_freed=False)
        self.dev = dev
        self.qid = qid
        self.q_depth = depth
        self.cq_vector = -1
        self.q_db: iomem | None = None
        self.sq_tail = 0
        self.cq_phase = 1
        self.sq_cmds: dma_coherent | None = None  # submission entries, in DMA memory
        self.cqes: dma_coherent | None = None  # completion entries, in DMA memory
        self.irq_real = 0  # model only: handler calls that found work
        self.irq_spurious = 0  # model only: handler calls that found none
        self.completions = 0  # model only: completion entries consumed
        self.irq_cpus: dict[int, int] = {}  # model only: handler calls per CPU

    @property
    def name(self) -> str:
        return f"{self.dev.name}q{self.qid}"

    def __repr__(self) -> str:
        return f"<nvme_queue {self.name}>"


class nvme_dev(KObject):
    """``struct nvme_dev`` with its ``struct nvme_ctrl`` folded in."""

    def __init__(self, pdev: Any, instance: int, nr_allocated_queues: int) -> None:
        self.pdev = pdev
        self.k = pdev.k
        self.instance = instance
        self.nr_allocated_queues = nr_allocated_queues
        self.queues: list[nvme_queue | None] = [None] * nr_allocated_queues
        self.queue_count = 0  # ctrl.queue_count: queues allocated
        self.online_queues = 0
        self.max_qid = 0
        self.num_vecs = 0
        self.q_depth = 0
        self.db_stride = 1
        self.cap = 0
        self.vs = 0
        self.ctrl_config = 0
        self.bar: iomem | None = None
        self.bar_mapped_size = 0
        self.dbs: iomem | None = None
        self.state = NVME_CTRL_NEW
        self.admin_tags: dict[int, Any] = {}  # admin commands in flight, by command id
        self.async_events = 0  # model only: Asynchronous Event Request completions seen
        self.shutdown_lock = mutex(f"nvme{instance}.shutdown_lock", key="nvme_dev.shutdown_lock")

    @property
    def name(self) -> str:
        return f"nvme{self.instance}"

    def __repr__(self) -> str:
        return f"<nvme_dev {self.name} at {pci_name(self.pdev)}>"


class nvme_core:
    """``nvme_core_of(k)``: the driver's globals (``nvme_instance_ida``, the registered driver)."""

    def __init__(self, k: Kernel) -> None:
        self.k = k
        self.instance_ida = ida()  # nvme_instance_ida
        self.devices: list[nvme_dev] = []  # bound controllers, in probe order
        # model only: the counters of freed queues, by queue name, so totals outlive them
        self.retired: dict[str, dict[str, Any]] = {}
        self.driver: pci_driver | None = None
        self.io_queue_depth = IO_QUEUE_DEPTH
        self.write_queues = 0
        self.poll_queues = 0

    @property
    def instances(self) -> set[int]:
        """The instance numbers in use (``nvme<N>``)."""
        return self.instance_ida.used


def nvme_core_of(k: Kernel) -> nvme_core:
    """The NVMe driver's globals (``nvme_core.ko``'s statics), made on first use."""
    return k.module_state(nvme_core)


# -- register helpers ------------------------------------------------------------------------
def lo_hi_readq(addr: iomem) -> int:
    return readl(addr) | readl(addr + 4) << 32


def lo_hi_writeq(value: int, addr: iomem) -> None:
    writel(value & 0xFFFFFFFF, addr)
    writel(value >> 32, addr + 4)


def pci_device_is_present(pdev: Any) -> bool:
    if pci_dev_is_disconnected(pdev):
        return False
    ok, _ = pci_bus_read_dev_vendor_id(pdev.bus, pdev.devfn)
    return ok


def nvme_wait_ready(dev: nvme_dev, mask: int, val: int, op: str) -> int:
    """Poll CSTS until ``csts & mask == val``; -ENODEV if the device is gone or never gets
    there (a bounded number of reads stands for CAP.TO)."""
    for _ in range(NVME_WAIT_READY_READS):
        csts = readl(cast(iomem, dev.bar) + NVME_REG_CSTS)
        if csts == 0xFFFFFFFF:
            return -ENODEV
        if csts & mask == val:
            return 0
    ctrl_log(dev, KERN_ERR, f"Device not ready; aborting {op}, CSTS={csts:#x}")
    return -ENODEV


def nvme_disable_ctrl(dev: nvme_dev, shutdown: bool) -> int:
    dev.ctrl_config &= ~NVME_CC_SHN_MASK
    if shutdown:
        dev.ctrl_config |= NVME_CC_SHN_NORMAL
    else:
        dev.ctrl_config &= ~NVME_CC_ENABLE
    writel(dev.ctrl_config, cast(iomem, dev.bar) + NVME_REG_CC)
    if shutdown:
        return nvme_wait_ready(dev, NVME_CSTS_SHST_MASK, NVME_CSTS_SHST_CMPLT, "shutdown")
    return nvme_wait_ready(dev, NVME_CSTS_RDY, 0, "reset")


def nvme_enable_ctrl(dev: nvme_dev) -> int:
    dev.ctrl_config = (NVME_CC_CSS_NVM | (NVME_CTRL_PAGE_SHIFT - 12) << NVME_CC_MPS_SHIFT
                       | NVME_CC_AMS_RR | NVME_CC_SHN_NONE | NVME_CC_IOSQES | NVME_CC_IOCQES
                       | NVME_CC_ENABLE)
    writel(dev.ctrl_config, cast(iomem, dev.bar) + NVME_REG_CC)
    return nvme_wait_ready(dev, NVME_CSTS_RDY, NVME_CSTS_RDY, "initialisation")


# -- IRQs (pci_request_irq / pci_free_irq) ----------------------------------------------------
def queue_request_irq(nvmeq: nvme_queue) -> int:
    nvmeq.irq_freed = False
    return pci_request_irq(nvmeq.dev.pdev, nvmeq.cq_vector, nvme_irq, None, nvmeq, nvmeq.name)


# -- the interrupt handler ------------------------------------------------------------------
def nvme_poll_cq(nvmeq: nvme_queue) -> int:
    """Consume every posted completion of ``nvmeq``; how many there were."""
    if nvmeq.qid == 0:
        return nvme_poll_admin_cq(nvmeq)
    db = cast(iomem, nvmeq.q_db) + 4  # the completion-queue head doorbell
    pending = readl(db)
    if pending == 0 or PCI_POSSIBLE_ERROR(pending) or pending >= nvmeq.q_depth:
        return 0  # none, or the device is gone (reads all ones)
    head = (nvmeq.cq_head + pending) % nvmeq.q_depth
    nvmeq.cq_head = head
    writel(head, db)  # nvme_ring_cq_doorbell
    nvmeq.completions += pending
    return pending


def nvme_irq(irq: int, nvmeq: nvme_queue) -> int:
    """The queue's handler: real if its completion queue had work, else spurious."""
    if nvmeq.irq_freed:
        raise Violation("handler-after-free_irq",
                        f"nvme_irq({irq}) ran for {nvmeq.name} after free_irq({irq}) returned")
    cpu = current().cpu.id
    nvmeq.irq_cpus[cpu] = nvmeq.irq_cpus.get(cpu, 0) + 1
    if nvme_poll_cq(nvmeq):
        nvmeq.irq_real += 1
        return IRQ_HANDLED
    nvmeq.irq_spurious += 1
    return IRQ_NONE


# -- queues ---------------------------------------------------------------------------------
def nvme_alloc_queue(dev: nvme_dev, qid: int, depth: int) -> int:
    if dev.queue_count > qid:
        return 0
    nvmeq = dev.k.mem.kzalloc(nvme_queue, dev, qid, depth, owner=OWNER)
    if nvmeq is None:
        return -ENOMEM
    nvmeq.cqes = dma_alloc_coherent(dev.k, dev.pdev, depth * CQE_SIZE, owner=OWNER)
    if nvmeq.cqes is None:
        dev.k.mem.kfree(nvmeq)
        return -ENOMEM
    nvmeq.sq_cmds = dma_alloc_coherent(dev.k, dev.pdev, depth * SQE_SIZE, owner=OWNER)
    if nvmeq.sq_cmds is None:
        dma_free_coherent(dev.k, nvmeq.cqes)
        dev.k.mem.kfree(nvmeq)
        return -ENOMEM
    nvmeq.q_db = cast(iomem, dev.dbs) + qid * 2 * dev.db_stride * 4
    dev.queues[qid] = nvmeq
    dev.queue_count += 1
    return 0


def nvme_init_queue(nvmeq: nvme_queue, qid: int) -> None:
    nvmeq.sq_tail = 0
    nvmeq.cq_head = 0
    nvmeq.cq_phase = 1
    nvmeq.dev.online_queues += 1


def nvme_suspend_queue(dev: nvme_dev, qid: int) -> None:
    """Take the queue offline and free its IRQ; mark it freed once ``free_irq`` returned."""
    nvmeq = cast(nvme_queue, dev.queues[qid])  # qid < queue_count: allocated
    flags = nvmeq.flags
    if not flags & NVMEQ_ENABLED:
        return
    nvmeq.flags = flags & ~NVMEQ_ENABLED
    dev.online_queues -= 1
    if not flags & NVMEQ_POLLED:
        pci_free_irq(dev.pdev, nvmeq.cq_vector, nvmeq)
        nvmeq.irq_freed = True


def nvme_suspend_io_queues(dev: nvme_dev) -> None:
    for qid in range(dev.queue_count - 1, 0, -1):
        nvme_suspend_queue(dev, qid)


def nvme_free_queues(dev: nvme_dev, lowest: int) -> None:
    retired = nvme_core_of(dev.k).retired
    for qid in range(dev.queue_count - 1, lowest - 1, -1):
        nvmeq = cast(nvme_queue, dev.queues[qid])  # qid < queue_count: allocated, both buffers
        _fold(retired.setdefault(nvmeq.name, _zero_counts()), _counts(nvmeq))
        dma_free_coherent(dev.k, cast(dma_coherent, nvmeq.cqes))  # nvme_free_queue
        dma_free_coherent(dev.k, cast(dma_coherent, nvmeq.sq_cmds))
        dev.k.mem.kfree(nvmeq)
        dev.queues[qid] = None
        dev.queue_count -= 1


def adapter_alloc_cq(dev: nvme_dev, qid: int, nvmeq: nvme_queue, vector: int) -> int:
    flags = NVME_QUEUE_PHYS_CONTIG | (NVME_CQ_IRQ_ENABLED if vector != -1 else 0)
    cmd = nvme_command(nvme_admin_create_cq, prp1=cast(dma_coherent, nvmeq.cqes).dma_handle,
                       cdw10=qid | (nvmeq.q_depth - 1) << 16, cdw11=flags | max(vector, 0) << 16)
    return nvme_submit_sync_cmd(dev, cmd)[0]


def adapter_alloc_sq(dev: nvme_dev, qid: int, nvmeq: nvme_queue) -> int:
    cmd = nvme_command(nvme_admin_create_sq, prp1=cast(dma_coherent, nvmeq.sq_cmds).dma_handle,
                       cdw10=qid | (nvmeq.q_depth - 1) << 16,
                       cdw11=NVME_QUEUE_PHYS_CONTIG | qid << 16)
    return nvme_submit_sync_cmd(dev, cmd)[0]


def adapter_delete_queue(dev: nvme_dev, opcode: int, qid: int) -> int:
    return nvme_submit_sync_cmd(dev, nvme_command(opcode, cdw10=qid))[0]


def nvme_create_queue(nvmeq: nvme_queue, qid: int) -> int:
    """Create I/O CQ ``qid`` on its vector, then I/O SQ ``qid``, then request the IRQ.

    A command the controller refuses returns its (positive) status; the caller then
    goes on with fewer queues, as Linux does."""
    dev = nvmeq.dev
    vector = 0 if dev.num_vecs == 1 else qid
    result = adapter_alloc_cq(dev, qid, nvmeq, vector)
    if result:
        return result
    result = adapter_alloc_sq(dev, qid, nvmeq)
    if result < 0:
        return result
    if result:
        adapter_delete_queue(dev, nvme_admin_delete_cq, qid)
        return result
    nvmeq.cq_vector = vector
    nvme_init_queue(nvmeq, qid)
    result = queue_request_irq(nvmeq)
    if result < 0:
        dev.online_queues -= 1
        adapter_delete_queue(dev, nvme_admin_delete_sq, qid)
        adapter_delete_queue(dev, nvme_admin_delete_cq, qid)
        return result
    nvmeq.flags = nvmeq.flags | NVMEQ_ENABLED
    return result


def nvme_create_io_queues(dev: nvme_dev) -> int:
    ret = 0
    for i in range(dev.queue_count, dev.max_qid + 1):
        if nvme_alloc_queue(dev, i, dev.q_depth):
            ret = -ENOMEM
            break
    top = min(dev.max_qid, dev.queue_count - 1)
    for i in range(dev.online_queues, top + 1):
        r = nvme_create_queue(cast(nvme_queue, dev.queues[i]), i)
        if r:
            ret = r
            break
    return ret if ret < 0 else 0


def nvme_max_io_queues(dev: nvme_dev) -> int:
    core = nvme_core_of(dev.k)
    return dev.k.ncpus + core.write_queues + core.poll_queues  # num_possible_cpus() + ...


def nvme_set_queue_count(dev: nvme_dev, count: int) -> int:
    """Set Features (Number of Queues): how many of ``count`` I/O queues the controller
    grants (0 if it refuses the command: the admin queue alone stays usable), or an errno."""
    q_count = (count - 1) | (count - 1) << 16
    status, result = nvme_submit_sync_cmd(
        dev, nvme_command(nvme_admin_set_features, cdw10=NVME_FEAT_NUM_QUEUES, cdw11=q_count))
    if status < 0:
        return status
    if status > 0:
        ctrl_log(dev, KERN_ERR, f"Could not set queue count ({status})")
        return 0
    return min(count, min(result & 0xFFFF, result >> 16) + 1)


def nvme_setup_irqs(dev: nvme_dev, nr_io_queues: int) -> int:
    affd = irq_affinity(pre_vectors=1)
    irq_queues = 1 + nr_io_queues  # the admin queue and every (non-polled) I/O queue
    return pci_alloc_irq_vectors_affinity(dev.pdev, 1, irq_queues,
                                          PCI_IRQ_ALL_TYPES | PCI_IRQ_AFFINITY, affd)


def nvme_setup_io_queues(dev: nvme_dev) -> int:
    adminq = cast(nvme_queue, dev.queues[0])  # nvme_pci_configure_admin_queue made it
    nr_io_queues = nvme_set_queue_count(dev, dev.nr_allocated_queues - 1)
    if nr_io_queues <= 0:
        return nr_io_queues
    mutex_lock(dev.shutdown_lock)
    try:
        # Deregister the admin queue's interrupt, and give back the single setup vector.
        if adminq.flags & NVMEQ_ENABLED:
            adminq.flags = adminq.flags & ~NVMEQ_ENABLED
            pci_free_irq(dev.pdev, 0, adminq)
            adminq.irq_freed = True
        pci_free_irq_vectors(dev.pdev)
        result = nvme_setup_irqs(dev, nr_io_queues)
        if result <= 0:
            return -EIO
        dev.num_vecs = result
        dev.max_qid = max(result - 1, 1)
        result = queue_request_irq(adminq)
        if result:
            return result
        adminq.flags = adminq.flags | NVMEQ_ENABLED
    finally:
        mutex_unlock(dev.shutdown_lock)
    result = nvme_create_io_queues(dev)
    if result:
        return result
    ctrl_log(dev, KERN_INFO, f"{dev.online_queues - 1}/0/0 default/read/poll queues")
    return 0


# -- enable / disable ------------------------------------------------------------------------
def nvme_dev_map(dev: nvme_dev) -> int:
    pdev = dev.pdev
    if pci_request_mem_regions(pdev, "nvme"):
        return -ENODEV
    size = min(NVME_REG_DBS + 4096, pci_resource_len(pdev, 0))
    dev.bar = pci_iomap(pdev, 0, size)
    if dev.bar is None:
        pci_release_mem_regions(pdev)
        return -ENOMEM
    dev.bar_mapped_size = size
    return 0


def nvme_dev_unmap(dev: nvme_dev) -> None:
    if dev.bar is not None:
        pci_iounmap(dev.pdev, dev.bar)
        dev.bar = None
    pci_release_mem_regions(dev.pdev)


def nvme_pci_enable(dev: nvme_dev) -> int:
    pdev = dev.pdev
    if pci_enable_device_mem(pdev):
        return -ENOMEM
    pci_set_master(pdev)
    dma_set_mask_and_coherent(pdev.dev, DMA_BIT_MASK(64))
    if readl(cast(iomem, dev.bar) + NVME_REG_CSTS) == 0xFFFFFFFF:
        pci_disable_device(pdev)
        return -ENODEV
    # A single vector of any type for the admin queue during setup.
    result = pci_alloc_irq_vectors(pdev, 1, 1, PCI_IRQ_ALL_TYPES)
    if result < 0:
        pci_disable_device(pdev)
        return result
    dev.cap = lo_hi_readq(cast(iomem, dev.bar) + NVME_REG_CAP)
    dev.vs = readl(cast(iomem, dev.bar) + NVME_REG_VS)
    dev.q_depth = min(NVME_CAP_MQES(dev.cap) + 1, nvme_core_of(dev.k).io_queue_depth)
    dev.db_stride = 1 << NVME_CAP_STRIDE(dev.cap)
    dev.dbs = cast(iomem, dev.bar) + NVME_REG_DBS
    pci_save_state(pdev)
    return 0


def nvme_pci_disable(dev: nvme_dev) -> None:
    pdev = dev.pdev
    pci_free_irq_vectors(pdev)
    if pci_is_enabled(pdev):
        pci_disable_device(pdev)


def nvme_pci_ctrl_is_dead(dev: nvme_dev) -> bool:
    pdev = dev.pdev
    if not pci_is_enabled(pdev) or not pci_device_is_present(pdev):
        return True
    if pdev.error_state != pci_channel_io_normal:
        return True
    csts = readl(cast(iomem, dev.bar) + NVME_REG_CSTS)
    return bool(csts & NVME_CSTS_CFS) or not csts & NVME_CSTS_RDY


def nvme_dev_disable(dev: nvme_dev, shutdown: bool) -> None:
    """Quiesce: shut the controller down if it is alive, free every queue's IRQ (I/O
    queues last first, then the admin queue), free the vectors, disable the device."""
    mutex_lock(dev.shutdown_lock)
    try:
        dead = nvme_pci_ctrl_is_dead(dev)
        if not dead and dev.queue_count > 0:
            # (Delete I/O queues: admin commands, not modelled.)
            nvme_disable_ctrl(dev, shutdown)
        nvme_suspend_io_queues(dev)
        if dev.queue_count > 0:
            nvme_suspend_queue(dev, 0)
        nvme_pci_disable(dev)
    finally:
        mutex_unlock(dev.shutdown_lock)


def nvme_pci_configure_admin_queue(dev: nvme_dev) -> int:
    result = nvme_disable_ctrl(dev, False)
    if result < 0:
        return result
    result = nvme_alloc_queue(dev, 0, NVME_AQ_DEPTH)
    if result:
        return result
    nvmeq = cast(nvme_queue, dev.queues[0])  # just allocated
    aqa = nvmeq.q_depth - 1
    writel(aqa | aqa << 16, cast(iomem, dev.bar) + NVME_REG_AQA)
    lo_hi_writeq(cast(dma_coherent, nvmeq.sq_cmds).dma_handle, cast(iomem, dev.bar) + NVME_REG_ASQ)
    lo_hi_writeq(cast(dma_coherent, nvmeq.cqes).dma_handle, cast(iomem, dev.bar) + NVME_REG_ACQ)
    result = nvme_enable_ctrl(dev)
    if result:
        return result
    nvmeq.cq_vector = 0
    nvme_init_queue(nvmeq, 0)
    result = queue_request_irq(nvmeq)
    if result:
        dev.online_queues -= 1
        return result
    nvmeq.flags = nvmeq.flags | NVMEQ_ENABLED
    return 0


# -- probe / remove -------------------------------------------------------------------------
def nvme_pci_alloc_dev(pdev: Any) -> nvme_dev | None:
    core = nvme_core_of(pdev.k)
    instance = ida_alloc(core.instance_ida)
    nr = pdev.k.ncpus + core.write_queues + core.poll_queues + 1
    dev = pdev.k.mem.kzalloc(nvme_dev, pdev, instance, nr, owner=OWNER)
    if dev is None:
        ida_free(core.instance_ida, instance)
    return dev


def nvme_uninit_ctrl(dev: nvme_dev) -> None:
    ida_free(nvme_core_of(dev.k).instance_ida, dev.instance)
    dev.k.mem.kfree(dev)


def nvme_probe(pdev: Any, id: Any) -> int:
    dev = nvme_pci_alloc_dev(pdev)
    if dev is None:
        return -ENOMEM
    ctrl_log(dev, KERN_INFO, f"pci function {pci_name(pdev)}")
    result = nvme_dev_map(dev)
    if result:
        nvme_uninit_ctrl(dev)
        return result
    result = nvme_pci_enable(dev)
    if result:
        nvme_dev_unmap(dev)
        nvme_uninit_ctrl(dev)
        return result
    dev.state = NVME_CTRL_CONNECTING
    result = nvme_pci_configure_admin_queue(dev)
    if not result:
        result = nvme_setup_io_queues(dev)
    if result:
        nvme_dev_disable(dev, True)
        nvme_free_queues(dev, 0)
        nvme_dev_unmap(dev)
        nvme_uninit_ctrl(dev)
        return result
    dev.state = NVME_CTRL_LIVE
    nvme_pci_submit_async_event(dev)  # nvme_start_ctrl -> nvme_queue_async_events
    pci_set_drvdata(pdev, dev)
    nvme_core_of(pdev.k).devices.append(dev)
    return 0


def nvme_remove(pdev: Any) -> None:
    dev: nvme_dev = pci_get_drvdata(pdev)
    dev.state = NVME_CTRL_DELETING
    pci_set_drvdata(pdev, None)
    if not pci_device_is_present(pdev):
        dev.state = NVME_CTRL_DEAD
        nvme_dev_disable(dev, True)
    nvme_dev_disable(dev, True)
    nvme_free_queues(dev, 0)
    nvme_dev_unmap(dev)
    nvme_core_of(pdev.k).devices.remove(dev)
    nvme_uninit_ctrl(dev)


def nvme_shutdown(pdev: Any) -> None:
    dev = pci_get_drvdata(pdev)
    if dev is not None:
        nvme_dev_disable(dev, True)


def nvme_id_table() -> list:
    return [PCI_DEVICE_CLASS(0x010802, 0xFFFFFF)]  # PCI_CLASS_STORAGE_EXPRESS


def nvme_init(k: Kernel) -> int:
    """``module_init(nvme_init)``: register the ``nvme`` PCI driver with kernel ``k``.

    Before ``boot`` the drives bind during boot; after it, at once. Runs as a task on
    CPU 0 (``kernel_init``) unless called from one. 0, or -EBUSY if already done."""
    ctx = current()
    if ctx.kind == "task" and ctx.cpu.id >= 0:
        return _nvme_init(k)
    with k.on_cpu(0, "kernel_init"):
        return _nvme_init(k)


def _nvme_init(k: Kernel) -> int:
    core = nvme_core_of(k)
    if core.driver is not None:
        return -EBUSY
    drv = pci_driver("nvme", nvme_id_table(), probe=nvme_probe, remove=nvme_remove,
                     shutdown=nvme_shutdown)
    core.driver = drv
    return pci_register_driver(k, drv)


def nvme_exit(k: Kernel) -> None:
    """``module_exit``: unbind every controller and unregister the driver."""
    core = nvme_core_of(k)
    if core.driver is not None:
        pci_unregister_driver(k, core.driver)
        core.driver = None


def _zero_counts() -> dict[str, Any]:
    return {"real": 0, "spurious": 0, "completions": 0, "calls_per_cpu": {}}


def _counts(q: nvme_queue) -> dict[str, Any]:
    return {"real": q.irq_real, "spurious": q.irq_spurious, "completions": q.completions,
            "calls_per_cpu": dict(q.irq_cpus)}


def _fold(into: dict[str, Any], more: dict[str, Any]) -> None:
    for key in ("real", "spurious", "completions"):
        into[key] += more[key]
    for cpu, n in more["calls_per_cpu"].items():
        into["calls_per_cpu"][cpu] = into["calls_per_cpu"].get(cpu, 0) + n


def nvme_queue_totals(k: Kernel) -> dict[str, dict[str, Any]]:
    """Per queue name, the handler counts of every queue of that name since boot, live or
    freed (a drive pulled and put back counts on): real, spurious, completions, calls
    per CPU. The run's accounting takes differences of these."""
    out = {name: _zero_counts() for name in nvme_core_of(k).retired}
    for name, c in nvme_core_of(k).retired.items():
        _fold(out[name], c)
    for dev in nvme_core_of(k).devices:
        for q in dev.queues:
            if q is not None:
                _fold(out.setdefault(q.name, _zero_counts()), _counts(q))
    return out


def nvme_queue_stats(k: Kernel) -> list[dict[str, Any]]:
    """One row per live queue: name, IRQ, vector, its CPUs, real/spurious calls,
    completions — what ``/proc/interrupts`` and the load views show."""
    rows = []
    for dev in nvme_core_of(k).devices:
        for q in dev.queues:
            if q is None or not q.flags & NVMEQ_ENABLED:
                continue
            irq = pci_irq_vector(dev.pdev, q.cq_vector)
            desc = k.irq.irq_to_desc(irq)
            cpus = sorted(desc.irq_common_data.affinity) if desc is not None else []
            rows.append({"name": q.name, "irq": irq, "vector": q.cq_vector, "cpus": cpus,
                         "real": q.irq_real, "spurious": q.irq_spurious,
                         "completions": q.completions, "calls_per_cpu": dict(q.irq_cpus)})
    return rows
