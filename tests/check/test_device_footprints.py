"""The explorer's view of device acts comes from the hardware models, not from lists.

A drive that completes a command reads its CSTS, its queue's doorbells, MSI-X
Message Control, the table entry and the Command register, and its message
passes the root port (Command, windows) and the VMD (VMCONFIG, its own vector's
Message Control, entry and PBA). The hardware reports each of those accesses at
the address the CPU reaches the register by (``hw/observe.py``), and they become
accesses of the step that caused them. These tests show that:

- the accesses are there, at the right addresses;
- a device thread that announces the wrong footprint (the old mistake: an address
  list written by hand with a range missing) still has its races found; and
  with the reports switched off the same program is wrongly ``safe``;
- on random programs of raw register accesses by two CPUs racing a drive, optimal
  DPOR reaches exactly the final states of running every schedule.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from types import SimpleNamespace

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vmdsim.check.dpor import dpor
from vmdsim.check.explore import explore
from vmdsim.check.odpor import odpor
from vmdsim.check.program import Program, World, run_once
from vmdsim.check.scenario import find
from vmdsim.check.scenarios.seed_teardown import QID
from vmdsim.check.scenarios.worlds import DEVICE_ACTS, vmd_world
from vmdsim.hw.regs import (
    PCI_COMMAND,
    PCI_COMMAND_MASTER,
    PCI_MSIX_ENTRY_SIZE,
    PCI_MSIX_FLAGS,
    PCI_MSIX_FLAGS_ENABLE,
    PCI_MSIX_FLAGS_MASKALL,
)
from vmdsim.kernel.controlled import ControlledScheduler
from vmdsim.kernel.io import MMIO, ioremap, readl, writel, writew
from vmdsim.kernel.shared import READ, WRITE, sched_point


def _meets(accesses, addr: int, kind: str | None = None) -> bool:
    """Some MMIO access of ``accesses`` covers ``addr`` (and is of ``kind``)."""
    for obj, fld, k in accesses:
        if obj != "mmio" or (kind is not None and k != kind):
            continue
        for part in fld.split(","):
            lo, _, hi = part.partition("-")
            if int(lo, 16) <= addr <= int(hi or lo, 16):
                return True
    return False


def _seed(protocol: str = "kfree-rcu", desc_free: str = "immediate") -> Program:
    return find("seed-teardown").program(protocol=protocol, desc_free=desc_free)


def test_a_completion_step_touches_the_registers_the_hardware_consults():
    prog = _seed("srcu")
    labels: list[str] = []

    def nvme_first(s, choices):
        names = [c.label for c in choices]
        pick = "nvme" if "nvme" in names else names[0]
        labels.append(pick)
        return names.index(pick)

    world = World(prog)
    ex = run_once(prog, world, nvme_first)
    w = ex.world
    hw, vmd = w.drive.hw, w.m.vmds[0]
    port = w.m.root_ports[0]
    act = [s for s in ex.trace if s.thread == "nvme" and s.access
           and s.access[0] == "device"]
    assert len(act) == 1
    acc = act[0].accesses
    entry = hw.bar_address(0) + 0x2000 + hw.queue_vector(QID) * PCI_MSIX_ENTRY_SIZE
    db = hw.bar_address(0) + 0x1000 + 8 * QID
    expected = {
        "the drive's CSTS": (hw.bar_address(0) + 0x1C, READ),
        "the queue's doorbells": (db + 4, WRITE),
        "the drive's Command": (hw.config_page() + PCI_COMMAND, READ),
        "the drive's Message Control": (hw.config_page() + hw.msix.pos + PCI_MSIX_FLAGS, READ),
        "the drive's table entry": (entry + 12, READ),
        "the root port's Command": (port.config_page() + PCI_COMMAND, READ),
        "the VMD's Command": (vmd.config_page() + PCI_COMMAND, READ),
        "the VMD's Message Control": (vmd.config_page() + vmd.msix.pos + PCI_MSIX_FLAGS, READ),
    }
    missing = [what for what, (addr, kind) in expected.items() if not _meets(acc, addr, kind)]
    assert not missing, (missing, sorted(acc))
    assert any(a[0] == "cpu1" and a[1] == "pending" for a in acc), "the message raised nothing"


def _planted(announce):
    """The seed's program with its drive thread replaced by one that announces
    ``announce(world)`` (an old-style hand-written footprint) before completing."""
    prog = _seed()

    def threads(w):
        out = []
        for cpu, fn, name in prog.threads(w):
            if name == "nvme":
                def act(w=w):
                    sched_point(MMIO, announce(w), WRITE)
                    w.drive.hw.complete(QID)
                fn = act
            out.append((cpu, fn, name))
        return out

    return dataclasses.replace(prog, threads=threads)


def _drive_bar_only(w) -> str:
    """The old list's mistake: the drive's BAR, but not the config pages on the path or
    the VMD's own MSI-X table."""
    base = w.drive.hw.bar_address(0)
    return f"{base:#x}-{base + w.drive.hw.bars[0].size - 1:#x}"


@pytest.mark.parametrize("announce", [_drive_bar_only, lambda w: "0x0-0x7"],
                         ids=["range-missing", "wrong-range"])
def test_a_wrong_hand_written_footprint_no_longer_hides_the_seeds_race(announce):
    r = explore(_planted(announce), minimize=False)
    assert r.verdict == "use-after-free", r.drawing()


def test_without_the_hardwares_reports_the_same_program_is_wrongly_safe(monkeypatch):
    """The control: what a missing range did before. With the hardware's reports off,
    nothing orders the drive's act against the teardown's masking of its entry."""
    monkeypatch.setattr(ControlledScheduler, "_device_access", lambda self, lo, hi, kind: None)
    prog = _seed()

    def threads(w):
        return [(cpu, fn, name) if name != "nvme" else
                (None, lambda: (sched_point(DEVICE_ACTS, "nvme0", READ),
                                w.drive.hw.complete(QID)), name)
                for cpu, fn, name in prog.threads(w)]

    r = explore(dataclasses.replace(prog, threads=threads), minimize=False)
    assert r.verdict == "safe"


# -- optimal DPOR against every schedule, on raw register programs --------------------------
class _Apic:
    """Counts the messages that reach the CPUs (a multiset: their order is not an outcome)."""

    def __init__(self) -> None:
        self.got: Counter[tuple[int, int]] = Counter()

    def __call__(self, cpu: int, vector: int) -> None:
        self.got[cpu, vector] += 1


OPS = ("mask", "unmask", "msix-off", "msix-on", "fmask", "bme-off", "bme-on",
       "vmd-mask", "vmd-unmask", "rp-bme-off", "doorbell-read")


def _raw_world() -> SimpleNamespace:
    w = vmd_world(protocol="srcu")
    hw, vmd, port = w.drives[0].hw, w.m.vmds[0], w.m.root_ports[0]
    k = w.k
    w.apic = _Apic()
    w.m.rc.apic.attach(w.apic)  # no handlers run: the pending messages are the outcome
    vec = hw.queue_vector(QID)
    vvec = next(i for i in range(vmd.msix.nvec) if vmd.msix.addr[i])
    w.regs = {
        "entry": ioremap(k, hw.bar_address(0) + 0x2000 + 16 * vec + 12, 4),
        "flags": ioremap(k, hw.config_page() + hw.msix.pos + PCI_MSIX_FLAGS, 2),
        "cmd": ioremap(k, hw.config_page() + PCI_COMMAND, 2),
        "vmd-entry": ioremap(k, vmd.bar_address(4) + 16 * vvec + 12, 4),
        "rp-cmd": ioremap(k, port.config_page() + PCI_COMMAND, 2),
        "db": ioremap(k, hw.bar_address(0) + 0x1000 + 8 * QID + 4, 4),
    }
    w.flags = hw.cfg.read(hw.msix.pos + PCI_MSIX_FLAGS, 2)
    w.cmd = hw.cfg.read(PCI_COMMAND, 2)
    w.rp_cmd = port.cfg.read(PCI_COMMAND, 2)
    w.seen = {}
    return w


def _do(w, op: str, who: str) -> None:
    r = w.regs
    if op == "mask":
        writel(1, r["entry"])
    elif op == "unmask":
        writel(0, r["entry"])
    elif op == "msix-off":
        writew(w.flags & ~PCI_MSIX_FLAGS_ENABLE, r["flags"])
    elif op == "msix-on":
        writew(w.flags | PCI_MSIX_FLAGS_ENABLE, r["flags"])
    elif op == "fmask":
        writew(w.flags | PCI_MSIX_FLAGS_MASKALL, r["flags"])
    elif op == "bme-off":
        writew(w.cmd & ~PCI_COMMAND_MASTER, r["cmd"])
    elif op == "bme-on":
        writew(w.cmd | PCI_COMMAND_MASTER, r["cmd"])
    elif op == "vmd-mask":
        writel(1, r["vmd-entry"])
    elif op == "vmd-unmask":
        writel(0, r["vmd-entry"])
    elif op == "rp-bme-off":
        writew(w.rp_cmd & ~PCI_COMMAND_MASTER, r["rp-cmd"])
    else:
        w.seen.setdefault(who, []).append(readl(r["db"]))


def _outcome(w) -> tuple:
    hw, vmd = w.drives[0].hw, w.m.vmds[0]
    mx, vx = hw.msix, vmd.msix
    return (mx.pending, mx.sent, mx.dropped, mx.merged, hw.completions, hw.completions_refused,
            hw.master_aborted_writes, vx.pending, vx.sent, vx.merged,
            tuple(sorted(w.apic.got.items())),
            tuple((who, tuple(got)) for who, got in sorted(w.seen.items())))


def _raw_program(cpu0: list[str], cpu1: list[str], acts: int) -> Program:
    def body(ops, who):
        return lambda w: [_do(w, op, who) for op in ops]

    def threads(w):
        out = [(0, lambda: body(cpu0, "T0")(w), "T0"), (1, lambda: body(cpu1, "T1")(w), "T1")]
        out.append((None, lambda: [(sched_point(DEVICE_ACTS, "nvme0", READ),
                                    w.drives[0].hw.complete(QID)) for _ in range(acts)],
                    "nvme"))
        return out

    return Program("raw-registers", _raw_world, threads)


def _finals(prog: Program, explorer, **kw) -> set[tuple]:
    seen: set[tuple] = set()

    def keep(ex):
        assert ex.verdict == "safe", ex.failure
        if ex.complete:
            seen.add(_outcome(ex.world))
        return True

    explorer(prog, on_execution=keep, **kw)
    return seen


programs = st.tuples(st.lists(st.sampled_from(OPS), min_size=1, max_size=2),
                     st.lists(st.sampled_from(OPS), min_size=0, max_size=1),
                     st.integers(1, 2))


def _same_finals(spec) -> None:
    cpu0, cpu1, acts = spec
    prog = _raw_program(cpu0, cpu1, acts)
    every = _finals(prog, dpor, reduce=False)
    assert _finals(prog, odpor) == every
    assert _finals(prog, dpor) == every


@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(programs)
def test_optimal_dpor_reaches_every_final_state_of_raw_register_races(spec):
    _same_finals(spec)


@pytest.mark.slow
@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(programs)
def test_optimal_dpor_reaches_every_final_state_of_raw_register_races_at_length(spec):
    _same_finals(spec)


def test_a_masked_entry_and_a_completion_reach_two_final_states():
    """The smallest race of the kind: the CPU masks the drive's entry while it fires.
    Sent at once, or left pending: two outcomes, which every explorer must reach."""
    prog = _raw_program(["mask"], [], 1)
    finals = _finals(prog, odpor)
    assert len({(f[0] != 0, f[1]) for f in finals}) == 2, finals
    assert finals == _finals(prog, dpor, reduce=False)
