"""97e923063575 "x86/PCI: VMD: Initialize list item in IRQ disable" (v4.8-rc1).

v4.5-v4.7's ``vmd_irq_disable`` took the child off its vector's list with
``list_del_rcu`` every time it was called, and the IRQ core of the day called
a chip's ``irq_disable`` every time it disabled an IRQ, already disabled or
not. A second call deletes a node whose ``prev`` is ``LIST_POISON2`` and writes
through it: an oops. The commit names no path to the second call; one the
v4.7 code had is the spurious-interrupt detector (children were still on
``handle_simple_irq``, 30ce03503813) disabling an idle child — "nobody
cared" — and its driver freeing that IRQ later (``free_irq`` -> ``irq_shutdown``
-> ``irq_disable``). The fix re-initialised the node after the delete (which
21c80c9fefc3 then replaced with an ``enabled`` flag; the IRQ core skips a
disabled IRQ's ``irq_disable`` today, too).

Before the fix: v4.7's ``vmd_irq_disable``, its IRQ core's ``irq_shutdown``
and the children's ``handle_simple_irq``. The probe loads a vector shared by an
idle child until the detector disables it, then unbinds the drive.
"""

from __future__ import annotations

from typing import Any

from vmdsim.check.scenarios.worlds import small_topology
from vmdsim.drivers.nvme import nvme_core_of
from vmdsim.drivers.vmd.dev import vmd_irq
from vmdsim.errors import VmdsimError
from vmdsim.history.corpus import Finding, Regression, Side
from vmdsim.history.probes import booted, failure, logged
from vmdsim.history.untracked_irq import INTERRUPTS
from vmdsim.history.untracked_irq import vmd_msi_init as simple_irq_msi_init
from vmdsim.kernel.irq.chip import irq_state_set_disabled, irq_state_set_masked, mask_irq
from vmdsim.kernel.irq.flags import IRQD_IRQ_STARTED
from vmdsim.kernel.irq.irqdesc import irq_desc, irqd_clear, irqd_is_started
from vmdsim.kernel.locking import raw_spin_lock_irqsave, raw_spin_unlock_irqrestore
from vmdsim.kernel.pci import device_release_driver
from vmdsim.kernel.rculist import list_del_rcu
from vmdsim.sim.workload import Load, run_load
from vmdsim.variants import variant


@variant("vmdsim.drivers.vmd.msi.vmd_irq_disable")
def vmd_irq_disable(data: Any) -> None:
    """v4.5-v4.7: mask, then take the child off its list, whatever its state."""
    vmdirq: vmd_irq = data.chip_data
    data.chip.irq_mask(data)
    lock = vmdirq.vmd.module.list_lock
    flags = raw_spin_lock_irqsave(lock)
    list_del_rcu(vmdirq)
    vmdirq.enabled = False  # the model's record (Linux has the field since 21c80c9fefc3)
    raw_spin_unlock_irqrestore(lock, flags)


@variant("vmdsim.kernel.irq.chip.irq_shutdown")
def irq_shutdown(desc: irq_desc) -> None:
    """v4.7: the chip's ``irq_disable`` (or mask) is called whether or not the IRQ is
    disabled already."""
    d = desc.irq_data
    if not irqd_is_started(d):
        return  # (the model's started flag; v4.7 had none and shut down regardless)
    irq_state_set_disabled(desc)
    desc.depth = 1
    chip = d.chip
    if chip.irq_shutdown is not None:
        chip.irq_shutdown(d)
    elif chip.irq_disable is not None:
        chip.irq_disable(d)
    else:
        mask_irq(desc)
    irq_state_set_masked(desc)
    irqd_clear(d, IRQD_IRQ_STARTED)


def _disable_then_free() -> Finding:
    s = booted(small_topology(vectors=2), "<double-disable>")
    run_load(s, Load(rate=2000.0, duration_ms=1e9, interrupts=INTERRUPTS))
    spurious = logged(s, "nobody cared")
    try:
        for dev in list(nvme_core_of(s.k).devices):
            device_release_driver(dev.pdev)
    except VmdsimError as e:
        got = failure(e)
        return Finding(got.verdict, f"{got.detail} (after: {'; '.join(spurious)})")
    return Finding("clean", "every child IRQ was disabled once, then freed")


ENTRIES = [
    Regression(
        "double-disable", "97e923063575", "x86/PCI: VMD: Initialize list item in IRQ "
        "disable", "v4.8", "a child IRQ disabled twice (the spurious detector, then "
        "free_irq) does not corrupt its vector's list", _disable_then_free,
        Side("v4.7: list_del_rcu on every disable, an IRQ core that disables twice",
             variants=(vmd_irq_disable, irq_shutdown, simple_irq_msi_init)),
        Side("today: an enabled flag, a core that skips a disabled IRQ, untracked children"),
        note="the path to the second disable is one the v4.7 code had, not one the commit "
             "names"),
]
