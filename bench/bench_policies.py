"""Vector-assignment policies under the same load: demux cost and vector load.

The default machine (4 drives, 4 CPUs, 32 VMD vectors) and a 24-drive server
(3 VMDs of 8 drives each, 8 CPUs), the same seeded Poisson load on every I/O
queue, each policy in a freshly booted system.
"""

from __future__ import annotations

import vmdsim
from run import table
from vmdsim.hw.machine import Machine
from vmdsim.sim.measure import measure
from vmdsim.sim.workload import Load, run_load
from vmdsim.topology import parse

POLICIES = ("modulo", "least-loaded", "affinity", "rebalance")


def server_24() -> str:
    vmds = []
    for v in range(3):
        ports = "".join(f"[[vmd.root_port]]\nslot = {p}\nnvme = {{ queues = 8 }}\n"
                        for p in range(8))
        vmds.append(f"[[vmd]]\ndevice = 0x201D\nslot = \"{0x0E + v:02x}.0\"\n"
                    f"msix_vectors = 32\nmembar1 = \"64M\"\n{ports}")
    return "[machine]\ncpus = 8\n\n" + "\n".join(vmds)


def figures():
    header = ["machine", "policy", "calls/intr", "spurious/intr", "cross-CPU", "max load",
              "min load", "imbalance", "lost"]
    rows = []
    for label, make in (("default", lambda: None), ("24 drives", server_24)):
        for policy in POLICIES:
            text = make()
            machine = Machine.build(parse(text, "server-24")) if text else None
            system = vmdsim.boot(policy=policy, machine=machine)
            m = measure(system, run_load(system, Load(rate=2000, duration_ms=10, seed=1)))
            rows.append([label, policy, f"{m.calls_per_interrupt:.3f}",
                         f"{m.spurious_per_interrupt:.3f}", f"{m.cross_cpu_fraction:.1%}",
                         str(m.max_load), str(m.min_load), f"{m.imbalance:.2f}",
                         str(m.lost_interrupts)])
    return header, rows


table("policies: demux cost and fast-vector load", figures)
