"""What a run cost: per-vector load, handler calls per interrupt, spurious calls, cross-CPU demux.

All figures are differences over the load of counters the hardware, the IRQ
core and the drivers keep (no scheduling points, nothing changed), checked
against each other by :mod:`vmdsim.sim.accounting`:

- *load* of a VMD vector: the child IRQs assigned to it; *max/min/mean* are
  over the fast vectors (those after the VMD's slow vector, where NVMe
  queues go), *imbalance* = max / mean;
- *delivered interrupts*: interrupts the CPUs took during the load (the
  interrupt controller's count; what boot took is left out), split into
  those on VMD vectors and those straight from devices;
- *handler calls per delivered interrupt*: NVMe handler calls / delivered —
  1.0 when nothing shares, more when queues share a vector and every child on
  it is called (the cost the review worried about);
- *real* calls found completions, *spurious* ones found none;
- *cross-CPU demux*: NVMe handler calls that ran on a CPU outside their
  queue's affinity — the demux ran on a CPU that does not own the queue.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from vmdsim.drivers.nvme import nvme_queue_stats
from vmdsim.drivers.vmd.query import (
    vmd_devices,
    vmd_interrupts_column,
    vmd_vector_calls,
    vmd_vector_child_calls,
    vmd_vector_loads,
)
from vmdsim.sim.accounting import Accounting
from vmdsim.sim.system import System
from vmdsim.sim.workload import Outcome


@dataclass
class VectorRow:
    vmd: str
    index: int
    irq: int
    load: int
    calls: int
    child_calls: int
    cpu: int


@dataclass
class Measurements:
    protocol: str
    policy: str
    posted: int
    lost_interrupts: int
    abandoned: int
    refused: int
    delivered: int
    handler_calls: int
    real: int
    spurious: int
    cross_cpu: int
    max_load: int
    min_load: int
    mean_load: float
    moves: int
    vectors: list[VectorRow] = field(default_factory=list)
    queues: list[dict[str, Any]] = field(default_factory=list)
    accounting: Accounting = field(default_factory=Accounting)

    @property
    def calls_per_interrupt(self) -> float:
        return self.handler_calls / self.delivered if self.delivered else 0.0

    @property
    def spurious_per_interrupt(self) -> float:
        return self.spurious / self.delivered if self.delivered else 0.0

    @property
    def cross_cpu_fraction(self) -> float:
        return self.cross_cpu / self.handler_calls if self.handler_calls else 0.0

    @property
    def imbalance(self) -> float:
        return self.max_load / self.mean_load if self.mean_load else 0.0

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d.update(calls_per_interrupt=round(self.calls_per_interrupt, 4),
                 spurious_per_interrupt=round(self.spurious_per_interrupt, 4),
                 cross_cpu_fraction=round(self.cross_cpu_fraction, 4),
                 imbalance=round(self.imbalance, 4))
        return d


def measure(system: System, out: Outcome) -> Measurements:
    k = system.k
    vectors: list[VectorRow] = []
    fast_loads: list[int] = []
    moves = 0
    for vmd in vmd_devices(k):
        moves += vmd.moves
        loads, calls = vmd_vector_loads(vmd), vmd_vector_calls(vmd)
        child = vmd_vector_child_calls(vmd)
        for i, irqs in enumerate(vmd.irqs):
            runs0, child0 = out.before.vectors.get((vmd.name, i), (0, 0)) if out.before else (0, 0)
            vectors.append(VectorRow(vmd.name, i, irqs.virq, loads[i], calls[i] - runs0,
                                     child[i] - child0, irqs.cpu))
            if i > vmd.first_vec or len(vmd.irqs) == 1 + vmd.first_vec:
                fast_loads.append(loads[i])
    a = out.accounting
    before = out.before.queues if out.before is not None else {}
    queues = nvme_queue_stats(k)
    cross = 0
    for q in queues:  # the live queues' rows, counted over the load
        q["vmd"] = vmd_interrupts_column(k, q["irq"]) or "-"
        b = before.get(q["name"], {"real": 0, "spurious": 0, "completions": 0})
        for key in ("real", "spurious", "completions"):
            q[key] -= b[key]
        q["calls_per_cpu"] = a.calls_per_cpu.get(q["name"], {})
        cpus = set(q["cpus"])
        cross += sum(n for cpu, n in q["calls_per_cpu"].items() if cpus and cpu not in cpus)
    return Measurements(
        protocol=system.protocol, policy=system.policy, posted=a.posted,
        lost_interrupts=a.lost, abandoned=a.abandoned, refused=out.refused,
        delivered=a.delivered, handler_calls=a.handler_calls, real=a.real,
        spurious=a.spurious,
        cross_cpu=cross, max_load=max(fast_loads, default=0), min_load=min(fast_loads, default=0),
        mean_load=sum(fast_loads) / len(fast_loads) if fast_loads else 0.0, moves=moves,
        vectors=vectors, queues=queues, accounting=a)
