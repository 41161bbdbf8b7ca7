"""vmd_cfg_addr as it was before e3dffa4f6c36 (v5.2-v5.3), written from scratch.

"PCI: vmd: Fix config addressing when using bus offsets": the VMD maps its
domain's config space into CFGBAR linearly from the domain's first bus, but
the driver used the bus number itself. On a part whose firmware set a bus
restriction (the domain starts at bus 128, or 224 on client parts), every
config cycle lands past the end of CFGBAR and the scan finds nothing:

    vmdsim run examples/topologies/client.toml --variant examples/variants/cfg_addr_v5_3.py

exits 1, listing the root port and the drive as not bound; without
``--variant`` both bind. ``vmdsim regressions bus-offsets`` runs the same
code (``src/vmdsim/history/bus_offsets.py``) on a bus-128 server part.
"""

from vmdsim.drivers.vmd.cfg import PCIE_ECAM_OFFSET
from vmdsim.drivers.vmd.features import VMD_CFGBAR
from vmdsim.kernel.pci import resource_size
from vmdsim.variants import variant


@variant("vmdsim.drivers.vmd.cfg.vmd_cfg_addr")
def vmd_cfg_addr(vmd, bus, devfn, reg, length):
    offset = PCIE_ECAM_OFFSET(bus.number, devfn, reg)  # the fix: bus.number - vmd.busn_start
    if offset + length > resource_size(vmd.dev.resource[VMD_CFGBAR]):
        return None  # the access would leave CFGBAR: -EFAULT, all ones
    return vmd.cfgbar + offset
