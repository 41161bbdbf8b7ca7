"""A run's accounting: every completion and every interrupt goes somewhere, and the counts of
the hardware, the IRQ core and the drivers agree."""

from __future__ import annotations

import pytest
from simrig import vmd_machine

from vmdsim.sim.accounting import AccountingError, account, snapshot
from vmdsim.sim.measure import measure
from vmdsim.sim.release import release_settings
from vmdsim.sim.workload import Load, parse_hotplug, run_load
from vmdsim.views.interrupts import summary

ONE_VECTOR = """
[machine]
cpus = 4

[[vmd]]
device = 0x201D
msix_vectors = 1

[[vmd.root_port]]
slot = 0
nvme = { queues = 4 }
"""

# Two drives behind a VMD with one fast vector: four I/O queues share it.
SHARED = vmd_machine(vectors=2, drives=2)


def assert_adds_up(a) -> None:
    assert a.failures() == []
    assert a.posted + a.pending_at_start == a.consumed + a.lost + a.abandoned + a.discarded
    assert a.driver_consumed == a.consumed
    assert a.nvme_messages["fired"] == a.signalled + a.admin
    assert a.delivered == a.via_vmd + a.direct and a.vector_runs == a.via_vmd
    assert a.handler_calls == a.real + a.spurious


@pytest.mark.parametrize(("scheme", "children"), [("msi-parent", 5), ("legacy", 2)])
def test_one_vmd_vector_carries_every_queue_and_loses_nothing(boot_toml, scheme, children):
    # v4.5-v6.16: the VMD's msi_prepare cuts the drive's request to its 1 vector, and the
    # admin and I/O queues share it; v6.17+ has no msi_prepare, so the drive gets its 5
    # (admin and 4 I/O queues), all multiplexed onto the VMD's one vector
    with release_settings(msi_domain=scheme):
        s = boot_toml(ONE_VECTOR, "one.toml")
    out = run_load(s, Load(rate=2000, duration_ms=20, seed=1))
    a = out.accounting
    assert_adds_up(a)
    assert a.posted > 10 and a.consumed == a.posted and a.lost == 0
    # every interrupt calls every child handler on the vector: one finds the completion
    assert a.delivered == a.posted and a.real == a.posted
    assert a.spurious == (children - 1) * a.posted
    m = measure(s, out)
    assert m.calls_per_interrupt == children and m.lost_interrupts == 0


def test_queues_sharing_a_fast_vector_all_get_called_and_everything_adds_up(boot_toml):
    s = boot_toml(SHARED, "shared.toml")
    out = run_load(s, Load(rate=3000, duration_ms=20, seed=2))
    a = out.accounting
    assert_adds_up(a)
    assert a.lost == 0 and a.consumed == a.posted > 50
    assert a.spurious > 0 and a.real == a.posted  # every handler on the vector is called
    text = summary(measure(s, out))
    assert f"completions posted {a.posted} = consumed {a.posted} + lost 0" in text
    assert f"interrupts delivered {a.delivered} = on VMD vectors {a.delivered}" in text


def test_hot_plug_churn_keeps_the_books_and_counts_what_a_pulled_drive_held(boot_toml):
    s = boot_toml(ONE_VECTOR, "one.toml")
    s.machine.nvmes[0].msix.fmask = True  # its messages stay pending: entries pile up
    load = Load(rate=3000, duration_ms=20, seed=3,
                hotplug=parse_hotplug("5:remove:vmd0.rp0,10:insert:vmd0.rp0"))
    out = run_load(s, load)
    a = out.accounting
    assert_adds_up(a)
    assert out.removed == 1 and out.inserted == 1
    assert a.abandoned > 0  # what the silenced drive held when it was pulled
    assert a.nvme_messages["pending"] > 0  # its last message, pending on the pulled card
    assert a.lost == 0 and a.consumed > 0  # the card put back has working interrupts
    assert a.admin > 0  # the inserted card's probe sent admin commands


def test_a_queue_whose_messages_go_to_a_masked_entry_is_reported_lost_with_the_reason(boot_toml):
    # on the legacy VMD domain the drive gets 2 of its vectors, so its last entry stays
    # masked (v6.17+ gives it all of them)
    with release_settings(msi_domain="legacy"):
        s = boot_toml(SHARED, "shared.toml")
    drive = s.machine.nvmes[0]
    drive.admin.cqs[1].vector = drive.msix.nvec - 1  # the old bug: a vector nobody unmasked
    out = run_load(s, Load(rate=3000, duration_ms=20, seed=4))
    a = out.accounting
    assert_adds_up(a)
    assert a.lost > 0 and a.lost == sum(x.count for x in a.lost_by_queue)
    (lost,) = a.lost_by_queue
    assert lost.queue == "nvme0q1" and "masked" in lost.why
    text = summary(measure(s, out))
    assert f"lost interrupts {a.lost}" in text and "lost on nvme0q1" in text


def test_a_counter_that_disagrees_is_an_accounting_error(boot_toml):
    s = boot_toml(SHARED, "shared.toml")
    before = snapshot(s)
    s.machine.nvmes[0].completions += 1  # a completion nobody posted
    with pytest.raises(AccountingError, match="completions: posted 1"):
        account(s, before)
