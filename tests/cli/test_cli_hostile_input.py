"""Hostile input gets one line naming the file and line (or the option) and exit status 2:
never a traceback, a hang or a MemoryError."""

from __future__ import annotations

import pytest
from click.testing import CliRunner
from clirig import invoke
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vmdsim.cli import main
from vmdsim.errors import TopologyError
from vmdsim.hw.machine import Machine
from vmdsim.topology import parse


@pytest.mark.parametrize("content, says", [
    (b"\xff\xfe[machine]\n", ":1: file: not UTF-8 text (byte 0xff at column 1)"),
    (b"[machine]\ncpus = 2\n\x00\n", ":3: syntax:"),
    (b"[machine]\nx = " + b"[" * 5000 + b"]" * 5000 + b"\n",
     ":2: syntax: arrays or tables nested too deeply"),
    (b"[machine]\ncpus = " + b"9" * 5000 + b"\n", ":2: syntax: an integer of more than 4300"),
    (b"#" * (2 << 20), ": file: larger than 1024 KiB"),
])
def test_bad_topology_files(tmp_path, content, says):
    f = tmp_path / "bad.toml"
    f.write_bytes(content)
    r = invoke("topology", "validate", str(f))
    assert r.exit_code == 2 and f"{f}{says}" in r.stderr and "Traceback" not in r.output
    assert len(r.stderr.splitlines()) == 1


@pytest.mark.parametrize("source, says", [
    ("import nonexistent_module_xyz\n", ":1: importing it raised ModuleNotFoundError"),
    ("x = 1\ndef (\n", ":2: syntax error"),
    ("x = 1\nraise RuntimeError('no')\n", ":2: importing it raised RuntimeError: no"),
    ("from vmdsim.check.scenario import scenario\nfrom vmdsim.check.program import Program\n"
     "@scenario('boom', 'x')\ndef boom():\n    def setup():\n        raise KeyError('nope')\n"
     "    return Program('boom', setup, lambda w: [])\n",
     "boom: its setup raised KeyError: 'nope'"),
])
def test_bad_scenario_files(tmp_path, source, says):
    f = tmp_path / "mine.py"
    f.write_text(source)
    r = invoke("check", str(f))
    assert r.exit_code == 2 and says in r.stderr and "Traceback" not in r.output


SCENARIO = """from types import SimpleNamespace
from vmdsim.check.program import Program
from vmdsim.check.scenario import scenario
from vmdsim.kernel.core import Kernel
from vmdsim.kernel.shared import KObject, shared

class box({base}):
    v = shared()

@scenario("mine", "x")
def mine():
    def body(w):
        w.b.v = 1
    return Program("mine", lambda: {world}, lambda w: {threads})
"""
WORLD = "SimpleNamespace(k=Kernel(2), b=box())"
TWO = "[(0, lambda: body(w), 'a'), (1, lambda: body(w), 'b')]"


@pytest.mark.parametrize("base, world, threads, says", [
    ("object", WORLD, TWO, ":7: importing it raised TypeError: shared field box.v: box must "
                           "derive from KObject"),
    ("KObject", "None", TWO, "mine: its setup returned NoneType, not a world whose .k is the "
                             "Kernel"),
    ("KObject", WORLD, "[]", "mine: it has no threads to explore"),
    ("KObject", WORLD, "'ab'", "mine: thread 0 is 'a', not (CPU number or None, function, "
                               "name)"),
    ("KObject", WORLD, "[(9, lambda: body(w), 'a')]",
     "mine: thread 0 (a) is on CPU 9, but its kernel has CPUs 0-1"),
    ("KObject", WORLD, "[(0, lambda: body(w), 'a\\tb')]",
     "mine: thread name 'a\\tb': a name is printable and has none of * , @ or white space"),
    ("KObject", WORLD, "1 / 0", "mine: listing its threads raised ZeroDivisionError"),
])
def test_a_scenario_whose_world_or_threads_cannot_run_says_which_and_why(tmp_path, base,
                                                                         world, threads, says):
    f = tmp_path / "mine.py"
    f.write_text(SCENARIO.format(base=base, world=world, threads=threads))
    r = invoke("check", str(f))
    assert r.exit_code == 2 and r.stdout == "" and "Traceback" not in r.output, r.output
    assert r.stderr.startswith(f"vmdsim: error: {f}") and says in r.stderr
    assert len(r.stderr.splitlines()) == 1


@pytest.mark.parametrize("args, says", [
    (["run", "--bogus"], "vmdsim run: error: No such option '--bogus'. (see 'vmdsim run "
                         "--help')"),
    (["check", "seed-teardown", "--bound", "1.5"],
     "vmdsim check: error: Invalid value for '--bound': '1.5' is not a valid integer."),
    (["nosuch"], "vmdsim: error: No such command 'nosuch'."),
    (["check", "seed-teardown", "--opt", "="], "vmdsim: error: --opt '=': write it as "
                                               "NAME=VALUE"),
    (["topology", "validate"], "vmdsim topology validate: error: Missing argument 'FILE'."),
])
def test_a_command_line_click_refuses_is_one_line_too(args, says):
    r = CliRunner().invoke(main, args, prog_name="vmdsim")
    assert r.exit_code == 2 and r.stdout == ""
    assert r.stderr.startswith(says) and len(r.stderr.splitlines()) == 1


def test_a_bad_load_option_is_refused_before_the_machine_boots(tmp_path):
    f = tmp_path / "absent.toml"  # its VMD is not enumerated: booting it would warn
    f.write_text('[machine]\ncpus = 2\n\n[[vmd]]\ndevice = 0x201D\nslot = "05.5"\n')
    for command in ("run", "balance"):
        r = invoke(command, str(f), "--rate", "nan", "--allow-unbound")
        assert r.exit_code == 2
        assert r.stderr == "vmdsim: error: --rate nan: must be a positive, finite number\n"


def test_a_replay_that_does_not_fit_names_the_scenario():
    r = invoke("replay", "seed-teardown:nvme")
    assert r.exit_code == 2 and r.stderr.startswith(
        "vmdsim: error: replay token of seed-teardown: the schedule ends after step 1")


@pytest.mark.parametrize("plot, says", [
    ("no/such/folder/x.png", "no folder 'no/such/folder'"),
    ("x.nosuchformat", "the name must end in one of"),
])
def test_a_plot_that_cannot_be_written_is_refused_before_anything_runs(tmp_path, plot, says,
                                                                         monkeypatch):
    monkeypatch.chdir(tmp_path)
    r = invoke("balance", "--duration", "1", "--plot", plot)
    assert r.exit_code == 2 and says in r.stderr and r.stdout == ""


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.text(alphabet=st.sampled_from(list("[]{}=\"'.,#\n 0123456789xabcdefghijklmnopqrstuvwyz_-"
                                              "\x00\u00e9")), max_size=300))
def test_any_text_is_a_topology_or_a_topology_error(text):
    try:
        parse(text, "fuzz.toml")
    except TopologyError as e:
        assert str(e).startswith("fuzz.toml")


KEYS = ["cpus", "ram", "device", "slot", "msix_vectors", "cfgbar", "membar1", "membar2",
        "bus_restriction", "hotplug", "slot_number", "nvme", "queues", "irq", "vmlock",
        "host_phys", "name", "unknown"]
VALUES = st.one_of(st.integers(-2**70, 2**70), st.booleans(), st.text(max_size=8),
                   st.sampled_from(['"1M"', '"32M"', '"0e.0"', '"05.5"', "0x201D", "0x467F"]),
                   st.floats(allow_nan=True))


def _value(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, str) and not v.startswith(('"', "0x")):
        return '"' + v.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'
    return str(v)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["machine", "vmd", "vmd.root_port", "root_port"]),
                          st.dictionaries(st.sampled_from(KEYS), VALUES, max_size=5)),
                max_size=5))
def test_any_shaped_topology_builds_a_machine_or_is_a_topology_error(tables):
    lines = []
    for name, fields in tables:
        lines.append(f"[{name}]" if name == "machine" else f"[[{name}]]")
        lines += [f"{k} = {_value(v)}" for k, v in fields.items()]
    try:
        Machine.build(parse("\n".join(lines) + "\n", "fuzz.toml"))
    except TopologyError as e:
        assert str(e).startswith("fuzz.toml")


def test_two_vmds_decoding_the_same_host_addresses_are_refused(tmp_path):
    f = tmp_path / "guests.toml"
    f.write_text("""[machine]
cpus = 2

[[vmd]]
device = 0x201D
host_phys = { membar1 = 0x1000000000, membar2 = 0x2000000000 }

[[vmd]]
device = 0x201D
slot = "0f.0"
host_phys = { membar1 = 0x2000000000, membar2 = 0x2000000000 }
""")
    r = invoke("topology", "validate", str(f))
    assert r.exit_code == 2
    assert (f"{f}:11: vmd[1].host_phys.membar1: 0x2000000000-0x2001ffffff overlaps "
            "vmd[0].host_phys.membar2") in r.stderr


def test_a_slot_without_hot_plug_takes_no_hot_plug_event(tmp_path):
    f = tmp_path / "fixed.toml"
    f.write_text("""[machine]
cpus = 2

[[vmd]]
device = 0x201D
membar2 = "32M"

[[vmd.root_port]]
slot = 0
hotplug = false
nvme = { queues = 1 }
""")
    r = invoke("run", str(f), "--hotplug", "5:remove:vmd0.rp0")
    assert r.exit_code == 2 and r.stdout == ""
    assert "vmd0.rp0 is declared hotplug = false" in r.stderr
