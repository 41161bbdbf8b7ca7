"""21c80c9fefc3 "x86/PCI: VMD: Fix infinite loop executing irq's" (v4.8-rc4).

97e923063575 (v4.8-rc1) made a second ``list_del_rcu`` of a child harmless by
re-initialising the node after the first (``INIT_LIST_HEAD``): the node then
points at itself. A CPU whose demux walk stood on that node when it was
taken off follows ``next`` back to the same node, for ever, in hard-IRQ
context, calling the child's flow handler each time round. The fix drops the
re-initialisation, so a walker on a removed node goes on to its old
successor, and guards against a second delete with an ``enabled`` flag.

Before the fix: ``vmd_irq_disable`` of v4.8-rc1 to rc3. The probe explores
seed-teardown with an execution budget: a walk that never ends is a livelock.
"""

from __future__ import annotations

from typing import Any

from vmdsim.drivers.vmd.dev import vmd_irq
from vmdsim.history.corpus import Finding, Regression, Side
from vmdsim.history.probes import explored
from vmdsim.kernel.locking import raw_spin_lock_irqsave, raw_spin_unlock_irqrestore
from vmdsim.kernel.rculist import INIT_LIST_HEAD, list_del_rcu
from vmdsim.variants import variant

MAX_STEPS = 5_000  # an execution of seed-teardown takes a few hundred steps


@variant("vmdsim.drivers.vmd.msi.vmd_irq_disable")
def vmd_irq_disable(data: Any) -> None:
    """v4.8-rc1 to rc3: delete the node, then point it at itself."""
    vmdirq: vmd_irq = data.chip_data
    data.chip.irq_mask(data)
    lock = vmdirq.vmd.module.list_lock
    flags = raw_spin_lock_irqsave(lock)
    list_del_rcu(vmdirq)
    INIT_LIST_HEAD(vmdirq)
    vmdirq.enabled = False  # the model's record (Linux has the field since the fix)
    raw_spin_unlock_irqrestore(lock, flags)


def _teardown_against_the_walk() -> Finding:
    return explored("seed-teardown", max_steps=MAX_STEPS, protocol="srcu", desc_free="rcu")


ENTRIES = [
    Regression(
        "list-loop", "21c80c9fefc3", "x86/PCI: VMD: Fix infinite loop executing irq's",
        "v4.8", "no schedule of a child teardown against its vector's walk leaves the walk "
        f"running past {MAX_STEPS:,} steps (seed-teardown)", _teardown_against_the_walk,
        Side("v4.8-rc1..rc3: INIT_LIST_HEAD after list_del_rcu", variants=(vmd_irq_disable,)),
        Side("no re-initialisation; an enabled flag (Linux since the fix)"),
        note="on today's SRCU protocol: the loop does not depend on how the mapping is "
             "freed"),
]
