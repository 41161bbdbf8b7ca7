"""Interrupt load through booted systems, measured at the end."""

from __future__ import annotations

import pytest

import vmdsim
from vmdsim.sim.measure import measure
from vmdsim.sim.workload import Load, WorkloadError, parse_hotplug, run_load
from vmdsim.topology import parse

PRIMARY = """
[machine]
cpus = 2

[[root_port]]
slot = "1c.0"
slot_number = 1
nvme = { queues = 4 }

[[root_port]]
slot = "1d.0"
slot_number = 2
nvme = { queues = 2 }
"""


def primary():
    return vmdsim.boot(parse(PRIMARY, "primary.toml"))


def test_load_on_a_primary_domain_reaches_every_queue_once_per_completion():
    s = primary()
    out = run_load(s, Load(rate=3000, duration_ms=20, seed=7))
    m = measure(s, out)
    assert out.posted > 50 and out.lost == 0 and out.refused == 0
    assert m.real == out.posted and m.spurious == 0
    assert m.delivered == out.posted and m.calls_per_interrupt == 1.0
    assert m.cross_cpu == 0  # each queue's vector targets its own CPU
    by_name = {q["name"]: q for q in m.queues}
    for name, n in out.per_queue_posted.items():
        assert by_name[name]["completions"] == n


def test_the_same_seed_gives_the_same_run():
    a = run_load(primary(), Load(rate=3000, duration_ms=10, seed=3))
    b = run_load(primary(), Load(rate=3000, duration_ms=10, seed=3))
    assert a == b


def test_interrupt_count_stops_the_run():
    out = run_load(primary(), Load(rate=3000, duration_ms=1000, interrupts=40))
    assert out.posted == 40


def test_hotplug_scripts_parse_and_bad_ones_say_how_to_write_them():
    assert [(e.at_ms, e.action, e.slot) for e in parse_hotplug("8:insert:rp0, 5ms:remove:rp0")
            ] == [(5.0, "remove", "rp0"), (8.0, "insert", "rp0")]
    with pytest.raises(WorkloadError, match="MS:remove:SLOT"):
        parse_hotplug("soon:remove:rp0")
    with pytest.raises(KeyError, match="no root port 'vmd9.rp0'; the machine has: rp0, rp1"):
        run_load(primary(), Load(hotplug=parse_hotplug("1:remove:vmd9.rp0")))


def test_hot_remove_and_reinsert_under_load_lose_nothing_and_leak_nothing():
    s = primary()
    before = s.k.mem.owner_counts()
    out = run_load(s, Load(rate=4000, duration_ms=40, seed=1,
                           hotplug=parse_hotplug("10:remove:rp0, 25:insert:rp0")))
    assert (out.removed, out.inserted, out.lost) == (1, 1, 0)
    assert s.k.mem.owner_counts() == before  # the new drive holds what the old one did
    assert out.abandoned == 0  # handlers are instantaneous: nothing was waiting at removal
    new = {q["name"]: q for q in measure(s, out).queues}
    assert new["nvme0q1"]["real"] + new["nvme0q2"]["real"] > 0  # the new drive took load
