"""e382dffc904d "x86/PCI: VMD: Use x86_vector_domain as parent domain" (v4.8).

The VMD's MSI domain had no parent. The x86 vector code took every IRQ's
outermost ``irq_data`` to be the vector domain's: ``irq_force_complete_move``,
run for each IRQ as a CPU goes offline, walked a VMD child's hierarchy to its
root — the VMD domain's level — and read that level's ``chip_data``, a
``struct vmd_irq``, as a ``struct apic_chip_data``. The fix gave the VMD domain
``x86_vector_domain`` as its parent. (Linux later made the VMD domain
parentless again, once the x86 code looked the vector level up by domain,
which is what today's model does; that is the "after" side here.)

Before the fix: v4.7's ``irq_force_complete_move`` (the root level's data, of
whatever type), with the VMD chip's ``irq_set_affinity`` stub of those days.
C reads the wrong structure silently; the model says so as a failure.
"""

from __future__ import annotations

from typing import Any

from vmdsim.check.scenarios.worlds import small_topology
from vmdsim.errors import VmdsimError
from vmdsim.history.corpus import Finding, Regression, Side
from vmdsim.history.cpu_offline import vmd_irq_set_affinity
from vmdsim.history.probes import booted, failure
from vmdsim.kernel.irq.cpuhotplug import irq_migrate_all_off_this_cpu
from vmdsim.kernel.irq.irqdesc import irq_desc
from vmdsim.kernel.irq.x86_vector import _free_moved_vector, apic_chip_data, apic_chip_data_of
from vmdsim.variants import variant


class WrongChipData(VmdsimError):
    """One structure read as another (C casts silently; the model stops there)."""

    kind = "type-confusion"


@variant("vmdsim.kernel.irq.x86_vector.irq_force_complete_move")
def irq_force_complete_move(desc: irq_desc) -> None:
    """v4.7: the outermost level's ``chip_data``, taken to be the vector domain's."""
    d = desc.irq_data
    data: Any = apic_chip_data_of(d)  # apic_chip_data(irqdata): walk to the root
    if data is None:
        return
    if not isinstance(data, apic_chip_data):
        raise WrongChipData(f"irq_force_complete_move: IRQ {d.irq}'s root irq_data holds a "
                            f"{type(data).__name__}, read as struct apic_chip_data")
    if data.move_in_progress and data.prev_vector:
        _free_moved_vector(d)


def _offline_with_vmd_children() -> Finding:
    s = booted(small_topology(vectors=4, queues=2), "<vector-parent>")
    try:
        irq_migrate_all_off_this_cpu(s.k, 1)
    except VmdsimError as e:
        return failure(e)
    return Finding("clean", "no VMD child's data was read as the vector domain's")


ENTRIES = [
    Regression(
        "vector-parent", "e382dffc904d", "x86/PCI: VMD: Use x86_vector_domain as parent "
        "domain", "v4.8", "taking a CPU offline reads no VMD child's data as the APIC "
        "vector domain's", _offline_with_vmd_children,
        Side("v4.7: a parentless VMD domain, irq_force_complete_move at the root",
             variants=(irq_force_complete_move, vmd_irq_set_affinity)),
        Side("today: the vector level found by domain (a parentless VMD domain has none)"),
        note="the fix's own code (a parent for the VMD domain) was later undone; the model "
             "runs today's, which keeps the property"),
]
