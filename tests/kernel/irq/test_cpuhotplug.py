"""The interrupt side of CPU offline: irq_migrate_all_off_this_cpu over a VMD machine, with
remapping (the VMD's vectors move, its children are passed over) and in bypass (a managed
queue IRQ whose only CPU goes is shut down)."""

from __future__ import annotations

from pathlib import Path

import vmdsim
from vmdsim.kernel.irq.cpuhotplug import irq_migrate_all_off_this_cpu
from vmdsim.kernel.irq.irqdesc import (
    irq_data_get_effective_affinity_mask,
    irqd_affinity_is_managed,
    irqd_is_started,
)

BYPASS = Path(__file__).resolve().parents[3] / "examples" / "topologies" / "bypass.toml"


def _active(k):
    return {irq: d for irq, d in k.irq.sparse_irqs.slots.items() if d.action is not None}


def test_the_vmd_vectors_leave_the_cpu_and_its_children_stay_as_they_were():
    k = vmdsim.boot().k
    active = _active(k)
    vmd_chip, child_chip = "PCI-MSIX-0000:00:0e.0", "VMD-PCI-MSIX-"  # v6.17+ names
    on_cpu1 = [irq for irq, d in active.items() if d.irq_data.chip.name == vmd_chip
               and irq_data_get_effective_affinity_mask(d.irq_data) == {1}]
    managed_children = [irq for irq, d in active.items()
                        if d.irq_data.chip.name.startswith(child_chip)
                        and irqd_affinity_is_managed(d.irq_data)
                        and d.irq_data.common.affinity == {1}]
    assert on_cpu1 and managed_children
    irq_migrate_all_off_this_cpu(k, 1)
    for irq in on_cpu1:
        mask = irq_data_get_effective_affinity_mask(active[irq].irq_data)
        assert mask and 1 not in mask, irq
    # A VMD child cannot be retargeted (its chip has no irq_set_affinity): even a managed
    # one whose only CPU went away stays started, and nothing is printed.
    assert all(irqd_is_started(active[irq].irq_data) for irq in managed_children)
    assert not [line for line in k.log.lines() if "affinity" in line]


def test_in_bypass_a_managed_queue_irq_of_the_cpu_is_shut_down():
    k = vmdsim.boot(str(BYPASS)).k
    managed = [d for d in _active(k).values() if irqd_affinity_is_managed(d.irq_data)
               and d.irq_data.common.affinity == {1}]
    assert managed
    irq_migrate_all_off_this_cpu(k, 1)
    assert not any(irqd_is_started(d.irq_data) for d in managed)
