"""Every command, with any mix of its real options and hostile values, hostile topology and
scenario files and replay tokens: the exit status is 0, 1 (a verdict: lost interrupts or
unbound devices, a failing schedule) or 2, never an exception; an exit 2 says why on stderr,
in lines of the form ``PROGRAM: error: ...``, naming an option, a file or the token it
was given; nothing hangs (a stalled example dumps its stack and fails the run).

The commands and their options are read from the CLI itself, so a new option is fuzzed
the day it is added."""

from __future__ import annotations

import faulthandler
import re
from pathlib import Path

import click
import pytest
from clirig import path
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vmdsim.cli import main

# Seconds one example may take before the run is stopped with every thread's stack: a hang
# is a failure here, never a stuck CI job. Generous: the slowest legal examples (an
# exhaustive check of a small scenario) take a few seconds.
STALL = 240


def _leaves(cmd: click.Command, prefix: tuple[str, ...] = ()):
    if isinstance(cmd, click.Group):
        for name, sub in sorted(cmd.commands.items()):
            yield from _leaves(sub, (*prefix, name))
    else:
        yield prefix, cmd


COMMANDS = dict(_leaves(main))

INTS = ["-1", "0", "1", "2", "3", "1.5", "x", "", "99999999999999999999", "-9" * 30]
FLOATS = ["nan", "inf", "-inf", "-1", "0", "0.2", "1", "1e308", "1e9", "x", "1e-300"]
NAMES = ["srcu", "kfree-rcu", "rfc-v3", "immediate", "rcu", "least-loaded", "modulo",
         "affinity", "rebalance", "nope", "", "a,b", "x" * 300, "\u00e9\x00"]
HOTPLUG = ["0.5:remove:vmd0.rp0", "0.5:insert:vmd0.rp0", "5:remove:vmd0.rp0", "x:y:z",
           "nan:remove:vmd0.rp0", "-1:remove:vmd0.rp0", "0.5:remove:nope", "0.5:fly:vmd0.rp0"]
OPTS = ["free=kfree", "free=nope", "x", "=", "protocol=srcu", "spin-limit=0",
        "max-steps=99999999999"]
PLOTS = ["out.png", "no/such/dir/x.png", "x.nosuch", "", "."]
KERNELS = ["rfc-v3", "4.5", "v4.9", "6.16", "6.17", "5.3", "x", ""]
VARIANTS = ["before:untracked-irq", "before:nope", "before:rcu-sync", "x.py", "nope", "",
            str(Path(__file__).resolve().parents[2] / "examples" / "variants"
                / "cfg_addr_v5_3.py")]
# The corpus only by its fast entries (or wrong names): all of it is the history tests'
# business, and takes half a minute.
CORPUS_NAMES = ["osc", "bus-offsets", "30ce035", "soft-reboot", "nope", "", "--list"]

# The built-in scenario only with its fast, failing settings (every strategy stops at the
# use-after-free within seconds); the exhaustive proofs are the explorer tests' business.
FAST_SCENARIO_OPTIONS = {"--protocol": ["kfree-rcu", "rfc-v3", "nope"],
                         "--desc-free": ["immediate", "nope"]}

README_TOKEN = ("seed-teardown[protocol=kfree-rcu,desc_free=immediate]:"
                "nvme*2,irq34@cpu1*29,unbind*259,irq34@cpu1")

TOPOLOGY_TEXTS = [
    "",
    "[machine]\ncpus = 2\n",
    "[machine]\ncpus = 0\n",
    "[machine]\ncpus = 2\n[[vmd]]\ndevice = 0x201D\nmsix_vectors = 1\n"
    "[[vmd.root_port]]\nslot = 0\nnvme = { queues = 1 }\n",
    "[machine]\ncpus = 2\n[[vmd]]\ndevice = 0x201D\nslot = \"05.5\"\n",
    "[machine]\ncpus = 2\n[[vmd]]\ndevice = 0xFFFF\n",
    "[[vmd]]\n[[vmd]]\n[[vmd]]\n",
    "\xff\xfe\x00",
    "[machine]\ncpus = \"two\"\n",
]

SCENARIO_HEAD = """from types import SimpleNamespace
from vmdsim.check.program import Program
from vmdsim.check.scenario import scenario
from vmdsim.kernel.core import Kernel
from vmdsim.kernel.shared import KObject, shared


class box({base}):
    v = shared()

    def __init__(self):
        self.v = 0


@scenario("fuzzed", "a scenario the fuzzer wrote")
def fuzzed():
    def setup():
        return {setup}

    def body(w):
        {body}

    return Program("fuzzed", setup, lambda w: {threads})
"""
SETUPS = ["SimpleNamespace(k=Kernel(2), b=box())", "None", "1 / 0", "SimpleNamespace()"]
BODIES = ["w.b.v += 1", "w.b.v = w.b.v", "raise KeyError('x')", "1 / 0", "pass",
          "w.k.mem.kfree(w.b)", "w.nothing.v = 1", "while w.b.v == 0: pass",
          "while True: pass"]
THREADS = ["[(0, lambda: body(w), 'a'), (1, lambda: body(w), 'b')]",
           "[(0, lambda: body(w), 'a,b')]", "[(9, lambda: body(w), 'a')]",
           "[(-1, lambda: body(w), 'a')]", "[]", "None", "[(0, 1, 'a')]",
           "[(0, lambda: body(w), 'a'), (0, lambda: body(w), 'a')]", "'abc'"]
SCENARIO_FILES = ["", "x = (\n", "import no_such_module_zz\n", "\x00\x01"]


@st.composite
def scenario_file(draw) -> str:
    if draw(st.booleans()):
        return draw(st.sampled_from(SCENARIO_FILES))
    return SCENARIO_HEAD.format(base=draw(st.sampled_from(["KObject", "KObject", "object"])),
                                setup=draw(st.sampled_from(SETUPS)),
                                body=draw(st.sampled_from(BODIES)),
                                threads=draw(st.sampled_from(THREADS)))


@st.composite
def replay_token(draw) -> str:
    if draw(st.booleans()):  # the README's token, cut, stretched or bent
        t = README_TOKEN
        cut = draw(st.integers(0, len(t)))
        tail = draw(st.sampled_from(["", ",irq34@cpu1", "*0", "*-1", "*999999999",
                                     ",nvme*500", ",", "]", "[", ":", "@cpu99", "\x00"]))
        return t[:cut] + tail if draw(st.booleans()) else t + tail
    name = draw(st.sampled_from(["seed-teardown", "hot-remove", "nope", "", "rcu-list"]))
    opts = draw(st.lists(st.sampled_from(["protocol=kfree-rcu", "protocol=rfc-v3",
                                          "desc_free=immediate", "protocol", "x=y",
                                          "max_steps=0", "spin_limit=5"]), max_size=3))
    steps = draw(st.lists(st.sampled_from(["nvme", "unbind", "irq34@cpu1", "teardown",
                                           "x", "", "irq34@cpu9", "nvme*3", "unbind*0"]),
                          max_size=6))
    head = f"{name}[{','.join(opts)}]" if opts else name
    return f"{head}:{','.join(steps)}"


def _value(draw, param: click.Parameter) -> list[str]:
    if isinstance(param, click.Option) and param.is_flag:
        return [param.opts[0]]
    opt = param.opts[0]
    t = param.type
    if opt in FAST_SCENARIO_OPTIONS:
        pool = FAST_SCENARIO_OPTIONS[opt]
    elif isinstance(t, click.Choice):
        pool = [*t.choices, "nope"]
    elif isinstance(t, click.types.IntParamType):
        pool = INTS
    elif isinstance(t, click.types.FloatParamType):
        pool = FLOATS
    elif opt == "--hotplug":
        pool = HOTPLUG
    elif opt == "--opt":
        pool = OPTS
    elif opt == "--plot":
        pool = PLOTS
    elif opt == "--kernel":
        pool = KERNELS
    elif opt == "--variant":
        pool = VARIANTS
    else:
        pool = NAMES
    return [opt, draw(st.sampled_from(pool))]


@st.composite
def command_line(draw, tmp) -> list[str]:
    names = draw(st.sampled_from(sorted(COMMANDS)))
    cmd = COMMANDS[names]
    args = list(names)
    options = [p for p in cmd.params if isinstance(p, click.Option)
               and p.opts[0] != "--no-reduce"]  # brute force: minutes, by design
    if names == ("check",):  # the explorer: a strategy that ends in seconds
        options = [p for p in options if p.opts[0] not in ("--bound", "--runs")]
    for p in draw(st.lists(st.sampled_from(options), max_size=4, unique_by=id)
                  if options else st.just([])):
        args += _value(draw, p)
    for p in cmd.params:
        if not isinstance(p, click.Argument):
            continue
        if p.name in ("topology", "file"):
            kind = draw(st.sampled_from(["none", "example", "text", "missing", "folder"]))
            if kind == "example":
                args.append(path(draw(st.sampled_from(["default", "client", "bypass"]))))
            elif kind == "text":
                f = tmp / "fuzz.toml"
                f.write_bytes(draw(st.sampled_from(TOPOLOGY_TEXTS)).encode("utf-8",
                                                                          "surrogateescape"))
                args.append(str(f))
            elif kind == "missing":
                args.append(str(tmp / "nope.toml"))
            elif kind == "folder":
                args.append(str(tmp))
        elif p.name == "scenario":
            if draw(st.booleans()):
                f = tmp / "fuzzed.py"
                f.write_text(draw(scenario_file()))
                args.append(str(f))
            else:
                args.append(draw(st.sampled_from(["seed-teardown", "nope", "", "x.py"])))
        elif p.name == "replay_token":
            args.append(draw(replay_token()))
        elif p.name == "names":  # regressions
            args += draw(st.lists(st.sampled_from(CORPUS_NAMES), min_size=1, max_size=2))
    if names == ("check",) and "--strategy" not in args:
        args += ["--strategy", draw(st.sampled_from(["dpor", "optimal", "pct", "bounded"]))]
    if names == ("check",) and "pct" in args:
        args += ["--runs", draw(st.sampled_from(["0", "-1", "1", "20"]))]
    if names == ("check",) and "bounded" in args:
        args += ["--bound", draw(st.sampled_from(["-1", "0", "1", "x"]))]
    return args


_ERROR = re.compile(r"^vmdsim( [a-z-]+)*: error: \S")


def _judge(args: list[str], r) -> None:
    said = f"vmdsim {' '.join(args)!r}: exit {r.exit_code}\n{r.output}"
    assert r.exception is None or isinstance(r.exception, SystemExit), (
        said, repr(r.exception))
    assert "Traceback" not in r.output, said
    assert r.exit_code in (0, 1, 2), said
    if r.exit_code == 2:
        lines = r.stderr.splitlines()
        assert lines and all(_ERROR.match(line) for line in lines), said
        named = ([p for a in args for p in re.split(r"[,=:\[\]*@]", a) if p]
                 + ["''" for a in args if not a])
        assert any(a in r.stderr or repr(a)[1:-1] in r.stderr for a in named), said


def _run(args: list[str]) -> None:
    from click.testing import CliRunner

    faulthandler.dump_traceback_later(STALL, exit=True)
    try:
        r = CliRunner().invoke(main, args, prog_name="vmdsim")
    finally:
        faulthandler.cancel_dump_traceback_later()
    _judge(args, r)


@pytest.fixture(scope="module")
def tmp(tmp_path_factory):
    return tmp_path_factory.mktemp("fuzz")


FEW = settings(max_examples=40, deadline=None, database=None,
               suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])


def any_command_line(tmp, data, monkeypatch) -> None:
    monkeypatch.chdir(tmp)
    _run(data.draw(command_line(tmp)))


test_any_command_line_exits_0_1_or_2_with_its_reason = FEW(given(data=st.data())(
    any_command_line))
test_many_command_lines_exit_0_1_or_2_with_their_reason = pytest.mark.slow(
    settings(FEW, max_examples=600)(given(data=st.data())(any_command_line)))
