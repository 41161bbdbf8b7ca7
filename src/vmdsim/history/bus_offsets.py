"""e3dffa4f6c36 "PCI: vmd: Fix config addressing when using bus offsets" (v5.4).

With a bus restriction (VMCAP bit 0, VMCONFIG bits 9:8 = 1) the hidden
domain starts at bus 128, but the VMD maps config space into CFGBAR linearly
from that first bus: bus 128 is at offset 0. The driver computed the offset
from the bus number itself (``bus->number << 20``), so every config access
went 128 MiB too far — past the end of CFGBAR, where ``vmd_cfg_addr``
refuses it — and enumeration found nothing behind the VMD. The fix
subtracts ``busn_start`` (kept in ``vmd_dev`` from then on).

Before the fix: ``vmd_cfg_addr`` of v5.2-v5.3, in today's terms.
"""

from __future__ import annotations

from typing import Any

from vmdsim.drivers.vmd.cfg import PCIE_ECAM_OFFSET
from vmdsim.drivers.vmd.dev import vmd_dev
from vmdsim.drivers.vmd.features import VMD_CFGBAR
from vmdsim.history.corpus import Finding, Regression, Side
from vmdsim.history.probes import booted
from vmdsim.kernel.io import iomem
from vmdsim.kernel.pci import resource_size
from vmdsim.variants import variant

# A 28C0 (Ice Lake-SP class, bus restrictions) whose firmware chose bus 128.
_OFFSET_128 = """[machine]
cpus = 2

[[vmd]]
device = 0x28C0
msix_vectors = 4
bus_restriction = 1

[[vmd.root_port]]
slot = 0
nvme = { queues = 1 }
"""


@variant("vmdsim.drivers.vmd.cfg.vmd_cfg_addr")
def vmd_cfg_addr(vmd: vmd_dev, bus: Any, devfn: int, reg: int, length: int) -> iomem | None:
    """v5.2-v5.3: the bus number itself, not its distance from ``busn_start``."""
    offset = PCIE_ECAM_OFFSET(bus.number, devfn, reg)
    if offset + length > resource_size(vmd.dev.resource[VMD_CFGBAR]):
        return None
    return vmd.cfgbar + offset


def _enumerate_behind_offset() -> Finding:
    """Boot a VMD whose domain starts at bus 128: every declared device binds."""
    s = booted(_OFFSET_128, "<bus-offsets>")
    if s.unbound:
        return Finding("unbound", "; ".join(str(u) for u in s.unbound))
    return Finding("clean", "the root port and the drive behind bus 128 came up bound")


ENTRIES = [
    Regression(
        "bus-offsets", "e3dffa4f6c36", "PCI: vmd: Fix config addressing when using bus "
        "offsets", "v5.4", "a VMD whose domain starts at bus 128 enumerates and binds every "
        "declared device", _enumerate_behind_offset,
        Side("v5.2-v5.3: bus->number << 20", variants=(vmd_cfg_addr,)),
        Side("(bus->number - busn_start) << 20 (Linux since the fix)"),
        note="PCIE_ECAM_OFFSET masks the bus to 8 bits as Linux's macro does; v5.3 added "
             "the offset by hand, with the same result for bus numbers below 256"),
]
