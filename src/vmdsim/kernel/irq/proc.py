"""``/proc/interrupts`` (``kernel/irq/proc.c`` ``show_interrupts``, x86 ``arch_show_interrupts``).

One row per IRQ that has an action or has ever been counted: the IRQ number
(as wide as ``nr_irqs`` needs: 3 digits below 1000, as x86 sizes it),
its count on every CPU, the chip's name, the hwirq in its domain, the flow
handler's name (``-edge``), and the names of its actions. A caller may add
one column of its own with ``extra(irq, desc) -> str | None`` (the VMD driver
uses it to say which VMD vector a child IRQ is multiplexed onto). The last
row, ``SPU``, counts per CPU the vectors that arrived with no IRQ behind them
(Linux logs those as "No irq handler for vector").

Counts are ``kstat_irqs``: IRQs whose flow handler keeps no statistics
(``handle_untracked_irq``, the VMD's children) show zeros, as in Linux.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from vmdsim.kernel.irq.handle import irq_desc_is_chained
from vmdsim.kernel.shared import peek

if TYPE_CHECKING:
    from vmdsim.kernel.core import Kernel

ExtraColumn = Callable[[int, Any], "str | None"]


def _actions(desc: Any) -> list[str]:
    names = []
    action = peek(desc, "action")
    while action is not None:
        names.append(action.name)
        action = peek(action, "next")
    return names


def _prec(nr_irqs: int) -> int:
    """The width of the IRQ column: 3 digits, one more for each power of ten up to nr_irqs."""
    prec, j = 3, 1000
    while prec < 10 and j <= nr_irqs:
        prec, j = prec + 1, j * 10
    return prec


def show_interrupts(k: Kernel, extra: ExtraColumn | None = None) -> str:
    """The table as text; no scheduling points (it reads a snapshot, as a report)."""
    kirq = k.irq
    slots = kirq.sparse_irqs.slots
    ncpus = k.ncpus
    prec = _prec(kirq.nr_irqs)
    lines = [" " * (prec + 1) + "".join(f"{'CPU' + str(c):>11}" for c in range(ncpus))]
    for irq in sorted(slots):
        desc = slots[irq]
        counts = desc.kstat_irqs
        chained = irq_desc_is_chained(desc)
        if (peek(desc, "action") is None or chained) and not any(counts):
            continue
        data = desc.irq_data
        chip = peek(data, "chip")
        row = f"{irq:>{prec}}:" + "".join(f"{n:>11}" for n in counts)
        row += f" {chip.name if chip is not None else 'None':>8}"
        hw = str(data.hwirq) if data.domain is not None else ""
        row += f" {hw:>{prec}}"
        if desc.name:
            row += f"-{desc.name:<8}"
        names = [] if chained else _actions(desc)
        if names:
            row += "  " + ", ".join(names)
        if extra is not None:
            col = extra(irq, desc)
            if col:
                row += "  " + col
        lines.append(row.rstrip())
    spu = "".join(f"{n:>11}" for n in kirq.spurious_vectors)
    lines.append(f"{'SPU':>{prec}}:{spu}   Spurious interrupts (no irq handler for vector)")
    return "\n".join(lines) + "\n"
