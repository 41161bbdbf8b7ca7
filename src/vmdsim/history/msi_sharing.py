"""9c2053040ca7 "x86/PCI: VMD: Separate MSI and MSI-X vector sharing" (v4.8).

v4.5-v4.7 gave every child IRQ the VMD vector with the fewest children,
vector 0 included, whatever the child was. Devices on plain MSI (the root
ports' services: PME, AER, hot-plug) then shared vectors with the NVMe
drives' MSI-X queues, and every interrupt of such a vector ran both. The fix
puts every MSI child on vector 0 and spreads only MSI-X children over the
others (Linux later narrowed the fast vectors to NVMe by class, the rule the
model's ``least-loaded`` keeps). The bug is performance; no message.

Before the fix: ``vmd_next_irq`` of v4.5-v4.7, whatever policy is chosen.
"""

from __future__ import annotations

from typing import Any

from vmdsim.check.scenarios.worlds import small_topology
from vmdsim.drivers.vmd.dev import vmd_dev, vmd_irq, vmd_irq_list
from vmdsim.drivers.vmd.query import vmd_devices
from vmdsim.history.corpus import Finding, Regression, Side
from vmdsim.history.probes import booted
from vmdsim.kernel.locking import raw_spin_lock_irqsave, raw_spin_unlock_irqrestore
from vmdsim.kernel.shared import peek
from vmdsim.variants import variant


@variant("vmdsim.drivers.vmd.msi.vmd_next_irq")
def vmd_next_irq(vmd: vmd_dev, desc: Any, virq: int, vmdirq: vmd_irq) -> vmd_irq_list:
    """v4.5-v4.7: the vector with the fewest children, from vector 0, for every child."""
    lock = vmd.module.list_lock
    flags = raw_spin_lock_irqsave(lock)
    best = 0
    for i in range(vmd.msix_count):
        if vmd.irqs[i].count < vmd.irqs[best].count:
            best = i
    irqs = vmd.irqs[best]
    irqs.count = irqs.count + 1
    vmd.children.append(vmdirq)
    raw_spin_unlock_irqrestore(lock, flags)
    return irqs


def _mixed_vectors() -> Finding:
    """Boot two drives behind a 4-vector VMD: no vector carries MSI and MSI-X children."""
    s = booted(small_topology(vectors=4, drives=2), "<msi-sharing>")
    k = s.k
    mixed = []
    for vmd in vmd_devices(k):
        for irqs in vmd.irqs:
            kinds = {bool(k.irq.irq_get_msi_desc(peek(c, "virq")).is_msix)
                     for c in vmd.children if peek(c, "irq") is irqs}
            if kinds == {True, False}:
                mixed.append(irqs.index)
    if mixed:
        return Finding("msi-shares-msix", f"vectors {', '.join(map(str, mixed))} carry both "
                                          "plain-MSI and MSI-X children")
    return Finding("clean", "MSI children and MSI-X children never share a vector")


ENTRIES = [
    Regression(
        "msi-sharing", "9c2053040ca7", "x86/PCI: VMD: Separate MSI and MSI-X vector sharing",
        "v4.8", "no VMD vector carries both a plain-MSI child (a root port's services) and "
        "an MSI-X child (an NVMe queue)", _mixed_vectors,
        Side("v4.5-v4.7: fewest children over all vectors", variants=(vmd_next_irq,)),
        Side("MSI children on the first vector, the rest spread (Linux since the fix)")),
]
