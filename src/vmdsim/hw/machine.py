"""A whole machine's hardware, built from a topology.

The machine is what a person would find after opening the case: a root
complex with its host bridge function at 00:00.0, the VMDs and primary-domain
root ports on bus 0, root ports in each VMD's hidden domain, and the drives in
their slots. Building it is a hardware act (cards into slots, present at
power-on), followed by the firmware's resource assignment; nothing here is an
OS. A running machine's hot-plug is the root ports' business:
``m.by_name["vmd0.rp2"].unpopulate()`` pulls a drive, ``populate(drive)``
inserts one.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path
from typing import TypeVar

from vmdsim.errors import TopologyError
from vmdsim.hw.fabric import InterruptController, RootComplex
from vmdsim.hw.firmware import FirmwareError, bios_assign_resources
from vmdsim.hw.function import PciFunction
from vmdsim.hw.nvme import NvmeController
from vmdsim.hw.regs import PCI_CLASS_BRIDGE_HOST, PCI_EXP_TYPE_RC_END, PCI_VENDOR_ID_INTEL
from vmdsim.hw.rootport import RootPort
from vmdsim.hw.vmd import VMD_CFGBAR, VMD_MEMBAR1, VMD_MEMBAR2, Vmd
from vmdsim.topology import NvmeSpec, RootPortSpec, Topology, load

PCI_DEVICE_ID_INTEL_SKX_DMI3 = 0x2020

_F = TypeVar("_F", bound=PciFunction)


class HostBridge(PciFunction):
    """The host bridge function at 00:00.0 (Sky Lake-E DMI3 registers): IDs only."""

    def __init__(self, name: str = "host-bridge") -> None:
        super().__init__(name, PCI_VENDOR_ID_INTEL, PCI_DEVICE_ID_INTEL_SKX_DMI3,
                         PCI_CLASS_BRIDGE_HOST)
        self.add_pcie_capability(PCI_EXP_TYPE_RC_END)
        self.finalize()


class Machine:
    """The hardware of one machine; ``Machine.build(topology)`` or ``Machine.load(path)``."""

    def __init__(self, topology: Topology) -> None:
        self.topology = topology
        self.rc = RootComplex(ncpus=topology.cpus, ram_size=topology.ram)
        self.host_bridge = self.rc.root_bus.attach(HostBridge(), 0)
        self.vmds: list[Vmd] = []
        self.root_ports: list[RootPort] = []
        self.nvmes: list[NvmeController] = []
        self.by_name: dict[str, PciFunction] = {self.host_bridge.name: self.host_bridge}
        self.origin: dict[str, tuple] = {}  # device name -> its path in the topology

    @property
    def ncpus(self) -> int:
        return self.topology.cpus

    @property
    def apic(self) -> InterruptController:
        """Where every MSI that reaches the CPUs is decoded."""
        return self.rc.apic

    @classmethod
    def load(cls, path: str | Path | None = None) -> Machine:
        """Build from a topology file, or the built-in default when ``path`` is None."""
        return cls.build(load(path))

    @classmethod
    def build(cls, topo: Topology) -> Machine:
        m = cls(topo)
        for i, v in enumerate(topo.vmds):
            where = ("vmd", i)
            vmd = m._make(where, "device", partial(
                Vmd, v.name, device_id=v.device, aborts=m.rc.aborts, msix_vectors=v.msix_vectors,
                cfgbar_size=v.cfgbar, membar1_size=v.membar1, membar2_size=v.membar2,
                bus_restriction=v.bus_restriction, vmlock=v.vmlock, host_phys=v.host_phys))
            m.rc.root_bus.attach(vmd, v.devfn >> 3, v.devfn & 7)
            m.vmds.append(vmd)
            for j, r in enumerate(v.root_ports):
                rp = m._root_port(r, where + ("root_port", j))
                vmd.hidden_bus.attach(rp, r.slot)
        for i, r in enumerate(topo.root_ports):
            rp = m._root_port(r, ("root_port", i))
            m.rc.root_bus.attach(rp, r.slot >> 3, r.slot & 7)
        try:
            bios_assign_resources(m.rc)
        except FirmwareError as e:
            raise m._firmware_error(e) from None
        return m

    def _firmware_error(self, e: FirmwareError) -> TopologyError:
        """Name the topology field whose BAR did not fit."""
        topo = self.topology
        for i, vmd in enumerate(self.vmds):
            if vmd is e.fn:
                key = {VMD_CFGBAR: "cfgbar", VMD_MEMBAR1: "membar1", VMD_MEMBAR2: "membar2"}
                field = key[e.bar]
                return TopologyError(topo.source, topo.line_of("vmd", i, field),
                                     f"vmd[{i}].{field}", str(e))
        return TopologyError(topo.source, None, "machine", str(e))

    def _root_port(self, r: RootPortSpec, where: tuple) -> RootPort:
        rp = self._make(where, "device", lambda: RootPort(
            r.name, aborts=self.rc.aborts, device_id=r.device, slot_number=r.slot_number,
            hotplug=r.hotplug, irq=r.irq, revision=r.revision))
        self.root_ports.append(rp)
        if r.nvme is not None:
            rp.populate(self._nvme(r.nvme, where + ("nvme",)), at_power_on=True)
        return rp

    def _nvme(self, n: NvmeSpec, where: tuple) -> NvmeController:
        nvme = self._make(where, None, lambda: NvmeController(
            n.name, nr_io_queues=n.queues, msix_vectors=n.msix_vectors, vendor=n.vendor,
            device_id=n.device, ltr_max_snoop=n.ltr_max_snoop, revision=n.revision))
        self.nvmes.append(nvme)
        return nvme

    def _make(self, where: tuple, field: str | None, make: Callable[[], _F]) -> _F:
        """Construct a device; a device model's refusal becomes an error at the topology line."""
        try:
            fn = make()
        except ValueError as e:
            dotted = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in where)[1:]
            raise TopologyError(self.topology.source, self.topology.line_of(*where),
                                f"{dotted}.{field}" if field else dotted, str(e)) from None
        self.by_name[fn.name] = fn
        self.origin[fn.name] = where
        return fn

    def functions(self) -> Iterator[PciFunction]:
        """Every function in the machine, primary domain first, then each hidden domain."""
        yield from self.rc.root_bus.walk()
        for vmd in self.vmds:
            yield from vmd.hidden_bus.walk()
