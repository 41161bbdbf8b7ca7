"""A machine, a kernel booted on it, and the drivers loaded: what ``vmdsim run`` works on.

The drivers are registered before boot, as built-in drivers are, so they
bind while the buses are scanned: the VMD first finds its endpoint in domain
0, creates domain 10000 and scans it, then the port services and NVMe bind
below it. Everything after the bring-up happens through the hardware (a
drive completing work, a card pulled from a slot) and the kernel reacting.
"""

from __future__ import annotations

from functools import cached_property
from pathlib import Path
from typing import Any

from vmdsim.drivers.nvme import NVMEQ_ENABLED, nvme_core_of, nvme_init
from vmdsim.drivers.pcieport.portdrv import pcie_portdrv_init
from vmdsim.drivers.vmd.module import vmd_init
from vmdsim.errors import VmdsimError
from vmdsim.hw.machine import Machine
from vmdsim.hw.nvme import NvmeController
from vmdsim.kernel.boot import boot
from vmdsim.kernel.core import Kernel
from vmdsim.kernel.pci import pci_read_config_dword
from vmdsim.sim.bindings import Unbound, unbound_devices

DESC_FREE = ("rcu", "immediate")


class NoSuchSlotError(VmdsimError, KeyError):
    """A hot-plug act names a root port the machine does not have. A ``KeyError`` for
    callers that look slots up, a ``VmdsimError`` so the command reports it in one line."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""  # KeyError would quote it


class System:
    """``System(topology=None, protocol=, policy=, desc_free=)``: booted and bound."""

    def __init__(self, topology: str | Path | None = None, *, protocol: str | None = None,
                 policy: str | None = None, desc_free: str = "rcu",
                 machine: Machine | None = None) -> None:
        self.machine = machine if machine is not None else Machine.load(topology)
        self.k = Kernel(self.machine.ncpus)
        self.k.irq.desc_free = desc_free
        self.vmd = vmd_init(self.k, protocol, policy)
        nvme_init(self.k)
        pcie_portdrv_init(self.k)
        boot(self.k, self.machine)

    @cached_property
    def unbound(self) -> list[Unbound]:
        """The declared devices that did not come up bound to their driver (at boot)."""
        return unbound_devices(self)

    @property
    def protocol(self) -> str:
        return ",".join(self.vmd.protocols)

    @property
    def policy(self) -> str:
        return ",".join(self.vmd.policies)

    def slot(self, name: str) -> Any:
        """A root port of the machine by name (``vmd0.rp2``), for hot-plug acts."""
        port = self.machine.by_name.get(name)
        if port is None or port not in self.machine.root_ports:
            ports = ", ".join(rp.name for rp in self.machine.root_ports)
            raise NoSuchSlotError(f"no root port {name!r}; the machine has: {ports}")
        return port


def drive_of(system: System, pdev: Any) -> NvmeController | None:
    """The hardware drive behind a kernel ``pci_dev``: the one at the same bus number and
    devfn whose BAR0 holds the same bus address (the workload is the harness: it may look at
    both sides). The address alone is not enough: a drive the last scan missed keeps the
    BAR an earlier boot gave it, which may now be another drive's."""
    lo = pci_read_config_dword(pdev, 0x10)[1] & ~0xF
    hi = pci_read_config_dword(pdev, 0x14)[1]
    addr = lo | hi << 32
    for n in system.machine.nvmes:
        if (n.bus is not None and (n.bus.number, n.devfn) == (pdev.bus.number, pdev.devfn)
                and n.bar_address(0) == addr):
            return n
    return None


def io_queues(system: System) -> list[tuple[str, NvmeController, int]]:
    """(queue name, drive, qid) for every I/O queue the kernel has enabled."""
    out = []
    for dev in nvme_core_of(system.k).devices:
        drive = drive_of(system, dev.pdev)
        if drive is None:
            continue
        for q in dev.queues[1:]:
            if q is not None and q.flags & NVMEQ_ENABLED:
                out.append((q.name, drive, q.qid))
    return out
