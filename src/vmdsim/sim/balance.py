"""The same load and hot-plug churn under several vector-assignment policies, side by side."""

from __future__ import annotations

from pathlib import Path

from vmdsim.sim.measure import Measurements, measure
from vmdsim.sim.system import System, boot
from vmdsim.sim.workload import Load, run_load


def compare(topology: str | Path | None, policies: list[str], load: Load, *,
            first: System | None = None) -> list[Measurements]:
    """One fresh system per policy, the same seeded load through each; ``first``, if
    given, is the first policy's system, already booted (and looked at) by the caller."""
    rows = []
    for i, name in enumerate(policies):
        system = first if i == 0 and first is not None else boot(topology, policy=name)
        rows.append(measure(system, run_load(system, load)))
    return rows


def comparison_table(rows: list[Measurements]) -> str:
    header = ["policy", "max", "min", "mean", "imbalance", "calls/intr", "spurious/intr",
              "cross-CPU", "moved", "lost"]
    body = [[m.policy, str(m.max_load), str(m.min_load), f"{m.mean_load:.2f}",
             f"{m.imbalance:.2f}", f"{m.calls_per_interrupt:.3f}",
             f"{m.spurious_per_interrupt:.3f}", f"{m.cross_cpu_fraction:.1%}", str(m.moves),
             str(m.lost_interrupts)] for m in rows]
    widths = [max(len(r[i]) for r in [header, *body]) for i in range(len(header))]
    return "\n".join("  ".join(c.rjust(w) if i else c.ljust(w)
                               for i, (c, w) in enumerate(zip(r, widths, strict=True)))
                     for r in [header, *body])


def plot_comparison(rows: list[Measurements], path: str) -> None:
    """A PNG: per-policy vector loads (left) and handler calls per interrupt (right)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    for m in rows:
        loads = [v.load for v in m.vectors]
        left.plot(range(len(loads)), loads, marker="o", label=m.policy)
    left.set_xlabel("VMD vector")
    left.set_ylabel("child IRQs assigned")
    left.set_title("vector load")
    left.legend()
    names = [m.policy for m in rows]
    right.bar(names, [m.calls_per_interrupt for m in rows], label="handler calls / interrupt")
    right.bar(names, [m.spurious_per_interrupt for m in rows], label="spurious / interrupt")
    right.set_title("demux cost")
    right.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
