"""Moving interrupts off a CPU that goes offline (``kernel/irq/cpuhotplug.c``).

When a CPU goes down, it runs ``irq_migrate_all_off_this_cpu`` itself, with
interrupts off, late in its teardown: every started IRQ that may target it is
given a new target (``migrate_one_irq``). An IRQ whose chip cannot set an
affinity is left as it is (a debug message only: "Unable to migrate away"); a
managed IRQ whose CPUs all go away is shut down; one whose new mask has no
online CPU left breaks its affinity and takes every online CPU; a chip that
refuses the move prints ``IRQ%u: set affinity failed(%d).`` (ratelimited).
On x86, ``irq_force_complete_move`` first finishes a move of the IRQ's vector
that is still pending.

Where the model simplifies: this is the only part of CPU offline it has. The
affinity handed to the chip already leaves the dying CPU out (Linux hands the
mask whole and the x86 vector code skips CPUs that are not online), nothing
else learns that the CPU is gone (its tasks, timers and later interrupts),
so a machine is not run on after this; the message is not ratelimited.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from vmdsim.kernel.irq.chip import irq_do_set_affinity, irq_shutdown_and_deactivate
from vmdsim.kernel.irq.flags import IRQD_MANAGED_SHUTDOWN
from vmdsim.kernel.irq.irqdesc import (
    irq_data_get_affinity_mask,
    irq_data_get_effective_affinity_mask,
    irqd_affinity_is_managed,
    irqd_is_started,
    irqd_set,
)
from vmdsim.kernel.irq.x86_vector import irq_force_complete_move
from vmdsim.kernel.locking import raw_spin_lock, raw_spin_unlock
from vmdsim.kernel.printk import pr_warn

if TYPE_CHECKING:
    from vmdsim.kernel.core import Kernel
    from vmdsim.kernel.irq.irqdesc import irq_data, irq_desc


def irq_needs_fixup(d: irq_data, cpu: int) -> bool:
    """The IRQ may target ``cpu``: its effective affinity (or, if it has none, its
    affinity) holds it."""
    mask = irq_data_get_effective_affinity_mask(d) or irq_data_get_affinity_mask(d)
    return cpu in mask


def migrate_one_irq(desc: irq_desc, cpu: int, online: frozenset[int]) -> bool:
    """Called with ``desc.lock`` held; True if the IRQ's affinity had to be broken."""
    d = desc.irq_data
    chip = d.chip
    if chip is None or chip.irq_set_affinity is None:
        return False  # pr_debug("IRQ %u: Unable to migrate away")
    irq_force_complete_move(desc)
    if not irqd_is_started(d) or not irq_needs_fixup(d, cpu):
        return False
    affinity = irq_data_get_affinity_mask(d)
    brokeaff = False
    if not affinity & online:
        if irqd_affinity_is_managed(d):
            irqd_set(d, IRQD_MANAGED_SHUTDOWN)
            irq_shutdown_and_deactivate(desc)
            return False
        affinity = online
        brokeaff = True
    err = irq_do_set_affinity(d, affinity & online, False)
    if err:
        pr_warn(desc.k, f"IRQ{d.irq}: set affinity failed({err}).")
        brokeaff = False
    return brokeaff


def irq_migrate_all_off_this_cpu(k: Kernel, cpu: int) -> None:
    """Give every IRQ that may target ``cpu`` a target among the other CPUs."""
    online = k.irq.default_affinity() - {cpu}
    for irq in sorted(k.irq.sparse_irqs.slots):
        desc = k.irq.sparse_irqs.slots[irq]
        raw_spin_lock(desc.lock)
        try:
            migrate_one_irq(desc, cpu, online)  # broken affinity: pr_debug_ratelimited only
        finally:
            raw_spin_unlock(desc.lock)
