"""Interrupt load and hot-plug churn, in simulated time.

The workload stands where applications and people stand: it completes I/O on
the queues the kernel set up (each drive posting a completion is what makes
the drive send its MSI-X message) and pulls or inserts cards at given
moments. Completions on each queue arrive as a Poisson process at ``rate``
per second of simulated time, from a seeded generator, so a run is
reproducible. Handlers take no simulated time: everything a completion
causes (the message, the VMD's remapping, the demux, the NVMe handler)
happens at the instant it is posted, free-running.

A completion is *lost* if the run ends with it still unconsumed on a drive
that is present: its interrupt never reached a handler that looked. A
completion still unconsumed when its drive is pulled is *abandoned* (a
surprise removal drops it by nature) and counted apart. Where every
completion and interrupt went, and the identities that tie the counts
together, is :mod:`vmdsim.sim.accounting`'s business: the run ends with it.
"""

from __future__ import annotations

import heapq
import math
import random
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from vmdsim.errors import VmdsimError
from vmdsim.hw.nvme import NvmeController
from vmdsim.sim.accounting import Accounting, AccountingError, Snapshot, account, snapshot
from vmdsim.sim.system import System, io_queues


class WorkloadError(VmdsimError):
    """A workload that cannot be run as written."""


@dataclass
class HotplugEvent:
    at_ms: float
    action: str  # "remove" or "insert"
    slot: str


_EVENT = re.compile(r"^\s*(?P<at>\d+(\.\d+)?)\s*(ms)?\s*:\s*(?P<action>remove|insert)\s*:"
                    r"\s*(?P<slot>\S+)\s*$")


def parse_hotplug(text: str) -> list[HotplugEvent]:
    """``"5:remove:vmd0.rp1, 8:insert:vmd0.rp1"`` -> events, in time order."""
    events = []
    for i, part in enumerate(filter(None, (p.strip() for p in text.split(",")))):
        m = _EVENT.match(part)
        if not m:
            raise WorkloadError(f"hotplug event {i + 1} ({part!r}): write it as "
                                "MS:remove:SLOT or MS:insert:SLOT, e.g. 5:remove:vmd0.rp1")
        events.append(HotplugEvent(float(m["at"]), m["action"], m["slot"]))
    return sorted(events, key=lambda e: e.at_ms)


@dataclass
class Load:
    rate: float = 2000.0  # completions per second per I/O queue
    duration_ms: float = 20.0
    interrupts: int | None = None  # stop after this many completions in all
    seed: int = 0
    hotplug: list[HotplugEvent] = field(default_factory=list)


MAX_COMPLETIONS = 1_000_000  # what one run may post: well under a minute of simulation


def check_load_options(load: Load) -> None:
    """Refuse a load that is empty or endless on any machine, naming the option."""
    for option, value in (("--rate", load.rate), ("--duration", load.duration_ms)):
        if not math.isfinite(value) or value <= 0:
            raise WorkloadError(f"{option} {value}: must be a positive, finite number")
    if load.interrupts is not None and load.interrupts <= 0:
        raise WorkloadError(f"--interrupts {load.interrupts}: must be positive (or left out)")
    for i, ev in enumerate(load.hotplug):
        if ev.at_ms > load.duration_ms:
            raise WorkloadError(f"--hotplug event {i + 1} ({ev.at_ms:g}:{ev.action}:{ev.slot})"
                                f": after the end of the run ({load.duration_ms:g} ms)")


def check_load(load: Load, io_queue_count: int) -> None:
    """Refuse a load that is empty, endless or absurdly large, naming the option."""
    check_load_options(load)
    expected = load.rate * load.duration_ms / 1000 * io_queue_count
    if load.interrupts is not None:
        expected = min(expected, load.interrupts)
    if expected > MAX_COMPLETIONS:
        raise WorkloadError(f"--rate {load.rate:g} for --duration {load.duration_ms:g} ms on "
                            f"{io_queue_count} I/O queues would post about {expected:.3g} "
                            f"completions (at most {MAX_COMPLETIONS:,} in one run): shorten "
                            "--duration, lower --rate, or cap it with --interrupts")


@dataclass
class Outcome:
    posted: int = 0
    refused: int = 0  # the drive's queue was full or it was not ready
    removed: int = 0
    inserted: int = 0
    sim_ms: float = 0.0
    per_queue_posted: dict[str, int] = field(default_factory=dict)
    accounting: Accounting = field(default_factory=Accounting)
    before: Snapshot | None = field(default=None, compare=False, repr=False)

    @property
    def lost(self) -> int:
        return self.accounting.lost

    @property
    def abandoned(self) -> int:
        return self.accounting.abandoned


def run_load(system: System, load: Load,
             progress: Callable[[float], None] | None = None) -> Outcome:
    """Drive ``load`` through ``system``; returns what was posted, lost and abandoned."""
    check_load(load, len(io_queues(system)))
    rng = random.Random(load.seed)
    out = Outcome()
    out.before = snapshot(system)
    for i, ev in enumerate(load.hotplug):  # checked before anything runs
        if not system.slot(ev.slot).hotplug:
            raise WorkloadError(f"--hotplug event {i + 1} ({ev.at_ms:g}:{ev.action}:{ev.slot})"
                                f": {ev.slot} is declared hotplug = false, so no card can "
                                "be pulled or put in while the machine runs")
    heap: list[tuple[float, int, str, Any]] = []
    seq = 0
    loaded: set[tuple[int, int]] = set()  # (drive, qid) with an arrival in the heap

    def schedule_queues(now: float) -> None:
        nonlocal seq
        if load.rate <= 0:
            return
        for name, drive, qid in io_queues(system):
            if (id(drive), qid) in loaded:
                continue
            loaded.add((id(drive), qid))
            seq += 1
            heapq.heappush(heap, (now + rng.expovariate(load.rate) * 1000, seq, "io",
                                  (name, drive, qid)))

    for ev in load.hotplug:
        seq += 1
        heapq.heappush(heap, (ev.at_ms, seq, "hotplug", ev))
    schedule_queues(0.0)
    spares: dict[str, NvmeController] = {}
    while heap:
        now, _, kind, what = heapq.heappop(heap)
        if now > load.duration_ms:
            break
        if load.interrupts is not None and out.posted >= load.interrupts:
            break
        out.sim_ms = now
        if kind == "io":
            name, drive, qid = what
            if drive.bus is None:
                loaded.discard((id(drive), qid))
                continue  # pulled: its queues stop with it
            if drive.complete(qid):
                out.posted += 1
                out.per_queue_posted[name] = out.per_queue_posted.get(name, 0) + 1
            else:
                out.refused += 1
            seq += 1
            heapq.heappush(heap, (now + rng.expovariate(load.rate) * 1000, seq, "io", what))
        else:
            _hotplug(system, what, out, spares)
            schedule_queues(now)
        if progress is not None:
            progress(now)
    out.accounting = account(system, out.before)
    if out.accounting.posted != out.posted:
        raise AccountingError(f"the workload posted {out.posted} completions, the drives "
                              f"{out.accounting.posted} (a model bug)")
    return out


def _hotplug(system: System, ev: HotplugEvent, out: Outcome,
             spares: dict[str, NvmeController]) -> None:
    port = system.slot(ev.slot)
    if ev.action == "remove":
        if port.card is None:
            raise WorkloadError(f"at {ev.at_ms} ms: remove {ev.slot}: the slot is empty")
        pulled = port.unpopulate()
        if isinstance(pulled, NvmeController):  # what a later insert puts back
            spares[ev.slot] = pulled
        out.removed += 1
    else:
        if port.card is not None:
            raise WorkloadError(f"at {ev.at_ms} ms: insert {ev.slot}: the slot is occupied")
        old = spares.pop(ev.slot, None)
        card = NvmeController(old.name if old else f"{ev.slot}.nvme",
                              nr_io_queues=old.nr_io_queues if old else 8)
        port.populate(card)
        if card not in system.machine.nvmes:
            system.machine.nvmes.append(card)
        out.inserted += 1
