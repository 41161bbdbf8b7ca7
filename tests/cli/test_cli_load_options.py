"""Load options that would run nothing, run forever or run out of memory are refused with the
option's name and exit status 2; nothing is silently dropped."""

from __future__ import annotations

import pytest
from clirig import invoke


@pytest.mark.parametrize("args, says", [
    (["--duration", "nan"], "--duration nan: must be a positive, finite number"),
    (["--duration", "inf"], "--duration inf: must be a positive, finite number"),
    (["--duration", "-1"], "--duration -1.0: must be a positive, finite number"),
    (["--rate", "0"], "--rate 0.0: must be a positive, finite number"),
    (["--rate", "nan"], "--rate nan: must be a positive, finite number"),
    (["--interrupts", "0"], "--interrupts 0: must be positive"),
    (["--interrupts", "-3"], "--interrupts -3: must be positive"),
    (["--duration", "1e9"], "would post about 3.2e+10 completions"),
    (["--duration", "1e308"], "would post about inf completions"),
    (["--hotplug", "30:remove:vmd0.rp1"], "after the end of the run (20 ms)"),
])
@pytest.mark.parametrize("command", ["run", "balance"])
def test_a_load_that_cannot_be_run_as_asked_is_refused(command, args, says):
    r = invoke(command, *args)
    assert r.exit_code == 2, r.output
    assert r.stdout == "" and says in r.stderr and "Traceback" not in r.output


def test_a_load_that_posted_nothing_says_so():
    r = invoke("run", "--rate", "1e-9", "--duration", "1")
    assert r.exit_code == 0 and "no completion was posted" in r.stderr


def test_a_cap_makes_a_huge_rate_fine():
    r = invoke("run", "--rate", "1e9", "--interrupts", "50", "--json")
    assert r.exit_code == 0 and '"posted": 50' in r.stdout
