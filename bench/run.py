"""Benchmark runner: each figure is a ratio against a baseline measured in the same run.

    python bench/run.py            # every benchmark
    python bench/run.py msi        # those whose name contains "msi"

Absolute speeds depend on the machine; the ratio to a baseline timed moments
earlier on the same interpreter is what can be compared from run to run.
"""

from __future__ import annotations

import importlib
import pkgutil
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))


@dataclass
class Bench:
    name: str
    baseline: str
    # Each of these returns a callable doing `n` operations.
    make_baseline: Callable[[int], Callable[[], None]]
    make_subject: Callable[[int], Callable[[], None]]
    n: int = 20000


REGISTRY: list[Bench] = []
# Figures that are not a ratio to a baseline (counts, seconds): (title, fn -> header, rows).
TABLES: list[tuple[str, Callable[[], tuple[list[str], list[list[str]]]]]] = []


def register(name: str, baseline: str, make_baseline, make_subject, n: int = 20000) -> None:
    """Add a figure: ``make_*`` take n and return a callable doing n operations."""
    REGISTRY.append(Bench(name, baseline, make_baseline, make_subject, n))


def table(title: str, fn: Callable[[], tuple[list[str], list[list[str]]]]) -> None:
    """Add a table of figures measured when the runner runs."""
    TABLES.append((title, fn))


def call_loop(n: int) -> Callable[[], None]:
    """The common baseline: n calls of an empty Python function."""

    def f() -> None:
        pass

    def run() -> None:
        for _ in range(n):
            f()

    return run


# -- the figures ----------------------------------------------------------------------
VMD_VECTOR = 5
NVME_QUEUE = 3
ACK_EVERY = 512  # consume completions this often, so the 1024-entry queue never fills


def _default_machine_remapping():
    """The default machine, brought up through config cycles and MMIO only.

    The VMD's MSI-X entry ``VMD_VECTOR`` goes to CPU 1; vmd0.rp0.nvme's queue
    ``NVME_QUEUE`` is programmed with the message the VMD driver composes
    (x86 MSI base, VMD vector index in address bits 19:12), remapping on.
    Returns (drive, the drive's CQ head doorbell address, root complex, APIC hits).
    """
    from vmdsim.hw.fabric import MMCONFIG_BASE, ecam_offset
    from vmdsim.hw.machine import Machine

    m = Machine.load()
    rc = m.rc
    hits = [0]

    def apic(cpu: int, vector: int) -> None:
        hits[0] += 1

    rc.apic.attach(apic)

    def cfg(base: int, bus: int, dev: int, reg: int, size: int, value: int | None = None):
        addr = base + ecam_offset(bus, dev << 3, reg)
        if value is None:
            return rc.mem_read(addr, size)
        rc.mem_write(addr, size, value)
        return None

    vmd = m.vmds[0]
    vdev = vmd.devfn >> 3
    bar = [cfg(MMCONFIG_BASE, 0, vdev, 0x10 + 4 * i, 4) & ~0xF for i in range(6)]
    cfgbar, membar1, membar2 = (bar[i] | bar[i + 1] << 32 for i in (0, 2, 4))
    cfg(MMCONFIG_BASE, 0, vdev, 0x04, 2, 0x6)  # memory + bus master
    entry = membar2 + 16 * VMD_VECTOR
    for off, value in ((0, 0xFEE01000), (4, 0), (8, 0x40), (12, 0)):
        rc.mem_write(entry + off, 4, value)
    cfg(MMCONFIG_BASE, 0, vdev, vmd.msix.pos + 2, 2, 0x8000)  # MSI-X enable
    # root port 00:00.0 of the hidden domain -> bus 1, window at MEMBAR1; the drive's BAR0 there
    cfg(cfgbar, 0, 0, 0x19, 1, 1)
    cfg(cfgbar, 0, 0, 0x1A, 1, 1)
    cfg(cfgbar, 0, 0, 0x20, 4, (membar1 >> 16) | (membar1 >> 16) << 16)
    cfg(cfgbar, 0, 0, 0x04, 2, 0x6)
    cfg(cfgbar, 1, 0, 0x10, 4, membar1 & 0xFFFFFFFF)
    cfg(cfgbar, 1, 0, 0x14, 4, membar1 >> 32)
    cfg(cfgbar, 1, 0, 0x04, 2, 0x6)
    nvme = m.nvmes[0]
    entry = membar1 + 0x2000 + 16 * NVME_QUEUE
    for off, value in ((0, 0xFEE00000 | VMD_VECTOR << 12), (4, 0), (8, 0), (12, 0)):
        rc.mem_write(entry + off, 4, value)
    cfg(cfgbar, 1, 0, nvme.msix.pos + 2, 2, 0x8000)
    rc.mem_write(membar1 + 0x24, 4, 31 | 31 << 16)  # AQA
    asq, acq = 0x100000, 0x101000  # the admin queues, in RAM
    for off, addr in ((0x28, asq), (0x30, acq)):
        rc.mem_write(membar1 + off, 4, addr)
        rc.mem_write(membar1 + off + 4, 4, 0)
    rc.mem_write(membar1 + 0x14, 4, 1)  # CC.EN
    # Create I/O CQ NVME_QUEUE on MSI-X entry NVME_QUEUE, then its SQ; ring the admin doorbell
    for i, (opcode, cdw11) in enumerate(((0x05, 0x3 | NVME_QUEUE << 16),
                                         (0x01, 0x1 | NVME_QUEUE << 16))):
        sqe = [opcode | i << 16] + [0] * 5 + [0x200000 + 0x10000 * i, 0, 0, 0,
                                              NVME_QUEUE | 1023 << 16, cdw11, 0, 0, 0, 0]
        for d, value in enumerate(sqe):
            rc.mem_write(asq + 64 * i + 4 * d, 4, value)
    rc.mem_write(membar1 + 0x1000, 4, 2)
    doorbell = membar1 + 0x1000 + 8 * NVME_QUEUE + 4
    nvme.complete(NVME_QUEUE)
    if hits[0] != 1 or rc.mem_read(doorbell, 4) != 1:
        raise RuntimeError("bench set-up: a completion did not arrive as one VMD vector")
    rc.mem_write(doorbell, 4, 1)
    return nvme, doorbell, rc, hits


def msix_through_vmd(n: int) -> Callable[[], None]:
    """n completions on a drive behind the VMD, each delivered as a VMD vector at the APIC."""
    nvme, doorbell, rc, hits = _default_machine_remapping()
    complete = nvme.complete
    rounds, depth = n // ACK_EVERY, nvme.queue_depth
    head = [1]  # the set-up consumed one entry

    def run() -> None:
        before = hits[0]
        for _ in range(rounds):
            for _ in range(ACK_EVERY):
                complete(NVME_QUEUE)
            head[0] = (head[0] + ACK_EVERY) % depth
            rc.mem_write(doorbell, 4, head[0])  # the driver consumes what it handled
        if hits[0] - before != rounds * ACK_EVERY:
            raise RuntimeError("bench: interrupts were lost")

    return run


def per_op(run: Callable[[], None], n: int, repeats: int = 5) -> float:
    """Best-of-``repeats`` seconds per operation."""
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - t0)
    return best / n


register("child MSI-X -> VMD vector -> APIC", "empty function call", call_loop,
         msix_through_vmd, n=20480)


def main(argv: list[str]) -> int:
    sys.modules.setdefault("run", sys.modules[__name__])  # bench_* modules register here
    for mod in pkgutil.iter_modules([str(Path(__file__).resolve().parent)]):
        if mod.name.startswith("bench_"):
            importlib.import_module(mod.name)
    pattern = argv[0] if argv else ""
    rows = []
    for b in REGISTRY:
        if pattern not in b.name:
            continue
        base = per_op(b.make_baseline(b.n), b.n)
        subj = per_op(b.make_subject(b.n), b.n)
        rows.append((b.name, b.baseline, subj / base, 1 / subj))
    tables = [(t, fn) for t, fn in TABLES if pattern in t]
    if not rows and not tables:
        print(f"no benchmark matches {pattern!r}", file=sys.stderr)
        return 2
    if rows:
        w0 = max(len(r[0]) for r in rows)
        w1 = max(len(r[1]) for r in rows)
        print(f"{'benchmark':<{w0}}  {'baseline':<{w1}}  {'cost / baseline':>15}  {'ops/s':>12}")
        for name, baseline, ratio, rate in rows:
            print(f"{name:<{w0}}  {baseline:<{w1}}  {ratio:>15.1f}  {rate:>12,.0f}")
    for title, fn in tables:
        header, body = fn()
        widths = [max(len(str(r[i])) for r in [header, *body]) for i in range(len(header))]
        print(f"\n{title}")
        for r in [header, *body]:
            print("  ".join(str(c).rjust(w) if i else str(c).ljust(w)
                            for i, (c, w) in enumerate(zip(r, widths, strict=True))))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
