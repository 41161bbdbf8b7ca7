"""``vmdsim replay`` reproduces exactly the schedule it is given, or says which step is wrong.

The token is the README's own (so a model change that alters the counterexample shows up as a
stale README here)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from clirig import invoke

README = Path(__file__).resolve().parents[2] / "README.md"


def readme_token() -> str:
    m = re.search(r"replay: vmdsim replay '([^']+)'", README.read_text())
    assert m, "the README shows a replay token"
    return m.group(1)


def test_the_readmes_token_replays_to_its_verdict():
    r = invoke("replay", readme_token())
    assert r.exit_code == 0, r.output
    assert r.stdout.startswith("verdict: use-after-free")


@pytest.mark.parametrize("change, says", [
    (lambda t: t.rsplit(",", 1)[0], "but the program goes on"),
    (lambda t: t + ",unbind*500", "but the schedule goes on for 500 more"),
    (lambda t: t.split(":", 1)[0] + ":nvme*999999999", "longer than any execution"),
    (lambda t: t.split(":", 1)[0] + ":nvme*" + "9" * 5000, "must be a positive number"),
    (lambda t: t.split(":", 1)[0] + ":nobody", "'nobody' cannot run here"),
])
def test_a_token_that_does_not_fit_the_program_is_an_error_naming_the_step(change, says):
    r = invoke("replay", change(readme_token()))
    assert r.exit_code == 2 and says in r.stderr and r.stdout == ""
