"""What a run cost: per-vector load, handler calls per interrupt, spurious calls, cross-CPU demux.

All figures are read after a run from the drivers' own counters and the IRQ
core's statistics (no scheduling points, nothing changed):

- *load* of a VMD vector: the child IRQs assigned to it; *max/min/mean* are
  over the fast vectors (those after the VMD's slow vector, where NVMe
  queues go), *imbalance* = max / mean;
- *delivered interrupts*: runs of a VMD vector's handler during the load
  (runs at boot, such as the root ports' hot-plug events on the slow vector,
  come before any completion and are left out), plus, for NVMe IRQs that are
  not VMD children (bypass, or no VMD), the interrupts the IRQ core counted;
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
    vmd_irq_vector,
    vmd_vector_calls,
    vmd_vector_child_calls,
    vmd_vector_loads,
)
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
            vectors.append(VectorRow(vmd.name, i, irqs.virq, loads[i], calls[i], child[i],
                                     irqs.cpu))
            if i > vmd.first_vec or len(vmd.irqs) == 1 + vmd.first_vec:
                fast_loads.append(loads[i])
    queues = nvme_queue_stats(k)
    delivered = sum(v.calls for v in vectors) - out.vector_runs_before
    real = spurious = cross = 0
    for q in queues:
        q["vmd"] = vmd_interrupts_column(k, q["irq"]) or "-"
        real += q["real"]
        spurious += q["spurious"]
        cpus = set(q["cpus"])
        cross += sum(n for cpu, n in q["calls_per_cpu"].items() if cpus and cpu not in cpus)
        if vmd_irq_vector(k, q["irq"]) is None:
            desc = k.irq.irq_to_desc(q["irq"])
            delivered += sum(desc.kstat_irqs) if desc is not None else 0
    return Measurements(
        protocol=system.protocol, policy=system.policy, posted=out.posted,
        lost_interrupts=out.lost, abandoned=out.abandoned, refused=out.refused,
        delivered=delivered, handler_calls=real + spurious, real=real, spurious=spurious,
        cross_cpu=cross, max_load=max(fast_loads, default=0), min_load=min(fast_loads, default=0),
        mean_load=sum(fast_loads) / len(fast_loads) if fast_loads else 0.0, moves=moves,
        vectors=vectors, queues=queues)
