"""Machines with VMDs, a kernel booted on them (``vmdsim.boot``) with the vmd driver loaded,
and a tiny child driver whose vectors a test can predict.

The VMD's tests are about the VMD: where child vectors land, what each policy
does with them. The real NVMe driver (``drivers/nvme.py``, tested on its own and
behind the VMD in ``tests/drivers``) asks the controller for its queue count and
spreads its queues over the CPUs, so its vector layout depends on the machine;
``nvmeq`` takes a fixed number of queues, one vector each, queue q on vector q.

Building machines and completing NVMe commands are hardware acts (a test
standing in for the device); everything else goes through the kernel. The
child driver ``nvmeq`` binds NVMe-class functions, enables the controller,
creates its I/O queues with admin commands (polled: queue q on vector q),
posts one Asynchronous Event Request (so that a completion on queue 0 is an
event), allocates one MSI-X vector per queue (``pci_alloc_irq_vectors``, optionally
with managed affinity for the I/O queues) and requests a handler per vector
that consumes the completions of its queue through the head doorbell, as a
real queue handler does: a call that finds nothing returns ``IRQ_NONE``.
"""

from __future__ import annotations

from importlib import resources
from types import SimpleNamespace

import vmdsim
from vmdsim.drivers.vmd import vmd_devices, vmd_init
from vmdsim.kernel.core import Kernel
from vmdsim.kernel.dma import dma_alloc_coherent, dma_free_coherent
from vmdsim.kernel.errno import ENODEV, ENOMEM
from vmdsim.kernel.io import readl, writel
from vmdsim.kernel.irq.affinity import irq_affinity
from vmdsim.kernel.irq.flags import IRQ_HANDLED, IRQ_NONE
from vmdsim.kernel.pci import (
    PCI_DEVICE_CLASS,
    pci_driver,
    pci_get_drvdata,
    pci_register_driver,
    pci_set_drvdata,
    pci_set_master,
    pcim_enable_device,
    pcim_iomap,
)
from vmdsim.kernel.pci.msi import (
    PCI_IRQ_AFFINITY,
    PCI_IRQ_MSIX,
    pci_alloc_irq_vectors,
    pci_alloc_irq_vectors_affinity,
    pci_free_irq_vectors,
    pci_irq_vector,
    pci_msix_vec_count,
)
from vmdsim.kernel.sched import current
from vmdsim.kernel.shared import KObject
from vmdsim.topology import parse

NVME_REG_CC = 0x14
NVME_REG_AQA = 0x24
NVME_REG_ASQ = 0x28
NVME_REG_ACQ = 0x30
NVME_REG_DBS = 0x1000
ADMIN_DEPTH = 32
IO_DEPTH = 1024  # the model's CAP.MQES + 1


def default_text(**replace: str) -> str:
    """The built-in default topology's text, with ``key = "old"`` lines replaced."""
    text = resources.files("vmdsim.topologies").joinpath("default.toml").read_text()
    for key, value in replace.items():
        lines = []
        for line in text.splitlines():
            if line.split("=")[0].strip() == key:
                line = f"{key} = {value}"
            lines.append(line)
        text = "\n".join(lines) + "\n"
    return text


# The default machine with a MEMBAR2 that has room for non-prefetchable bridge windows
# (the default's 1 MiB minus the VMD's own 0x2000 holds no 1 MiB-aligned window, so there
# the PCI core puts the drives' 64-bit BARs in MEMBAR1's prefetchable windows).
ROOMY_DEFAULT = default_text(membar2='"32M"')


def machine_text(vmds: list[str], cpus: int = 4) -> str:
    return f"[machine]\ncpus = {cpus}\n" + "\n".join(vmds)


def vmd_block(device: int = 0x201D, *, slot: str = "0e.0", vectors: int = 32, ports: int = 2,
              queues: int = 4, extra: str = "", port_extra: str = "",
              nvme_extra: str = "", empty: tuple[int, ...] = ()) -> str:
    out = [f'[[vmd]]\ndevice = {device:#06x}\nslot = "{slot}"\nmsix_vectors = {vectors}\n'
           f'membar2 = "32M"\n{extra}']
    for p in range(ports):
        nvme = "" if p in empty else f"nvme = {{ queues = {queues}{nvme_extra} }}\n"
        out.append(f"[[vmd.root_port]]\nslot = {p}\nslot_number = {p + 1}\n{port_extra}{nvme}")
    return "\n".join(out)


# -- the child driver ----------------------------------------------------------------------
class nvmeq_queue(KObject):
    """One completion queue and the vector the drive raises for it."""

    def __init__(self, ctrl: nvmeq_ctrl, q: int, depth: int) -> None:
        self.ctrl = ctrl
        self.q = q
        self.depth = depth
        self.head = 0
        self.virq = 0
        self.calls = 0  # handler runs
        self.consumed = 0  # completion entries it found and consumed
        self.cpus: list[int] = []  # the CPU of each handler run

    def __repr__(self) -> str:
        return f"<nvmeq queue {self.q} irq {self.virq}>"


class nvmeq_ctrl(KObject):
    def __init__(self) -> None:
        self.pdev = None
        self.bar = None
        self.queues: list[nvmeq_queue] = []
        self.nvec = 0
        self.asq = self.acq = None  # the admin queues' DMA memory
        self.sq_tail = self.cq_head = 0
        self.phase = 1


def nvmeq_admin(ctrl: nvmeq_ctrl, opcode: int, cdw10: int = 0, cdw11: int = 0,
                prp1: int = 0, cid: int = 0, wait: bool = True) -> int:
    """Submit one admin command and poll the admin completion queue for it: its status."""
    entry = ctrl.asq.cpu_addr + 64 * ctrl.sq_tail
    for i, dw in enumerate([opcode | cid << 16, 0, 0, 0, 0, 0, prp1 & 0xFFFFFFFF, prp1 >> 32,
                            0, 0, cdw10, cdw11, 0, 0, 0, 0]):
        writel(dw, entry + 4 * i)
    ctrl.sq_tail = (ctrl.sq_tail + 1) % ADMIN_DEPTH
    writel(ctrl.sq_tail, ctrl.bar + NVME_REG_DBS)
    if not wait:
        return 0
    cqe = ctrl.acq.cpu_addr + 16 * ctrl.cq_head
    dw3 = readl(cqe + 12)
    assert (dw3 >> 16) & 1 == ctrl.phase, "the controller completes admin commands at once"
    ctrl.cq_head = (ctrl.cq_head + 1) % ADMIN_DEPTH
    ctrl.phase ^= ctrl.cq_head == 0
    writel(ctrl.cq_head, ctrl.bar + NVME_REG_DBS + 4)
    return dw3 >> 17


def nvmeq_create_queues(k, pdev, ctrl: nvmeq_ctrl, nq: int) -> int:
    """Admin queues in DMA memory, controller on, I/O queues 1..nq-1 created on vector q."""
    ctrl.asq = dma_alloc_coherent(k, pdev, 64 * ADMIN_DEPTH, owner="nvmeq")
    ctrl.acq = dma_alloc_coherent(k, pdev, 16 * ADMIN_DEPTH, owner="nvmeq")
    if ctrl.asq is None or ctrl.acq is None:
        return -ENOMEM
    bar = ctrl.bar
    writel((ADMIN_DEPTH - 1) << 16 | (ADMIN_DEPTH - 1), bar + NVME_REG_AQA)
    for off, buf in ((NVME_REG_ASQ, ctrl.asq), (NVME_REG_ACQ, ctrl.acq)):
        writel(buf.dma_handle & 0xFFFFFFFF, bar + off)
        writel(buf.dma_handle >> 32, bar + off + 4)
    writel(1, bar + NVME_REG_CC)
    for q in range(1, nq):
        # Create I/O CQ q (contiguous, interrupts on vector q), then I/O SQ q on it.
        if nvmeq_admin(ctrl, 0x05, q | (IO_DEPTH - 1) << 16, 0x3 | q << 16) or \
                nvmeq_admin(ctrl, 0x01, q | (IO_DEPTH - 1) << 16, 0x1 | q << 16):
            return -ENODEV
    nvmeq_admin(ctrl, 0x0C, cid=31, wait=False)  # an Asynchronous Event Request
    return 0


def nvmeq_free_admin(k, ctrl: nvmeq_ctrl) -> None:
    for buf in (ctrl.asq, ctrl.acq):
        if buf is not None:
            dma_free_coherent(k, buf)


def nvmeq_irq(irq: int, queue: nvmeq_queue) -> int:
    queue.calls += 1
    queue.cpus.append(current().cpu.id)
    db = queue.ctrl.bar + NVME_REG_DBS + 8 * queue.q + 4
    n = readl(db)
    if not n:
        return IRQ_NONE
    queue.head = (queue.head + n) % queue.depth
    writel(queue.head, db)
    queue.consumed += n
    if queue.q == 0:  # events came: ask for the next ones, as the NVMe driver does
        queue.ctrl.cq_head = queue.head
        for _ in range(n):
            nvmeq_admin(queue.ctrl, 0x0C, cid=31, wait=False)
    return IRQ_HANDLED


def nvmeq_probe(pdev, id) -> int:
    """Bring the controller up and request one handler per queue; unwinds on any failure."""
    k = pdev.k
    drv = pdev.driver
    if pcim_enable_device(pdev):
        return -ENODEV
    pci_set_master(pdev)
    bar = pcim_iomap(pdev, 0)
    if bar is None:
        return -ENOMEM
    ctrl = k.mem.kzalloc(nvmeq_ctrl, owner="nvmeq")
    if ctrl is None:
        return -ENOMEM
    ctrl.pdev, ctrl.bar = pdev, bar
    nq = drv.queues
    err = nvmeq_create_queues(k, pdev, ctrl, min(nq, pci_msix_vec_count(pdev)))
    if err:
        nvmeq_free_admin(k, ctrl)
        k.mem.kfree(ctrl)
        return err
    if drv.affinity:
        nvec = pci_alloc_irq_vectors_affinity(pdev, 1, nq, PCI_IRQ_MSIX | PCI_IRQ_AFFINITY,
                                              irq_affinity(pre_vectors=1))
    else:
        nvec = pci_alloc_irq_vectors(pdev, 1, nq, PCI_IRQ_MSIX)
    if nvec < 0:
        nvmeq_free_admin(k, ctrl)
        k.mem.kfree(ctrl)
        return nvec
    ctrl.nvec = nvec
    pci_set_drvdata(pdev, ctrl)
    for q in range(min(nq, nvec)):
        queue = k.mem.kzalloc(nvmeq_queue, ctrl, q, ADMIN_DEPTH if q == 0 else IO_DEPTH,
                              owner="nvmeq")
        err = -ENOMEM
        if queue is not None:
            queue.virq = pci_irq_vector(pdev, q)
            if q == 0:
                queue.head = ctrl.cq_head  # past the admin commands' completions
            err = k.irq.request_irq(queue.virq, nvmeq_irq, 0, f"nvmeq{q}", queue)
            if err:
                k.mem.kfree(queue)
        if err:
            _nvmeq_teardown(pdev, ctrl)
            return err
        ctrl.queues.append(queue)
    drv.bound.append(ctrl)
    return 0


def _nvmeq_teardown(pdev, ctrl: nvmeq_ctrl) -> None:
    k = pdev.k
    for queue in ctrl.queues:
        k.irq.free_irq(queue.virq, queue)
    pci_free_irq_vectors(pdev)
    for queue in ctrl.queues:
        k.mem.kfree(queue)
    nvmeq_free_admin(k, ctrl)
    k.mem.kfree(ctrl)


def nvmeq_remove(pdev) -> None:
    ctrl = pci_get_drvdata(pdev)
    pdev.driver.bound.remove(ctrl)
    _nvmeq_teardown(pdev, ctrl)


def nvmeq_driver(queues: int = 9, affinity: bool = False) -> pci_driver:
    drv = pci_driver("nvmeq", [PCI_DEVICE_CLASS(0x010802, 0xFFFFFF)], probe=nvmeq_probe,
                     remove=nvmeq_remove)
    drv.queues = queues
    drv.affinity = affinity
    drv.bound = []
    return drv


# -- booting ----------------------------------------------------------------------------------
def boot_vmd(text: str | None = None, *, protocol=None, policy=None, desc_free: str = "rcu",
             child: bool = True, queues: int = 9, affinity: bool = False,
             hardirq_rcu_reader: bool = True, load: bool = True) -> SimpleNamespace:
    """Boot ``text`` (None: the built-in default), load vmd (unless not ``load``: then
    ``load_vmd(w)`` does it) and, if ``child``, register nvmeq first."""
    def hardirq(k: Kernel) -> None:
        k.irq.hardirq_rcu_reader = hardirq_rcu_reader

    s = vmdsim.boot(parse(text) if text is not None else None, desc_free=desc_free,
                    drivers=[], configure=hardirq)  # the drivers load below, as modules
    m, k = s.machine, s.k
    drv = None
    if child:  # registered first, so drives bind as the VMD's probe adds them
        drv = nvmeq_driver(queues, affinity)
        k.run_on(0, pci_register_driver, k, drv)
    w = SimpleNamespace(m=m, k=k, module=None, drv=drv, vmds=[], vmd=None)
    if load:
        load_vmd(w, protocol, policy)
    return w


def load_vmd(w: SimpleNamespace, protocol=None, policy=None) -> SimpleNamespace:
    """``modprobe vmd``, as a task on CPU 0."""
    w.module = w.k.run_on(0, vmd_init, w.k, protocol, policy)
    w.vmds = vmd_devices(w.k)
    w.vmd = w.vmds[0] if w.vmds else None
    return w


def queue_of(w: SimpleNamespace, nvme: int, q: int) -> nvmeq_queue:
    """The driver's queue ``q`` of the ``nvme``-th bound controller (in binding order)."""
    return w.drv.bound[nvme].queues[q]


def bound_queues(w: SimpleNamespace) -> list[nvmeq_queue]:
    return [q for ctrl in w.drv.bound for q in ctrl.queues]


# -- hot-plug, as pciehp would do it ------------------------------------------------------------
def port_pdev(w: SimpleNamespace, port: int, vmd: int = 0):
    from vmdsim.kernel.pci import PCI_DEVFN

    v = w.vmds[vmd]
    return w.k.pci.pci_get_domain_bus_and_slot(v.sysdata.domain, v.busn_start,
                                               PCI_DEVFN(port, 0))


def hot_remove(w: SimpleNamespace, port: int, vmd: int = 0) -> None:
    """Orderly removal of the drive behind root port ``port``: the OS lets go (drivers
    unbind, IRQs are freed), then the card is pulled."""
    from vmdsim.kernel.pci import pci_stop_and_remove_bus_device_locked

    rp = port_pdev(w, port, vmd)
    drive = rp.subordinate.devices[0]
    w.k.run_on(0, pci_stop_and_remove_bus_device_locked, drive)
    w.m.by_name[f"vmd{vmd}.rp{port}"].unpopulate()


def hot_add(w: SimpleNamespace, port: int, queues: int, vmd: int = 0, name: str = "") -> None:
    """Insert a drive with ``queues`` I/O queues behind root port ``port`` and rescan."""
    from vmdsim.hw.nvme import NvmeController
    from vmdsim.kernel.pci import pci_lock_rescan_remove, pci_rescan_bus, pci_unlock_rescan_remove

    card = NvmeController(name or f"hot{port}.{queues}.{len(w.m.nvmes)}", nr_io_queues=queues)
    w.m.nvmes.append(card)
    w.m.by_name[f"vmd{vmd}.rp{port}"].populate(card)
    rp = port_pdev(w, port, vmd)

    def rescan():
        pci_lock_rescan_remove(w.k)
        pci_rescan_bus(rp.subordinate)
        pci_unlock_rescan_remove(w.k)

    w.k.run_on(0, rescan)


def ctrl_behind(w: SimpleNamespace, port: int, vmd: int = 0) -> nvmeq_ctrl:
    rp = port_pdev(w, port, vmd)
    for ctrl in w.drv.bound:
        if ctrl.pdev.bus is rp.subordinate:
            return ctrl
    raise LookupError(f"no bound drive behind root port {port}")


def small_text(queues: tuple[int, ...], vectors: int = 5, device: int = 0x201D) -> str:
    """One VMD with ``vectors`` vectors and a drive with queues[i] I/O queues on port i."""
    blocks = [f'[[vmd]]\ndevice = {device:#06x}\nslot = "0e.0"\nmsix_vectors = {vectors}\n'
              'membar2 = "32M"\n']
    for p, q in enumerate(queues):
        nvme = f"nvme = {{ queues = {q} }}\n" if q else ""
        blocks.append(f"[[vmd.root_port]]\nslot = {p}\nslot_number = {p + 1}\n{nvme}")
    return machine_text(blocks)


def hw_of(w: SimpleNamespace, ctrl: nvmeq_ctrl):
    """The hardware drive a bound controller drives: the card in its root port's slot."""
    from vmdsim.kernel.pci import PCI_SLOT

    vmd = [v.sysdata.domain for v in w.vmds].index(ctrl.pdev.bus.domain_nr)
    port = PCI_SLOT(ctrl.pdev.bus.self.devfn)
    return w.m.by_name[f"vmd{vmd}.rp{port}"].card


def fire_all(w: SimpleNamespace) -> None:
    """Complete one command on every bound queue; each handler must consume exactly it."""
    for ctrl in list(w.drv.bound):
        hw = hw_of(w, ctrl)
        for q in ctrl.queues:
            before = q.consumed
            assert hw.complete(q.q)
            assert q.consumed == before + 1, f"{q!r}: interrupt lost"


class device_completion:
    """A drive completing a command on queue ``q`` — as a thread of an explored program.

    One scheduling point that names only the device, then the act: what the drive
    reads and changes as it sends its MSI-X message (Message Control, the entry, the
    Command registers on the path) is reported by the hardware models themselves, so
    the explorer orders the send against the CPU that masks or rewrites the entry.
    """

    def __init__(self, w: SimpleNamespace, ctrl: nvmeq_ctrl, q: int) -> None:
        self.hw = hw_of(w, ctrl)
        self.q = q
        self.sent = None

    def __call__(self) -> None:
        from vmdsim.check.scenarios.worlds import DEVICE_ACTS
        from vmdsim.kernel.shared import READ, sched_point

        sched_point(DEVICE_ACTS, self.hw.name, READ)
        self.sent = self.hw.complete(self.q)


# -- programs for the explorer -----------------------------------------------------------------
def in_flight(w: SimpleNamespace, ctrl: nvmeq_ctrl, q: int, cpu: int) -> None:
    """Complete a command on queue ``q`` while ``cpu`` has interrupts off, so the VMD vector
    it raises stays pending there: the explorer may then deliver it at any step."""
    c = w.k.sched.cpus[cpu]
    flag, c.irqs_enabled = c.irqs_enabled, False
    assert hw_of(w, ctrl).complete(q)
    c.irqs_enabled = flag
    assert c.pending, f"nothing pending on CPU{cpu}"


def demux_race_program(protocol: str, desc_free: str, *, hardirq_rcu_reader: bool = True):
    """The seed's race: CPU0 tears down a child IRQ (``free_irq`` then
    ``pci_free_irq_vectors``, what ``driver_exit`` does) while CPU1 has the VMD vector of
    that child pending, so its demultiplexing walk may run at any step of the teardown.

    The machine: one VMD 0x201D with 2 vectors (vector 1 targeted at CPU1), one drive,
    whose single queue's IRQ is the only child on vector 1."""
    from vmdsim.check.program import Program
    from vmdsim.kernel.pci.msi import pci_free_irq_vectors

    def setup() -> SimpleNamespace:
        w = boot_vmd(small_text((1,), vectors=2), protocol=protocol, desc_free=desc_free,
                     queues=1, hardirq_rcu_reader=hardirq_rcu_reader)
        k = w.k
        k.run_on(0, k.irq.irq_set_affinity, w.vmd.irqs[1].virq, frozenset({1}))
        ctrl = w.drv.bound[0]
        w.pdev, w.queue, w.virq = ctrl.pdev, ctrl.queues[0], ctrl.queues[0].virq
        in_flight(w, ctrl, 0, 1)
        return w

    def driver_exit(w: SimpleNamespace) -> None:
        w.k.irq.free_irq(w.virq, w.queue)
        pci_free_irq_vectors(w.pdev)

    def threads(w: SimpleNamespace):
        return [(0, lambda: driver_exit(w), "driver_exit")]

    return Program(f"vmd-demux-{protocol}-{desc_free}", setup, threads,
                   description=demux_race_program.__doc__ or "")


def move_world(*, replay: bool = True) -> SimpleNamespace:
    """One VMD with 3 vectors (slow 0; 1 on CPU2, 2 on CPU3), one drive with 2 I/O queues:
    queue 2's IRQ shares vector 1 with the admin queue. ``w.mover`` moves it to vector 2;
    ``w.fire`` is the drive completing a command on queue 2 (a :class:`device_completion`)."""
    w = boot_vmd(small_text((2,), vectors=3), queues=3)
    k, vmd = w.k, w.vmd
    k.run_on(0, k.irq.irq_set_affinity, vmd.irqs[1].virq, frozenset({2}))
    k.run_on(0, k.irq.irq_set_affinity, vmd.irqs[2].virq, frozenset({3}))
    ctrl = w.drv.bound[0]
    w.queue = ctrl.queues[2]
    w.fire = device_completion(w, ctrl, 2)
    w.replay = replay
    return w


def move_queue2(w: SimpleNamespace) -> None:
    from vmdsim.drivers.vmd import vmd_move

    assert vmd_move(w.vmd, w.queue.virq, 2, replay=w.replay)


def flush_interrupts(k) -> None:
    """Deliver what is still pending on any CPU (the end of an explored run)."""
    for cpu in k.sched.cpus:
        if cpu.pending:
            k.sched.deliver_pending(cpu)
