"""A machine, a kernel booted on it, and the drivers loaded: what ``vmdsim run`` works on.

The drivers are registered before boot, as built-in drivers are, so they
bind while the buses are scanned: the VMD first finds its endpoint in domain
0, creates domain 10000 and scans it, then the port services and NVMe bind
below it. Everything after the bring-up happens through the hardware (a
drive completing work, a card pulled from a slot) and the kernel reacting.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from vmdsim.drivers.nvme import NVMEQ_ENABLED, nvme_core_of, nvme_init
from vmdsim.drivers.pcieport.portdrv import pcie_portdrv_init
from vmdsim.drivers.vmd.module import vmd_init, vmd_module
from vmdsim.errors import VmdsimError
from vmdsim.hw.machine import Machine
from vmdsim.hw.nvme import NvmeController
from vmdsim.kernel.boot import boot as boot_kernel
from vmdsim.kernel.core import Kernel
from vmdsim.kernel.irq.irqdesc import DESC_FREE_MODES
from vmdsim.kernel.lockdep import Lockdep
from vmdsim.kernel.pci import pci_read_config_dword
from vmdsim.sim import release
from vmdsim.sim.bindings import Unbound, unbound_devices
from vmdsim.topology import Topology

if TYPE_CHECKING:
    from vmdsim.hw.rootport import RootPort
    from vmdsim.kernel.pci.pci_h import pci_dev

BUILT_IN_DRIVERS = ("vmd", "nvme", "pcieport")
VMD_OPTIONS = ("handler", "remove", "parent", "msi_domain")  # vmd_init's keyword parameters
DriverInit = Callable[[Kernel], object]


def boot(topology: str | Path | Topology | None = None, *, protocol: str | None = None,
         policy: str | None = None, desc_free: str = "rcu", machine: Machine | None = None,
         drivers: Iterable[str | DriverInit] = BUILT_IN_DRIVERS,
         native: dict[str, bool] | None = None, configure: DriverInit | None = None,
         lockdep: bool = False, vmd_options: Mapping[str, str] | None = None) -> System:
    """Build the machine of ``topology`` (a TOML file, a parsed :class:`Topology`, or None
    for the built-in default), create a kernel for it, register ``drivers`` and boot.

    ``drivers`` are built-in names (``vmd``, ``nvme``, ``pcieport``) or a driver's init
    function ``init(k)``, registered in that order before the buses are scanned.
    ``protocol`` and ``policy`` are the vmd module's parameters, ``vmd_options`` its
    others (``handler``, ``remove``, ``parent``: the RFC v3's code in place of
    today's, ``drivers/vmd/rfc_v3.py``); ``desc_free`` is how the
    IRQ core frees descriptors (``rcu`` as Linux, or ``immediate``). The interrupt-domain
    scheme is the release's in force (``release.py``: today's unless a caller switched
    it). ``native`` is what
    firmware's _OSC grants the OS (e.g. ``{"pcie_hotplug": False}``; all by default).
    ``configure(k)`` runs on the new kernel before any driver registers (what a kernel
    command line sets: ``pcie_ports=native``, fault injection). ``lockdep`` turns the
    lock validator on (``kernel/lockdep.py``; its reports go to the kernel log and
    ``k.sched.lockdep.reports``). Bad names raise
    :class:`VmdsimError` before anything is built."""
    if desc_free not in DESC_FREE_MODES:
        raise VmdsimError(f"desc_free {desc_free!r}: one of {', '.join(DESC_FREE_MODES)}")
    inits = [_driver_init(d) for d in drivers]
    unknown = sorted(set(vmd_options or {}) - set(VMD_OPTIONS))
    if unknown:
        raise VmdsimError(f"vmd option {unknown[0]!r}: the options are {', '.join(VMD_OPTIONS)}")
    if machine is None:
        machine = (Machine.build(topology) if isinstance(topology, Topology)
                   else Machine.load(topology))
    settings = release.current()
    k = Kernel(machine.ncpus)
    k.irq.desc_free = desc_free
    k.irq.pci_msi_domains = settings["pci_msi_domains"]
    if lockdep:  # CONFIG_PROVE_LOCKING: reports go to the kernel log
        k.sched.lockdep = Lockdep(k)
    if configure is not None:  # what the kernel command line would set, before initcalls
        configure(k)
    vmd: vmd_module | None = None
    # Registered before boot, in the order given, as built-in drivers are: they bind
    # while the buses are scanned (Linux: device_initcall).
    for init in inits:
        if init is vmd_init:
            vmd = vmd_init(k, protocol, policy,
                           **{"msi_domain": settings["msi_domain"], **(vmd_options or {})})
        else:
            init(k)
    boot_kernel(k, machine, native=native)
    return System(machine, k, vmd)


def _driver_init(d: str | DriverInit) -> DriverInit:
    if not isinstance(d, str):
        return d
    inits: dict[str, DriverInit] = {"vmd": vmd_init, "nvme": nvme_init,
                                    "pcieport": pcie_portdrv_init}
    if d not in inits:
        raise VmdsimError(f"driver {d!r}: the built-in drivers are {', '.join(inits)}")
    return inits[d]


class HasMachine(Protocol):
    """Anything that holds the hardware it was booted on (a :class:`System`, a scenario's
    world)."""

    machine: Machine


class NoSuchSlotError(VmdsimError, KeyError):
    """A hot-plug act names a root port the machine does not have. A ``KeyError`` for
    callers that look slots up, a ``VmdsimError`` so the command reports it in one line."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""  # KeyError would quote it


class System:
    """A machine with a kernel booted on it and its drivers bound, as :func:`boot` made it;
    ``vmd`` is the vmd module (None when it was not loaded)."""

    def __init__(self, machine: Machine, k: Kernel, vmd: vmd_module | None) -> None:
        self.machine = machine
        self.k = k
        self.vmd = vmd

    @cached_property
    def unbound(self) -> list[Unbound]:
        """The declared devices that did not come up bound to their driver (at boot)."""
        return unbound_devices(self)

    @property
    def protocol(self) -> str:
        return ",".join(self.vmd.protocols) if self.vmd is not None else ""

    @property
    def policy(self) -> str:
        return ",".join(self.vmd.policies) if self.vmd is not None else ""

    def slot(self, name: str) -> RootPort:
        """A root port of the machine by name (``vmd0.rp2``), for hot-plug acts."""
        port = self.machine.by_name.get(name)
        if port is None or port not in self.machine.root_ports:
            ports = ", ".join(rp.name for rp in self.machine.root_ports)
            raise NoSuchSlotError(f"no root port {name!r}; the machine has: {ports}")
        return port


def drive_of(system: HasMachine, pdev: pci_dev) -> NvmeController | None:
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
