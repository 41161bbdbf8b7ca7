"""f6b7bb847ca8 "PCI: vmd: Offset Client VMD MSI-X vectors" (v5.11).

On client VMDs (Tiger Lake's 9A0B, then 467F, 4C3D and later IDs) MSI-X
vector 0 is for software triggering and does not forward MSIs remapped from
the domain. v5.10 put every child that is not an NVMe drive on vector 0 (the
"slow" vector): an AHCI controller behind a client VMD never got an
interrupt. The fix adds ``VMD_FEAT_OFFSET_FIRST_VECTOR`` to the client IDs,
``first_vec = 1``, and keeps child IRQs off vector 0.

Before the fix: ``vmd_next_irq`` of v5.10 (vector 0 for everything but NVMe,
the fewest-children fast vector from 1 for NVMe), whatever policy is chosen.
The model's non-NVMe children are the root ports' services (PME, AER and
hot-plug on one MSI vector), so the probe pulls a drive: the hot-plug
interrupt must reach pciehp, which removes the drive.
"""

from __future__ import annotations

from typing import Any

from vmdsim.check.scenarios.worlds import small_topology
from vmdsim.drivers.nvme import nvme_core_of
from vmdsim.drivers.vmd.dev import vmd_dev, vmd_irq, vmd_irq_list
from vmdsim.history.corpus import Finding, Regression, Side
from vmdsim.history.probes import booted
from vmdsim.kernel.locking import raw_spin_lock_irqsave, raw_spin_unlock_irqrestore
from vmdsim.sim.workload import Load, parse_hotplug, run_load
from vmdsim.variants import variant


@variant("vmdsim.drivers.vmd.msi.vmd_next_irq")
def vmd_next_irq(vmd: vmd_dev, desc: Any, virq: int, vmdirq: vmd_irq) -> vmd_irq_list:
    """v5.10: no first_vec; every child but an NVMe queue shares vector 0."""
    lock = vmd.module.list_lock
    flags = raw_spin_lock_irqsave(lock)
    best = 0
    if vmd.msix_count > 1 and vmdirq.fast:
        best = 1
        for i in range(1, vmd.msix_count):
            if vmd.irqs[i].count < vmd.irqs[best].count:
                best = i
    irqs = vmd.irqs[best]
    irqs.count = irqs.count + 1  # the model counts every child (Linux: NVMe ones)
    vmd.children.append(vmdirq)
    raw_spin_unlock_irqrestore(lock, flags)
    return irqs


def _hot_remove_on_client() -> Finding:
    """Pull the drive from a hot-plug port behind a client VMD: pciehp must see it go."""
    s = booted(small_topology(vectors=4, device=0x467F, hotplug=True), "<client-vector0>")
    run_load(s, Load(rate=100.0, duration_ms=2.0, hotplug=parse_hotplug("1:remove:vmd0.rp0")))
    dropped = s.machine.vmds[0].remap_dropped
    if nvme_core_of(s.k).devices:
        # The port's first message (at boot) went to vector 0 and was not forwarded; its
        # status bits were never cleared, so the slot event raised no new message.
        return Finding("missed-interrupt", f"the drive was pulled but is still bound; the VMD "
                                           f"forwarded none of the {dropped} child message(s) "
                                           "remapped to its vector 0 since boot")
    return Finding("clean", "pciehp saw the slot empty and removed the drive")


ENTRIES = [
    Regression(
        "client-vector0", "f6b7bb847ca8", "PCI: vmd: Offset Client VMD MSI-X vectors", "v5.11",
        "on a client VMD, a child that is not an NVMe drive (a root port's hot-plug "
        "service) gets its interrupts: a pulled drive is removed", _hot_remove_on_client,
        Side("v5.10: non-NVMe children on vector 0", variants=(vmd_next_irq,)),
        Side("first_vec = 1 on client IDs (Linux since the fix)"),
        note="the bug report's child was an AHCI controller; the model has no AHCI, and "
             "its root ports' services are the non-NVMe children that share the slow vector"),
]
