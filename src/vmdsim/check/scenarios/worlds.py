"""Small machines for scenarios: booted free-running, drivers bound, ready to race.

Scenarios keep their machines small (two CPUs, one VMD with few vectors, one
or two drives with one I/O queue each): every extra device adds accesses the
explorer must order, and a race between one teardown and one interrupt needs
no more than this to happen.
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from vmdsim.drivers.nvme import nvme_core_of, nvme_init
from vmdsim.drivers.vmd.module import vmd_init
from vmdsim.drivers.vmd.query import vmd_devices
from vmdsim.hw.machine import Machine
from vmdsim.kernel.boot import boot
from vmdsim.kernel.core import Kernel
from vmdsim.kernel.io import MMIO
from vmdsim.kernel.pci.msi import pci_irq_vector
from vmdsim.kernel.shared import WRITE, sched_point
from vmdsim.sim.system import drive_of
from vmdsim.topology import parse


def small_topology(drives: int = 1, vectors: int = 4, queues: int = 1,
                   hotplug: bool = False) -> str:
    hp = "true" if hotplug else "false"
    ports = "".join(f"[[vmd.root_port]]\nslot = {i}\nhotplug = {hp}\n"
                    f"nvme = {{ queues = {queues} }}\n" for i in range(drives))
    return (f"[machine]\ncpus = 2\n\n[[vmd]]\ndevice = 0x201D\nmsix_vectors = {vectors}\n\n"
            + ports)


def vmd_world(*, protocol: str = "srcu", policy: str | None = None, desc_free: str = "rcu",
              drives: int = 1, vectors: int = 4, queues: int = 1, nvme: bool = True,
              hotplug: bool = False, ports: Any = None) -> SimpleNamespace:
    """Boot a small VMD machine with the vmd and (unless told not to) nvme drivers; port
    services only if ``ports`` is their init function."""
    m = Machine.build(parse(small_topology(drives, vectors, queues, hotplug), "<scenario>"))
    k = Kernel(m.ncpus)
    k.irq.desc_free = desc_free
    vmd_init(k, protocol, policy)
    if nvme:
        nvme_init(k)
    if ports is not None:
        ports(k)
    boot(k, m)
    w = SimpleNamespace(k=k, m=m, machine=m, vmd=vmd_devices(k)[0], drives=[])
    for dev in nvme_core_of(k).devices:
        w.drives.append(SimpleNamespace(dev=dev, pdev=dev.pdev, hw=drive_of(w, dev.pdev)))
    return w


def queue_vector(w: SimpleNamespace, drive: Any, qid: int) -> Any:
    """The VMD vector (``vmd_irq_list``) I/O queue ``qid`` of a drive is multiplexed onto."""
    return vector_of(w, pci_irq_vector(drive.pdev, qid))


def device_completes(drive_hw: Any, qid: int) -> None:
    """The drive posts a completion on ``qid`` and sends its MSI-X message.

    A device act, not kernel code: as it fires it reads its own registers
    (MSI-X table and enable, bus mastering) and its message passes the root
    port and the VMD (bus mastering, the VMD's own vector mask). The explorer
    must order it against every kernel access to any of those, so the
    scheduling point names that footprint — one point, so that the whole act is
    one step: the ranges it reads and the message it sends happen together.
    """
    sched_point(MMIO, ",".join(f"{lo:#x}-{hi:#x}" for lo, hi in footprint(drive_hw)), WRITE)
    drive_hw.complete(qid)


def footprint(fn: Any) -> list[tuple[int, int]]:
    """The MMIO ranges whose kernel accesses change what a message from ``fn`` does:
    the BARs of ``fn``, the config pages of ``fn``, of every bridge above it and of
    the VMD, and the VMD's own MSI-X table (the first 0x2000 of MEMBAR2)."""
    from vmdsim.hw.fabric import MMCONFIG_BASE, ecam_offset
    from vmdsim.hw.vmd import Vmd

    spans = [(fn.bar_address(i), fn.bar_address(i) + bar.size - 1) for i, bar in fn.bars.items()]
    while fn is not None and fn.bus is not None:
        vmd = _vmd_above(fn)
        if vmd is None:
            page = MMCONFIG_BASE + ecam_offset(fn.bus.number, fn.devfn, 0)
        else:
            start = vmd.bus_start or 0
            page = vmd.bar_address(0) + ((fn.bus.number - start) << 20 | fn.devfn << 12)
        spans.append((page, page + 0xFFF))
        if isinstance(fn, Vmd):
            base = fn.bar_address(4)
            spans.append((base, base + 0x1FFF))
        fn = _parent(fn)
    return spans


def _parent(fn: Any) -> Any:
    """The bridge (or VMD) a function's bus hangs off, or None at the root complex."""
    up = fn.upstream
    from vmdsim.hw.function import PciFunction

    return up if isinstance(up, PciFunction) else None


def _vmd_above(fn: Any) -> Any:
    from vmdsim.hw.vmd import Vmd

    up = _parent(fn)
    while up is not None and not isinstance(up, Vmd):
        up = _parent(up)
    return up


def vector_of(w: SimpleNamespace, child_virq: int) -> Any:
    """The ``vmd_irq_list`` (VMD vector) child IRQ ``child_virq`` is multiplexed onto."""
    return next(c.irq for c in w.vmd.children if c.virq == child_virq)


def pin_vector(w: SimpleNamespace, vector: Any, cpu: int) -> None:
    """Send a VMD vector to ``cpu``, as ``echo`` into ``/proc/irq/N/smp_affinity`` would."""
    w.k.run_on(0, w.k.irq.irq_set_affinity, vector.virq, {cpu})
