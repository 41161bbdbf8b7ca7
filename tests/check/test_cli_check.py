"""`vmdsim check`, `replay` and `scenarios` through the real entry point."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

from vmdsim.check.scenario import find
from vmdsim.cli import main

EXAMPLE = str(Path(__file__).resolve().parents[2] / "examples" / "scenarios" / "rcu_list.py")


def run(*args):
    return CliRunner().invoke(main, list(args))


def test_a_user_scenario_file_is_checked_drawn_and_replayed():
    r = run("check", EXAMPLE, "--opt", "free=kfree")
    assert r.exit_code == 1, r.output  # a failing schedule, as a failing test exits
    assert "verdict: use-after-free" in r.output
    assert "list_del_rcu: write" in r.output and "kfree(vmd_irq#" in r.output
    assert "<-- USE-AFTER-FREE" in r.output
    token = r.output.split("vmdsim replay '")[1].split("'")[0]
    assert token.startswith(EXAMPLE + "[free=kfree]:")
    again = run("replay", token)
    assert again.exit_code == 0 and "verdict: use-after-free" in again.output


def test_json_carries_the_verdict_and_counts():
    r = run("check", EXAMPLE, "--opt", "free=synchronize_rcu", "--json")
    d = json.loads(r.output)
    assert d["verdict"] == "safe" and d["bound"] == "every schedule"
    assert d["executions"] > 1 and d["schedule"] == ""


def test_the_example_has_its_stated_verdicts_under_every_strategy():
    sc = find(EXAMPLE)
    for combo in sc.combinations():
        for strategy in ("dpor", "bounded", "pct"):
            r = run("check", EXAMPLE, "--json", "--strategy", strategy, "--runs", "100",
                    *[x for k, v in combo.items() for x in ("--opt", f"{k}={v}")])
            assert json.loads(r.output)["verdict"] == sc.expected(combo), (combo, strategy)


def test_bad_names_list_the_valid_ones_and_exit_2():
    r = run("check", EXAMPLE, "--protocol", "srcu")
    assert r.exit_code == 2 and "its options: --free" in r.output
    r = run("check", EXAMPLE, "--opt", "free=never")
    assert r.exit_code == 2 and "kfree, synchronize_rcu, kfree_rcu" in r.output
    r = run("check", "no-such-scenario")
    assert r.exit_code == 2 and "unknown scenario 'no-such-scenario'" in r.output
    r = run("replay", "garbage")
    assert r.exit_code == 2 and "SCENARIO[OPT=VALUE,...]:SCHEDULE" in r.output
