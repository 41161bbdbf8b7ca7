"""Helpers for the tests that run ``vmdsim`` through its real entry point on the examples.

``cli(*args)`` invokes ``vmdsim.cli:main`` with click's CliRunner and caches the
result, so a command several tests read (``run FILE``) runs once per session;
``invoke(*args)`` does not cache (for files made in ``tmp_path``). ``EXAMPLES``
says what each example topology holds, which is what the tests expect to see.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from click.testing import CliRunner, Result

from vmdsim.cli import main

TOPOLOGIES = Path(__file__).resolve().parents[2] / "examples" / "topologies"
DURATION = "2"  # simulated ms: enough completions on every queue, a short run


@dataclass(frozen=True)
class Example:
    cpus: int
    vmds: int
    drives: int
    queues_per_drive: int  # admin + I/O queues the NVMe driver sets up
    first_bus: int = 0  # of each hidden domain
    remapping: bool = True
    per_drive: tuple[int, ...] = ()  # when drives differ: each one's admin + I/O queues

    @property
    def queues(self) -> int:
        return sum(self.per_drive) if self.per_drive else self.drives * self.queues_per_drive

    @property
    def io_queues(self) -> int:
        return self.queues - self.drives

    @property
    def domains(self) -> list[str]:
        return [f"{0x10000 + i:04x}" for i in range(self.vmds)]


EXAMPLES = {
    "default": Example(cpus=4, vmds=1, drives=4, queues_per_drive=5),
    "client": Example(cpus=4, vmds=1, drives=1, queues_per_drive=5, first_bus=0xE0),
    "two-vmds": Example(cpus=4, vmds=2, drives=4, queues_per_drive=5),
    "server-24": Example(cpus=8, vmds=6, drives=24, queues_per_drive=9),
    "bypass": Example(cpus=4, vmds=1, drives=2, queues_per_drive=5, remapping=False),
    "modulo-crowding": Example(cpus=4, vmds=1, drives=3, queues_per_drive=3,
                               per_drive=(3, 3, 2)),
}


def path(name: str) -> str:
    return str(TOPOLOGIES / f"{name}.toml")


def invoke(*args: str) -> Result:
    return CliRunner().invoke(main, list(args))


@cache
def cli(*args: str) -> Result:
    return invoke(*args)


def ok(r: Result) -> str:
    """The standard output of a command that must have succeeded."""
    assert r.exit_code == 0 and r.exception is None, (r.output, r.exception)
    assert r.stderr == ""
    return r.stdout


def found(r: Result) -> str:
    """The standard output of a ``vmdsim check`` that found a failing schedule (exit 1)."""
    assert r.exit_code == 1 and isinstance(r.exception, SystemExit), (r.output, r.exception)
    assert r.stderr == ""
    return r.stdout


# -- reading what the commands print ------------------------------------------------------
def sections(out: str) -> dict[str, list[str]]:
    """``vmdsim run``'s output cut into its parts: tree, interrupts, vectors, queues, summary."""
    lines = out.splitlines()
    start = {
        "interrupts": next(i for i, s in enumerate(lines) if s.lstrip().startswith("CPU0")),
        "vectors": next(i for i, s in enumerate(lines) if s.startswith("vector ")),
        "queues": next(i for i, s in enumerate(lines) if s.startswith("queue ")),
        "summary": next(i for i, s in enumerate(lines) if s.startswith("protocol ")),
    }
    assert start["interrupts"] < start["vectors"] < start["queues"] < start["summary"]
    order = ["tree", "interrupts", "vectors", "queues", "summary"]
    bounds = [0, start["interrupts"], start["vectors"], start["queues"], start["summary"],
              len(lines)]
    return {name: [s for s in lines[bounds[i]:bounds[i + 1]] if s.strip()]
            for i, name in enumerate(order)}


@dataclass
class IrqLine:
    irq: int
    counts: list[int]
    chip: str
    hwirq: str
    rest: str  # actions, then the VMD column if any

    @property
    def vmd_column(self) -> str | None:
        last = self.rest.split()[-1] if self.rest.split() else ""
        return last if re.fullmatch(r"vmd\d+:\d+", last) else None


def proc_interrupts(lines: list[str], ncpus: int) -> dict[int, IrqLine]:
    """The numbered rows of a /proc/interrupts table, by IRQ (header and SPU checked)."""
    header = lines[0].split()
    assert header == [f"CPU{i}" for i in range(ncpus)], lines[0]
    assert lines[-1].lstrip().startswith("SPU:")
    rows = {}
    for s in lines[1:-1]:
        tok = s.split()
        assert tok[0].endswith(":"), s
        counts = [int(t) for t in tok[1:1 + ncpus]]
        chip, hwirq = tok[1 + ncpus], tok[2 + ncpus]
        rest = " ".join(tok[3 + ncpus:])
        rows[int(tok[0][:-1])] = IrqLine(int(tok[0][:-1]), counts, chip, hwirq, rest)
    return rows


def table(lines: list[str], header: str) -> list[dict[str, str]]:
    """Rows of one of run's tables (``vector``/``queue``), cells split on blanks."""
    assert lines[0].split() == header.split(), lines[0]
    names = ["vector", "irq", "children", "runs", "child_calls", "cpu"] if \
        header.startswith("vector") else ["queue", "irq", "vmd", "cpus", "real", "spurious"]
    rows = []
    for s in lines[1:]:
        cells = s.split()
        assert len(cells) == len(names), s
        rows.append(dict(zip(names, cells, strict=True)))
    return rows


VECTOR_HEADER = "vector irq children handler runs child calls cpu"
QUEUE_HEADER = "queue irq vmd vector cpus real spurious"


def summary_numbers(lines: list[str]) -> dict[str, float]:
    text = "\n".join(lines)
    pats = {
        "posted": r"completions posted (\d+)",
        "delivered": r"interrupts delivered (\d+)",
        "calls_per_interrupt": r": ([\d.]+) calls and [\d.]+ spurious per delivered interrupt",
        "real": r"= real (\d+) \+",
        "spurious": r"\+ spurious (\d+):",
        "lost": r"lost interrupts (\d+)",
    }
    out = {}
    for key, pat in pats.items():
        m = re.search(pat, text)
        assert m, f"{key!r} not in the summary:\n{text}"
        out[key] = float(m.group(1))
    return out


def identities(lines: list[str]) -> list[tuple[str, int, int]]:
    """Every summary line of the form ``name N + ... = name M + ...``, as (line, sum of the
    left side, sum of the right side): each term's first integer is its count."""
    out = []
    for line in lines:
        if " = " not in line:
            continue
        sides = []
        for side in line.split(" = ", 1):
            total = 0
            for term in side.split(" + "):
                m = re.search(r"\b(\d+)\b", term)
                assert m, f"a term without a count in {line!r}: {term!r}"
                total += int(m.group(1))
            sides.append(total)
        out.append((line, sides[0], sides[1]))
    return out
