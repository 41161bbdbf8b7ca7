"""Did the machine boot as declared? Every declared device, and the driver it should have.

A topology declares VMDs, root ports and NVMe drives; once booted, each
should be enumerated by the kernel and bound: a VMD to ``vmd``, a root port
to ``pcieport``, a drive to ``nvme``. :func:`unbound_devices` lists every one
that is not, with the reason: the kernel's own last message about that device
(a failed probe logs its errno; a BAR that found no space says so), or, for
a device the kernel never enumerated, why the scan could not reach it.

The harness looks at both sides here, as a person comparing the topology
with ``lspci`` would: a hardware function and the ``pci_dev`` at the same
domain, bus and device/function.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from vmdsim.drivers.vmd.query import vmd_devices
from vmdsim.hw.nvme import NvmeController
from vmdsim.hw.rootport import RootPort
from vmdsim.hw.vmd import Vmd
from vmdsim.kernel.pci.pci_h import pci_name
from vmdsim.kernel.printk import dmesg

if TYPE_CHECKING:
    from vmdsim.kernel.core import Kernel


@dataclass
class Unbound:
    device: str  # the topology's name: vmd0, vmd0.rp1, vmd0.rp1.nvme
    address: str  # the kernel's name for it, or "not enumerated"
    driver: str  # the driver that should have bound it
    why: str

    def __str__(self) -> str:
        return (f"{self.device} ({self.address}) is not bound to {self.driver}: {self.why}")


def _driver_for(fn: Any) -> str | None:
    if isinstance(fn, Vmd):
        return "vmd"
    if isinstance(fn, RootPort):
        return "pcieport"
    if isinstance(fn, NvmeController):
        return "nvme"
    return None


def _declared(machine: Any) -> Iterator[tuple[Any, Vmd | None]]:
    """(function, the VMD whose domain holds it or None), primary domain first."""
    for fn in machine.rc.root_bus.walk():
        yield fn, None
    for vmd in machine.vmds:
        for fn in vmd.hidden_bus.walk():
            yield fn, vmd


def _kernel_says(k: Kernel, name: str) -> str | None:
    """The kernel's last complaint about a resource of the device, and its last two lines
    (a driver says why it refuses just before the driver core says that it did)."""
    # dev_info and friends: "<driver, or the bus while none is bound> <device>: ..."
    prefix = f"{name}: "
    lines = [line for line in dmesg(k) if line.partition(" ")[2].startswith(prefix)]
    said = [x for x in lines if "can't" in x or "no space" in x][-1:]
    tail = [x for x in lines if not x.partition(" ")[2].startswith(f"{prefix}enabling ")][-2:]
    said += [x for x in tail if x not in said]
    return "; ".join(said) or None


def _not_enumerated(fn: Any, found: set[int]) -> str:
    bus = fn.bus
    if fn.devfn & 7 and bus.devices.get(fn.devfn & ~7) is None:
        return (f"function 0 of its slot ({fn.devfn >> 3:02x}.0) is absent, and Linux's scan "
                "(pci_scan_slot) looks no further in a slot without function 0")
    bridge = getattr(bus, "parent_bridge", None)
    if bridge is not None and id(bridge) not in found:
        return f"the bridge above it, {bridge.name}, was not enumerated"
    if bridge is not None and not bridge.secondary_bus:
        return (f"the bridge above it, {bridge.name}, got no bus number (the domain's bus "
                "numbers ran out)")
    return "the PCI scan did not find it"


def as_topology_errors(system: Any, problems: list[Unbound]) -> list[str]:
    """Each problem at its device's line of the topology: ``file:line: field: ...``."""
    m = system.machine
    topo = m.topology
    out = []
    for u in problems:
        where = m.origin.get(u.device, ())
        field = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in where)[1:]
        line = topo.line_of(*where) if where else None
        at = f"{topo.source}:{line}" if line is not None else topo.source
        out.append(f"{at}: {field or u.device}: {u}")
    return out


def unbound_devices(system: Any) -> list[Unbound]:
    """Every declared device that is not bound to its driver, in machine order."""
    k, m = system.k, system.machine
    by_addr = {(d.bus.domain_nr, d.bus.number, d.devfn): d for d in k.pci.devices}
    domain_of: dict[int, int] = {}
    for v in vmd_devices(k):
        for hw in m.vmds:
            if hw.bus is not None and (hw.bus.number, hw.devfn) == (v.dev.bus.number,
                                                                    v.dev.devfn):
                domain_of[id(hw)] = v.sysdata.domain
    out: list[Unbound] = []
    found: set[int] = set()
    for fn, vmd in _declared(m):
        driver = _driver_for(fn)
        if driver is None:
            continue
        if vmd is not None and id(vmd) not in domain_of:
            out.append(Unbound(fn.name, "not enumerated", driver,
                               f"it is behind {vmd.name}, which is not bound to vmd"))
            continue
        domain = domain_of[id(vmd)] if vmd is not None else 0
        pdev = by_addr.get((domain, fn.bus.number, fn.devfn))
        if pdev is None:
            out.append(Unbound(fn.name, "not enumerated", driver, _not_enumerated(fn, found)))
            continue
        found.add(id(fn))
        bound = pdev.driver.name if pdev.driver is not None else None
        if bound != driver:
            name = pci_name(pdev)
            why = _kernel_says(k, name) or "no driver claimed it and the kernel said nothing"
            if bound is not None:
                why = f"bound to {bound} instead"
            out.append(Unbound(fn.name, name, driver, why))
    return out
