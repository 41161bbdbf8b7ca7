"""647e9651a011 "PCI: vmd: Silence 'set affinity failed' warning" (v6.12).

A VMD child IRQ cannot be retargeted: it rides on a VMD vector. Until v6.11
the VMD chip still had an ``irq_set_affinity``, a stub returning -EINVAL, so
taking a CPU offline made ``migrate_one_irq`` try every child whose mask held
that CPU and print "IRQ<n>: set affinity failed(-22)." for each. The fix
(part of a series giving MSI domains ``MSI_FLAG_NO_AFFINITY``) leaves the chip
without one, and the core passes such IRQs over quietly.

Before the fix: the VMD chip's ``irq_set_affinity`` stub. The probe runs the
interrupt side of CPU offline (``kernel/irq/cpuhotplug.py``).
"""

from __future__ import annotations

from typing import Any

from vmdsim.check.scenarios.worlds import small_topology
from vmdsim.history.corpus import Finding, Regression, Side
from vmdsim.history.probes import booted, logged
from vmdsim.kernel.errno import EINVAL
from vmdsim.kernel.irq.cpuhotplug import irq_migrate_all_off_this_cpu
from vmdsim.variants import variant


@variant("vmdsim.drivers.vmd.msi.vmd_msi_controller.irq_set_affinity")
def vmd_irq_set_affinity(data: Any, dest: frozenset[int], force: bool) -> int:
    """v4.5-v6.11: "VMD child IRQs can't be retargeted"."""
    return -EINVAL


def _offline_a_cpu() -> Finding:
    """Take CPU1's interrupts away: nothing warns."""
    s = booted(small_topology(vectors=4, queues=2), "<cpu-offline>")
    irq_migrate_all_off_this_cpu(s.k, 1)
    found = logged(s, "set affinity failed")
    if found:
        return Finding("affinity-warning", f"{len(found)} warnings: {found[0]}")
    return Finding("clean", "CPU1's interrupts moved or were passed over, no warning")


ENTRIES = [
    Regression(
        "cpu-offline", "647e9651a011", "PCI: vmd: Silence 'set affinity failed' warning",
        "v6.12", "taking a CPU offline prints no 'set affinity failed' for the VMD's children",
        _offline_a_cpu,
        Side("v4.5-v6.11: an irq_set_affinity stub (-EINVAL)",
             variants=(vmd_irq_set_affinity,)),
        Side("no irq_set_affinity, MSI_FLAG_NO_AFFINITY (Linux since the fix)"),
        note="only the interrupt side of CPU offline is modelled"),
]
