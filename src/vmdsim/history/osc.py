"""04b12ef163d1 "PCI: vmd: Honor ACPI _OSC on PCIe features" (v5.17).

Firmware's _OSC tells the OS which PCIe features it may drive natively (AER,
hot-plug, PME, LTR, DPC). The host bridge the VMD driver creates for its
domain started with every ``native_*`` flag set, so the port services driver
enabled AER on the root ports behind the VMD even where _OSC had kept AER
for the platform ("_OSC: platform does not support [AER]" and then
"pcieport 10000:e0:06.0: AER: enabled with IRQ 146"): on an Alder Lake client
with a Samsung Gen4 drive, an AER message flood. The fix copies the flags of
the host bridge the VMD itself sits under (``vmd_copy_host_bridge_flags``,
as today's driver names it).

Before the fix: the copy did not exist — a ``vmd_copy_host_bridge_flags`` that
does nothing.
"""

from __future__ import annotations

from typing import Any

from vmdsim.check.scenarios.worlds import small_topology
from vmdsim.drivers.pcieport.bus import PCIE_PORT_SERVICE_AER, pcie_port_bus_of
from vmdsim.history.corpus import Finding, Regression, Side
from vmdsim.history.probes import booted
from vmdsim.kernel.pci import pci_domain_nr, pci_name
from vmdsim.variants import variant


@variant("vmdsim.drivers.vmd.probe.vmd_copy_host_bridge_flags")
def vmd_copy_host_bridge_flags(root_bridge: Any, vmd_bridge: Any) -> None:
    """v5.16 and before: the VMD domain's host bridge keeps its defaults (all native)."""


def _aer_withheld_by_osc() -> Finding:
    """Firmware's _OSC keeps AER: no port in the VMD domain gets the AER service."""
    s = booted(small_topology(vectors=4, device=0x467F), "<osc>", native={"aer": False})
    ports = [pci_name(d.port) for d in pcie_port_bus_of(s.k).devices
             if d.service == PCIE_PORT_SERVICE_AER and pci_domain_nr(d.port.bus) != 0]
    if ports:
        return Finding("aer-enabled", f"_OSC withheld AER, yet AER runs on {', '.join(ports)}")
    return Finding("clean", "_OSC withheld AER and no port behind the VMD runs it")


ENTRIES = [
    Regression(
        "osc", "04b12ef163d1", "PCI: vmd: Honor ACPI _OSC on PCIe features", "v5.17",
        "a feature firmware's _OSC keeps for itself (AER) is not enabled on the ports behind "
        "the VMD", _aer_withheld_by_osc,
        Side("v5.16: the domain's host bridge claims every feature",
             variants=(vmd_copy_host_bridge_flags,)),
        Side("the flags copied from the VMD's own host bridge (Linux since the fix)")),
]
