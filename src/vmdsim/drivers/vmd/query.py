"""What the CLI, the measurements and the explorer ask of the driver, answered from its own
state without scheduling points (call them outside an explored run, or at its end).

- ``vmd_devices(k)``: the bound VMDs, in probe order;
- ``vmd_irq_vector(k, virq)``: which VMD and vector a child IRQ is multiplexed onto
  (None for an IRQ that is not a VMD child) — the extra ``/proc/interrupts``
  column, as text through ``vmd_interrupts_column`` (the whole table with it:
  ``vmd_show_interrupts(k)``);
- ``vmd_vector_loads(vmd)``: child IRQs assigned to each vector (``count``);
- ``vmd_vector_calls(vmd)``: how often each vector's handler ran, and
  ``vmd_vector_child_calls(vmd)``: the child flow handlers those runs started
  (their ratio is what sharing a vector costs);
- ``vmd_vector_children(vmd)``: the child IRQs on each vector, in list order
  (enabled ones) followed by assigned-but-not-enabled ones.
"""

from __future__ import annotations

from functools import partial
from typing import TYPE_CHECKING, Any

from vmdsim.drivers.vmd.dev import vmd_dev
from vmdsim.drivers.vmd.module import vmd_module_of
from vmdsim.kernel.rculist import list_entries
from vmdsim.kernel.shared import peek

if TYPE_CHECKING:
    from vmdsim.kernel.core import Kernel


def vmd_devices(k: Kernel) -> list[vmd_dev]:
    module = vmd_module_of(k)
    return list(module.devices) if module is not None else []


def vmd_irq_vector(k: Kernel, virq: int) -> tuple[vmd_dev, int] | None:
    """(the VMD, the vector index) child IRQ ``virq`` is on, or None."""
    for vmd in vmd_devices(k):
        for child in vmd.children:
            if peek(child, "virq") == virq:
                return vmd, peek(child, "irq").index
    return None


def vmd_interrupts_column(k: Kernel, virq: int) -> str:
    """``vmd0:3`` for a child of vmd0 on vector 3; empty for any other IRQ."""
    found = vmd_irq_vector(k, virq)
    if found is None:
        return ""
    vmd, index = found
    return f"{vmd.name}:{index}"


def vmd_vector_loads(vmd: vmd_dev) -> list[int]:
    return [peek(irqs, "count") for irqs in vmd.irqs]


def vmd_vector_calls(vmd: vmd_dev) -> list[int]:
    return [irqs.calls for irqs in vmd.irqs]


def vmd_vector_child_calls(vmd: vmd_dev) -> list[int]:
    return [irqs.child_calls for irqs in vmd.irqs]


def vmd_vector_children(vmd: vmd_dev) -> list[list[int]]:
    out = []
    for irqs in vmd.irqs:
        listed = [peek(c, "virq") for c in list_entries(irqs.irq_list)]
        idle = [peek(c, "virq") for c in vmd.children
                if peek(c, "irq") is irqs and not peek(c, "enabled")]
        out.append(listed + idle)
    return out


def vmd_show_interrupts(k: Kernel) -> str:
    """``/proc/interrupts`` with the VMD column: ``vmd0:3`` after each child IRQ."""
    return k.irq.show_interrupts(partial(_column, k))


def _column(k: Kernel, irq: int, desc: Any = None) -> str:
    return vmd_interrupts_column(k, irq)
