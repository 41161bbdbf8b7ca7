"""The regression corpus: every entry fails on the code before its fix and holds after."""

from __future__ import annotations

import json
import re

import pytest
from click.testing import CliRunner

from vmdsim.cli import main
from vmdsim.history import REGRESSIONS, UNMODELLED, RegressionError, resolve_variants, select
from vmdsim.history.corpus import run_regression
from vmdsim.variants import VariantError


def invoke(*args: str):
    return CliRunner().invoke(main, list(args))

# What each entry's property says on the code before the fix.
BEFORE = {
    "rfc-kfree": "use-after-free",
    "descriptor-freed": "use-after-free",
    "lock-order": "deadlock",
    "rfc-remove": "irq-misuse",
    "parent-domain": "overfull-domain",
    "modulo-crowding": "crowded",
    "untracked-irq": "nobody-cared",
    "msi-sharing": "msi-shares-msix",
    "vector-parent": "type-confusion",
    "double-disable": "list-corruption",
    "list-loop": "livelock",
    "rcu-sync": "use-after-free",
    "detach-resources": "nonexistent-resource",
    "bus-offsets": "unbound",
    "client-vector0": "missed-interrupt",
    "osc": "aer-enabled",
    "soft-reboot": "remap-left-off",
    "aspm-deadlock": "deadlock",
    "domain-link": "no-domain-link",
    "cpu-offline": "affinity-warning",
    "vmd-msi-free": "null-pointer-dereference",
    "vmd-irq-startup": "use-after-free",
}
SLOW = {"rfc-kfree", "untracked-irq", "lock-order", "list-loop", "double-disable"}


def _params() -> list:
    return [pytest.param(e, id=e.name, marks=[pytest.mark.slow] if e.name in SLOW else [])
            for e in REGRESSIONS]


@pytest.mark.parametrize("entry", _params())
def test_each_entry_fails_before_its_fix_and_holds_after(entry):
    r = run_regression(entry)
    assert r.before.verdict == BEFORE[entry.name], r.before
    assert r.after.holds, r.after
    assert r.reproduced


def test_every_entry_is_named_and_expected_here():
    assert sorted(e.name for e in REGRESSIONS) == sorted(BEFORE)
    for e in REGRESSIONS:
        assert e.commit == "review" or re.fullmatch(r"[0-9a-f]{12}", e.commit), e.commit
        assert e.before.variants or e.before.options, f"{e.name}: no code before the fix"
    review = [e.commit == "review" for e in REGRESSIONS]
    assert review == sorted(review, reverse=True), "the review's points come first"


def test_entries_are_chosen_by_name_or_commit_prefix():
    assert [e.name for e in select(REGRESSIONS, ("30ce035", "osc"))] == ["untracked-irq", "osc"]
    with pytest.raises(RegressionError, match="no corpus entry 'nope'; the entries: rfc-kfree"):
        select(REGRESSIONS, ("nope",))


def test_before_names_a_corpus_entry_s_variants():
    [v] = resolve_variants(["before:untracked-irq"])
    assert v.target == "vmdsim.drivers.vmd.msi.vmd_msi_init"
    with pytest.raises(VariantError, match="today's code with options"):
        resolve_variants(["before:rcu-sync"])


def test_the_command_lists_runs_and_reports_entries():
    listed = invoke("regressions", "--list")
    assert listed.exit_code == 0
    assert [line.split()[0] for line in listed.output.splitlines()] == [
        e.name for e in REGRESSIONS]
    r = invoke("regressions", "osc", "bus-offsets", "--json")
    assert r.exit_code == 0, r.output
    d = json.loads(r.output)
    assert [e["name"] for e in d["entries"]] == ["bus-offsets", "osc"]
    assert d["reproduced"] == 2 and d["not_reproduced"] == 0
    assert d["entries"][1]["before"]["verdict"] == "aer-enabled"
    text = invoke("regressions", "detach-resources")
    assert "reproduced" in text.output and "Trying to free nonexistent resource" in text.output
    assert "1 entries: 1 reproduced" in text.output
    bad = invoke("regressions", "no-such-fix")
    assert bad.exit_code == 2 and "the entries:" in bad.output


def test_unmodelled_fixes_say_what_they_need():
    for u in UNMODELLED:
        assert re.fullmatch(r"[0-9a-f]{12}", u.commit) and u.needs
    listed = {e.commit for e in REGRESSIONS} | {u.commit for u in UNMODELLED}
    issue_12 = {"30ce03503813", "9c2053040ca7", "ee6ee49fd09f", "dc8af3a827df", "e3dffa4f6c36",
                "f6b7bb847ca8", "04b12ef163d1", "0a584655ef89", "49de0dc87965", "f24c9bfcd423",
                "b61cf04c49c3", "e382dffc904d", "647e9651a011", "2565e5b69c44", "886e67100b90",
                "c94f732e8001", "e433110eb5bf", "d5c647b08ee0"}
    assert issue_12 <= listed, sorted(issue_12 - listed)
