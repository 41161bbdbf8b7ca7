"""``vmdsim irq-domains``: the IRQ domains' debugfs files, as ``head`` prints several files,
and what an RFC parent domain under a VMD MSI domain costs.

The cost lines are the model's (Linux prints nothing of the kind): the
parent's own ``irq_domain`` with its reverse map of ``size`` entries, and the
``irq_data`` the hierarchy gives every child IRQ at the parent's level (read
from the allocator: objects the vmd driver and the IRQ core hold for it).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from vmdsim.drivers.vmd.query import vmd_devices
from vmdsim.kernel.irq.debugfs import irq_domains_debugfs
from vmdsim.kernel.irq.irqdesc import irq_data

if TYPE_CHECKING:
    from vmdsim.kernel.core import Kernel


def irq_domains(k: Kernel) -> str:
    files = irq_domains_debugfs(k)
    parts = [f"==> {name} <==\n{text}" for name, text in files.items()]
    return "\n\n".join(parts + parent_costs(k))


def parent_costs(k: Kernel) -> list[str]:
    """One paragraph per VMD with an RFC parent domain (``rfc_v3.py``)."""
    out = []
    for vmd in vmd_devices(k):
        parent = vmd.parent_domain
        if parent is None:
            continue
        levels = sum(1 for o in k.mem.leaks("irq")
                     if isinstance(o, irq_data) and o.domain is parent)
        over = parent.mapcount - parent.revmap_size
        out.append(
            f"model: {vmd.name}'s RFC parent domain {parent.name} (size {parent.revmap_size}, "
            f"the VMD's vector count) maps {parent.mapcount} child IRQs"
            + (f", {over} more than its size: allocation never consults it" if over > 0
               else ": allocation never consults its size")
            + f"; it costs 1 irq_domain with a {parent.revmap_size}-entry reverse map and "
              f"{levels} irq_data (one per child IRQ), which no lookup uses")
    return out
