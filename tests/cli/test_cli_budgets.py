"""``--spin-limit`` and ``--max-steps``: the budgets of one execution, set per run.

A livelock verdict depends on them, so they are written into the replay token
and a replay applies them again; a budget that is not a positive number is
refused with status 2.
"""

from __future__ import annotations

import re
import textwrap

import pytest
from clirig import found, invoke, ok

SPINNER = textwrap.dedent('''
    from types import SimpleNamespace

    from vmdsim.check.program import Program
    from vmdsim.check.scenario import scenario
    from vmdsim.kernel.core import Kernel
    from vmdsim.kernel.shared import KObject, shared


    class Flag(KObject):
        flag = shared()

        def __init__(self):
            self.__dict__.update(flag=0)


    def spin(w):
        while not w.f.flag:
            pass


    @scenario("spinner", "a loop waiting for a flag nobody sets")
    def spinner():
        return Program("spinner", lambda: SimpleNamespace(k=Kernel(1), f=Flag()),
                       lambda w: [(0, lambda: spin(w), "spinner")])
''')


@pytest.fixture
def spinner(tmp_path):
    path = tmp_path / "spinner.py"
    path.write_text(SPINNER)
    return str(path)


def test_a_spin_budget_set_on_the_command_line_ends_the_loop_and_replays(spinner):
    out = found(invoke("check", spinner, "--spin-limit", "7"))
    assert "verdict: livelock" in out and "(7 repeated steps)" in out
    token = re.search(r"replay: vmdsim replay '(.+)'", out)[1]
    assert "spin_limit=7" in token
    again = ok(invoke("replay", token))
    assert again.startswith("verdict: livelock")


def test_a_step_budget_makes_a_livelock_of_a_long_run(spinner):
    out = found(invoke("check", spinner, "--spin-limit", "1000", "--max-steps", "50"))
    assert "verdict: livelock" in out and "still running after 50 steps" in out
    token = re.search(r"replay: vmdsim replay '(.+)'", out)[1]
    assert "max_steps=50" in token and "spin_limit=1000" in token
    assert ok(invoke("replay", token)).startswith("verdict: livelock")


@pytest.mark.parametrize("args", [("--spin-limit", "0"), ("--max-steps", "-3"),
                                  ("--max-steps", "x")])
def test_a_budget_that_is_not_a_positive_number_is_refused(spinner, args):
    r = invoke("check", spinner, *args)
    assert r.exit_code == 2 and args[0] in r.output


def test_a_replay_token_with_a_bad_budget_is_refused(spinner):
    r = invoke("replay", f"{spinner}[max_steps=0]:spinner*3")
    assert r.exit_code == 2 and "max-steps '0'" in r.output


def test_a_scenario_whose_setup_never_returns_exits_2_not_hangs(tmp_path):
    path = tmp_path / "stuck.py"
    path.write_text(textwrap.dedent('''
        from vmdsim.check.program import Program
        from vmdsim.check.scenario import scenario


        def forever():
            while True:
                pass


        @scenario("stuck", "a setup that never returns")
        def stuck():
            return Program("stuck", forever, lambda w: [], setup_seconds=1)
    '''))
    r = invoke("check", str(path))
    assert r.exit_code == 2 and "its setup did not finish within 1 s" in r.output
