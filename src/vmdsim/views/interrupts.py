"""``/proc/interrupts`` with a VMD column, and the tables a run ends with.

The ``/proc/interrupts`` table is the IRQ core's (per-CPU counts, chip,
hwirq, flow, actions) plus one column naming, for each VMD child IRQ, the
VMD and vector it is multiplexed onto (``vmd0:3``). As in Linux, child IRQs
use the untracked flow handler and count nothing per CPU; the NVMe queue
table next to it has what each queue's handler saw.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from vmdsim.drivers.vmd.query import vmd_interrupts_column
from vmdsim.kernel.irq.proc import show_interrupts
from vmdsim.sim.measure import Measurements

if TYPE_CHECKING:
    from vmdsim.kernel.core import Kernel


def proc_interrupts(k: Kernel) -> str:
    return show_interrupts(k, extra=lambda irq, desc: vmd_interrupts_column(k, irq) or None)


def _table(header: list[str], rows: list[list[Any]]) -> str:
    cells = [header] + [[str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    lines = ["  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in
                       enumerate(zip(r, widths, strict=True))) for r in cells]
    return "\n".join(line.rstrip() for line in lines)


def vector_table(m: Measurements) -> str:
    """Per VMD vector: its IRQ, child IRQs assigned, handler runs, child handlers called."""
    rows = [[f"{v.vmd}:{v.index}", v.irq, v.load, v.calls, v.child_calls,
             "-" if v.cpu < 0 else v.cpu] for v in m.vectors if v.load or v.calls]
    return _table(["vector", "irq", "children", "handler runs", "child calls", "cpu"], rows)


def queue_table(m: Measurements) -> str:
    """Per NVMe queue: IRQ, VMD vector, CPUs, real and spurious handler calls."""
    rows = [[q["name"], q["irq"], q["vmd"], ",".join(map(str, q["cpus"])), q["real"],
             q["spurious"]] for q in m.queues]
    return _table(["queue", "irq", "vmd vector", "cpus", "real", "spurious"], rows)


def _messages(what: str, d: dict[str, int], note: str = "") -> str:
    return (f"{what} {d['fired']} = sent {d['sent']} + merged {d['merged']} + dropped "
            f"{d['dropped']} + discarded {d['discarded']} + pending {d['pending']}{note}")


def summary(m: Measurements) -> str:
    """The run's figures, each line an identity a reader can add up (see the README)."""
    a = m.accounting
    lines = [
        f"protocol {m.protocol}, policy {m.policy}",
        f"completions posted {a.posted}"
        + (f" + pending at start {a.pending_at_start}" if a.pending_at_start else "")
        + f" = consumed {a.consumed} + lost {a.lost} + abandoned {a.abandoned}"
        f" + discarded {a.discarded}",
        f"NVMe messages fired {a.nvme_messages['fired']} = I/O completions with interrupts "
        f"on {a.signalled} + admin completions {a.admin}",
        _messages("NVMe messages", a.nvme_messages),
        _messages("port-service messages", a.port_messages),
        _messages("VMD vector messages", a.vmd_messages,
                  f" (for {a.remapped} child messages remapped)"),
        f"interrupts delivered {a.delivered} = on VMD vectors {a.via_vmd} + straight from "
        f"devices {a.direct}",
        f"NVMe handler calls {a.handler_calls} = real {a.real} + spurious {a.spurious}: "
        f"{m.calls_per_interrupt:.3f} calls and {m.spurious_per_interrupt:.3f} spurious per "
        "delivered interrupt",
        f"fast-vector load max {m.max_load} min {m.min_load} mean {m.mean_load:.2f} "
        f"(imbalance {m.imbalance:.2f}), child IRQs moved {m.moves}",
        f"cross-CPU demux {m.cross_cpu_fraction:.1%} of handler calls",
        f"lost interrupts {m.lost_interrupts}",
    ]
    lines += [f"  lost on {x.queue}: {x.count} ({x.why})" for x in a.lost_by_queue]
    return "\n".join(lines)
