"""The review's point on ``virq % msix_count``: on a shipped topology it crowds a vector that
least-loaded does not, after boot ordering and after hot-plug churn alike."""

from __future__ import annotations

from pathlib import Path

from click.testing import CliRunner

import vmdsim
from vmdsim.cli import main
from vmdsim.drivers.vmd.query import vmd_devices
from vmdsim.sim.balance import compare
from vmdsim.sim.workload import Load, parse_hotplug

TOPOLOGY = str(Path(__file__).resolve().parents[2] / "examples/topologies/modulo-crowding.toml")
CHURN = "2:remove:vmd0.rp0,4:insert:vmd0.rp0,6:remove:vmd0.rp2,8:insert:vmd0.rp2"


def _children_by_vector(policy: str) -> dict[int, list[int]]:
    s = vmdsim.boot(TOPOLOGY, policy=policy)
    out: dict[int, list[int]] = {}
    for vmd in vmd_devices(s.k):
        for child in vmd.children:
            out.setdefault(child.irq.index, []).append(child.virq)
    return out


def test_modulo_puts_three_children_on_one_vector_where_least_loaded_puts_two():
    modulo = _children_by_vector("modulo")
    assert sorted(modulo[4]) == [29, 34, 39]  # a port's services and two NVMe queues
    least = _children_by_vector("least-loaded")
    assert max(len(v) for i, v in least.items() if i != 0) == 2


def test_the_crowding_outlives_hot_plug_churn():
    for hotplug in ("", CHURN):
        load = Load(rate=2000, duration_ms=10, seed=0, hotplug=parse_hotplug(hotplug))
        modulo, least = compare(TOPOLOGY, ["modulo", "least-loaded"], load)
        assert (modulo.max_load, least.max_load) == (3, 2), hotplug
        assert modulo.lost_interrupts == least.lost_interrupts == 0


def test_balance_prints_it():
    r = CliRunner().invoke(main, ["balance", TOPOLOGY, "--policy", "modulo,least-loaded",
                                  "--hotplug", CHURN])
    assert r.exit_code == 0, r.output
    rows = {line.split()[0]: line.split() for line in r.stdout.splitlines()[1:]}
    assert rows["modulo"][1] == "3" and rows["least-loaded"][1] == "2"  # the max column
