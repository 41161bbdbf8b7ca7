"""--kernel VERSION: each release boots the default machine as it would, refuses parts it
did not know, and its races are the ones that release had."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

import vmdsim
from vmdsim.cli import main
from vmdsim.drivers.vmd.query import vmd_devices
from vmdsim.history import REGRESSIONS
from vmdsim.history.eras import DEFAULT_ERA, ERAS, EraError, find_era, merge_options
from vmdsim.variants import applied

CLIENT = str(Path(__file__).resolve().parents[2] / "examples" / "topologies" / "client.toml")


def invoke(*args: str):
    return CliRunner().invoke(main, list(args))


@pytest.mark.parametrize("era", [e.name for e in ERAS])
def test_each_release_runs_the_default_machine_with_its_own_protocol(era):
    r = invoke("run", "--kernel", era, "--duration", "2", "--json")
    assert r.exit_code == 0, r.output
    d = json.loads(r.output[r.output.index("{"):])
    e = find_era(era)
    assert d["kernel"] == era and d["protocol"] == e.options["protocol"]
    assert d["lost_interrupts"] == 0


@pytest.mark.parametrize("era", [e.name for e in ERAS])
def test_a_client_part_boots_only_where_the_release_knew_it(era):
    r = invoke("lspci", "--kernel", era, CLIENT)
    if find_era(era).device_ids is None:
        assert r.exit_code == 0, r.output
        assert "10000:e1:00.0 Non-Volatile memory controller" in r.output  # the drive behind
    else:
        assert r.exit_code == 2
        assert "vmd0 is 8086:467f, which that release's vmd driver does not match" in r.output


def _child_flows(era_name: str) -> set[str]:
    era = find_era(era_name)
    with applied(era.variants(REGRESSIONS)):
        opts = dict(era.options)
        s = vmdsim.boot(protocol=opts.pop("protocol"), policy=opts.pop("policy", None),
                        desc_free=opts.pop("desc_free"), vmd_options=opts)
    k = s.k
    return {k.irq.irq_to_desc(c.virq).handle_irq.__name__ for c in vmd_devices(k)[0].children}


def test_v4_5_children_run_the_simple_flow_handler_and_later_ones_the_untracked():
    assert _child_flows("4.5") == {"handle_simple_irq"}
    assert _child_flows("4.9") == {"handle_untracked_irq"}
    assert _child_flows(DEFAULT_ERA) == {"handle_untracked_irq"}


@pytest.mark.parametrize(("era", "verdict"), [("4.5", "use-after-free"), ("4.9", "safe"),
                                              ("6.16", "safe")])
def test_the_seed_race_is_there_in_the_releases_that_had_it(era, verdict):
    r = invoke("check", "seed-teardown", "--kernel", era, "--json")
    d = json.loads(r.output[r.output.index("{"):])
    assert d["verdict"] == verdict
    assert d["options"]["kernel"] == era
    if verdict != "safe":
        assert "kernel=4.5" in d["replay"]
        again = invoke("replay", d["replay"], "--json")
        assert json.loads(again.output[again.output.index("{"):])["verdict"] == verdict


def test_unknown_unmodelled_and_contradicting_releases_are_refused():
    for args, message in (
            (("run", "--kernel", "5.3"), "not a release the model has; the releases: rfc-v3"),
            (("run", "--kernel", "6.18"), "per-device MSI parent domains"),
            (("run", "--kernel", "4.5", "--protocol", "srcu"),
             "--protocol srcu contradicts --kernel 4.5, which ran protocol kfree-rcu"),
            (("check", "vmd-remove", "--kernel", "4.5"),
             "scenario vmd-remove has no option protocol"),
            (("run", "--kernel", "4.5", "--variant", "before:untracked-irq"),
             "both replace vmdsim.drivers.vmd.msi.vmd_msi_init")):
        r = invoke(*args)
        assert r.exit_code == 2, (args, r.output)
        assert message in r.output, (args, r.output)
    with pytest.raises(EraError, match="--policy modulo contradicts --kernel 4.5"):
        merge_options(find_era("v4.5"), {"policy": "modulo"})


def test_kernels_lists_every_release_and_what_the_model_leaves_out():
    r = invoke("kernels")
    assert r.exit_code == 0
    for e in ERAS:
        assert r.output.count(f"\n{e.name}") + r.output.startswith(e.name) == 1
    assert "6.17 and later: not modelled" in r.output
