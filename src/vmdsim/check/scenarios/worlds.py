"""Small machines for scenarios: booted free-running, drivers bound, ready to race.

Scenarios keep their machines small (two CPUs, one VMD with few vectors, one
or two drives with one I/O queue each): every extra device adds accesses the
explorer must order, and a race between one teardown and one interrupt needs
no more than this to happen.
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from vmdsim.drivers.nvme import nvme_core_of
from vmdsim.drivers.vmd.query import vmd_devices
from vmdsim.kernel.pci.msi import pci_irq_vector
from vmdsim.kernel.shared import READ, sched_point
from vmdsim.sim.system import DriverInit, boot, drive_of
from vmdsim.topology import parse


def small_topology(drives: int = 1, vectors: int = 4, queues: int = 1,
                   hotplug: bool = False, device: int = 0x201D) -> str:
    hp = "true" if hotplug else "false"
    ports = "".join(f"[[vmd.root_port]]\nslot = {i}\nhotplug = {hp}\n"
                    f"nvme = {{ queues = {queues} }}\n" for i in range(drives))
    return (f"[machine]\ncpus = 2\n\n[[vmd]]\ndevice = {device:#06x}\n"
            f"msix_vectors = {vectors}\n\n" + ports)


def vmd_world(*, protocol: str = "srcu", policy: str | None = None, desc_free: str = "rcu",
              drives: int = 1, vectors: int = 4, queues: int = 1, nvme: bool = True,
              hotplug: bool = False, ports: DriverInit | None = None,
              vmd_options: dict[str, str] | None = None,
              device: int = 0x201D) -> SimpleNamespace:
    """Boot a small VMD machine with the vmd and (unless told not to) nvme drivers; port
    services only if ``ports`` is their init function; ``vmd_options`` as :func:`boot`'s."""
    drivers: list[str | DriverInit] = ["vmd", "nvme"] if nvme else ["vmd"]
    if ports is not None:
        drivers.append(ports)
    s = boot(parse(small_topology(drives, vectors, queues, hotplug, device), "<scenario>"),
             protocol=protocol, policy=policy, desc_free=desc_free, drivers=drivers,
             vmd_options=vmd_options)
    k, m = s.k, s.machine
    w = SimpleNamespace(k=k, m=m, machine=m, vmd=vmd_devices(k)[0], drives=[])
    for dev in nvme_core_of(k).devices:
        w.drives.append(SimpleNamespace(dev=dev, pdev=dev.pdev, hw=drive_of(w, dev.pdev)))
    return w


def queue_vector(w: SimpleNamespace, drive: Any, qid: int) -> Any:
    """The VMD vector (``vmd_irq_list``) I/O queue ``qid`` of a drive is multiplexed onto."""
    return vector_of(w, pci_irq_vector(drive.pdev, qid))


def device_completes(drive_hw: Any, qid: int) -> None:
    """The drive posts a completion on ``qid`` and sends its MSI-X message.

    A device act, not kernel code, and one step: what it reads and changes as it
    fires (its CSTS and queue doorbells, MSI-X Message Control, table entry and
    PBA, the Command registers on the path, the VMD's remap bit and own vector) is
    reported by the hardware models themselves (``hw/observe.py``), so the explorer
    orders the act against every kernel access of those registers. The act waits
    for the explorer's choice at one scheduling point of its own, which names only
    the device (a read that conflicts with nothing).
    """
    sched_point(DEVICE_ACTS, drive_hw.name, READ)
    drive_hw.complete(qid)


class _DeviceActs:
    """What a device act's scheduling point names: no kernel object, nothing shared."""

    __slots__ = ()

    def kname(self) -> str:
        return "device"


DEVICE_ACTS = _DeviceActs()


def vector_of(w: SimpleNamespace, child_virq: int) -> Any:
    """The ``vmd_irq_list`` (VMD vector) child IRQ ``child_virq`` is multiplexed onto."""
    return next(c.irq for c in w.vmd.children if c.virq == child_virq)


def pin_vector(w: SimpleNamespace, vector: Any, cpu: int) -> None:
    """Send a VMD vector to ``cpu``, as ``echo`` into ``/proc/irq/N/smp_affinity`` would."""
    w.k.run_on(0, w.k.irq.irq_set_affinity, vector.virq, {cpu})
