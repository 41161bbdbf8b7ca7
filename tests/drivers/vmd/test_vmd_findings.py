"""Weaknesses of Linux's vmd.c that the model reproduces faithfully (listed in
docs/findings.md). Each test shows the weakness; none of them hides it."""

from __future__ import annotations

import pytest
from vmd_testbed import boot_vmd, machine_text, vmd_block

from vmdsim.drivers.vmd.pm import vmd_resume, vmd_suspend
from vmdsim.kernel.errno import ENOMEM
from vmdsim.kernel.irq.flags import IrqError


def test_a_resume_that_fails_part_way_leaves_the_vmd_half_resumed():
    """``vmd_resume`` (v5.x-v6.16) requests the vectors' handlers one by one and returns at
    the first failure, without freeing those it already requested. The VMD is left with
    some vectors handled and the rest not; the next ``vmd_suspend`` frees every vector and
    trips over the ones that were never requested (Linux: WARN in devm_free_irq, then
    "Trying to free already-free IRQ")."""
    w = boot_vmd(machine_text([vmd_block(vectors=8)]))
    k, vmd, pdev = w.k, w.vmd, w.vmd.dev
    assert k.run_on(0, vmd_suspend, pdev) == 0
    # devm_request_irq allocates its devres node and the irqaction: the 5th allocation is
    # the third vector's
    k.mem.fail_nth(5)
    assert k.run_on(0, vmd_resume, pdev) == -ENOMEM
    k.mem.fail_nth(None)
    handled = [k.irq.irq_has_action(irqs.virq) for irqs in vmd.irqs]
    assert handled[:2] == [True, True] and not any(handled[2:])  # half resumed
    with pytest.raises(IrqError, match="devm_free_irq"):
        k.run_on(0, vmd_suspend, pdev)
