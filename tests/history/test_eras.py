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
from vmdsim.errors import VmdsimError
from vmdsim.history import REGRESSIONS
from vmdsim.history.eras import DEFAULT_ERA, ERAS, EraError, find_era, merge_options
from vmdsim.sim.release import release_settings, settings_for
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
    with applied(era.variants(REGRESSIONS)), release_settings(**era.release):
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
                                              ("6.16", "safe"), ("6.17", "safe"),
                                              ("6.18", "safe")])
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
            (("run", "--kernel", "6.19"), "the newest release the model runs is 6.18"),
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
    assert "6.19 and later: not modelled" in r.output
    assert "interrupt domains: pci_msi_domains=per-device msi_domain=legacy" in r.output


@pytest.mark.parametrize(("era", "vmd_chip", "child_chip"), [
    ("4.5", "PCI-MSI", "VMD-MSI"),  # x86's global domain before v6.2
    ("6.16", "PCI-MSIX-0000:00:0e.0", "VMD-MSI"),  # the VMD's legacy domain before v6.17
    ("6.17", "PCI-MSIX-0000:00:0e.0", "VMD-PCI-MSIX-10000:01:00.0"),
    ("6.18", "PCI-MSIX-0000:00:0e.0", "VMD-PCI-MSIX-10000:01:00.0"),
])
def test_interrupts_shows_the_domain_scheme_of_each_release(era, vmd_chip, child_chip):
    r = invoke("interrupts", "--kernel", era)
    assert r.exit_code == 0, r.output
    rows = [line.split() for line in r.output.splitlines()[1:-1]]
    vmd_rows = [t for t in rows if t[-1] == "vmd0"]
    assert vmd_rows and all(t[5] == vmd_chip for t in vmd_rows)
    nvme0q1 = next(t for t in rows if "nvme0q1" in t)
    assert nvme0q1[5] == child_chip


def test_code_of_one_scheme_is_refused_on_another():
    for args, message in (
            (("run", "--variant", "before:untracked-irq", "--kernel", "6.18"),
             "--kernel 6.18 runs on the interrupt-domain scheme pci_msi_domains="
             "per-device-startup msi_domain=msi-parent, --variant before:untracked-irq on "
             "pci_msi_domains=global msi_domain=legacy"),
            (("run", "--kernel", "6.17", "--vmd-param", "msi_domain=legacy"),
             "--vmd-param msi_domain=legacy contradicts --kernel 6.17")):
        r = invoke(*args)
        assert r.exit_code == 2, (args, r.output)
        assert message in r.output, (args, r.output)
    # a before: of a v4.8 fix runs on v4.8's scheme by itself
    r = invoke("interrupts", "--variant", "before:untracked-irq")
    assert r.exit_code == 0 and " VMD-MSI " in r.output and "VMD-PCI-MSIX" not in r.output


def test_each_release_has_its_scheme():
    assert settings_for("v4.8") == {"pci_msi_domains": "global", "msi_domain": "legacy"}
    assert settings_for("about v4.20")["pci_msi_domains"] == "global"
    assert settings_for("2015-10 RFC")["msi_domain"] == "legacy"
    assert settings_for("v6.2") == {"pci_msi_domains": "per-device", "msi_domain": "legacy"}
    assert settings_for("v6.17-rc1") == {"pci_msi_domains": "per-device",
                                         "msi_domain": "msi-parent"}
    assert settings_for("6.18") == {"pci_msi_domains": "per-device-startup",
                                    "msi_domain": "msi-parent"}
    with pytest.raises(VmdsimError, match="msi_domain 'v2': one of msi-parent, legacy"), \
            release_settings(msi_domain="v2"):
        pass
