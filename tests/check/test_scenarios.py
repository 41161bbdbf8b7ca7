"""The named scenarios other than the seed: verdicts, and that their properties have teeth."""

from __future__ import annotations

import pytest

import vmdsim.drivers.vmd.msi_parent as vmd_msi_parent
from vmdsim.check.explore import explore
from vmdsim.check.scenario import builtin, find
from vmdsim.kernel.locking import raw_spin_lock_irqsave, raw_spin_unlock_irqrestore
from vmdsim.kernel.rculist import list_add_tail_rcu


@pytest.mark.parametrize("name", ["live-move", "enable-race"])
@pytest.mark.parametrize("protocol", ["srcu", "kfree-rcu", "rfc-v3"])
def test_moves_and_enables_lose_no_interrupt(name, protocol):
    sc = find(name)
    r = explore(sc.program(protocol=protocol))
    assert r.verdict == sc.expected({"protocol": protocol}) == "safe"
    assert r.bound == "every schedule"


def unmask_first(data):
    """vmd_pci_msi_enable (v6.17+) with its two halves swapped: unmask the child, then
    publish it on the list (the vmd_irq is the VMD level's chip data)."""
    vmdirq = data.parent_data.chip_data
    data.chip.irq_unmask(data)
    lock = vmdirq.vmd.module.list_lock
    flags = raw_spin_lock_irqsave(lock)
    list_add_tail_rcu(vmdirq, vmdirq.irq.irq_list)
    vmdirq.enabled = True
    raw_spin_unlock_irqrestore(lock, flags)


def test_enabling_in_the_wrong_order_is_caught_losing_the_interrupt(monkeypatch):
    # startup and enable both go through the module's vmd_pci_msi_enable
    monkeypatch.setattr(vmd_msi_parent, "vmd_pci_msi_enable", unmask_first)
    r = explore(find("enable-race").program())
    assert r.verdict == "lost-interrupt"
    assert "never handled" in str(r.counterexample.failure)


def test_every_builtin_scenario_states_its_verdicts():
    for sc in builtin().values():
        assert sc.summary and all(sc.expected(c) for c in sc.combinations()), sc.name


def test_a_move_without_the_replay_of_the_new_vector_is_caught(monkeypatch):
    import vmdsim.drivers.vmd.rebalance as rebalance

    monkeypatch.setattr(rebalance, "check_irq_resend", lambda desc, inject: None)
    r = explore(find("live-move").program())
    assert r.verdict == "lost-interrupt"


@pytest.mark.parametrize("protocol", ["srcu", "kfree-rcu", "rfc-v3"])
def test_hot_remove_under_pct(protocol):
    # The hot-plug path has thousands of traces; PCT samples them (300 runs, depth 3).
    sc = find("hot-remove")
    r = explore(sc.program(protocol=protocol), "pct", runs=300, depth=3, seed=1)
    assert r.verdict == sc.expected({"protocol": protocol})
    if r.verdict != "safe":
        assert "read of vmd_irq#" in str(r.counterexample.failure)
