"""Flow handlers: what ``desc->handle_irq`` runs (``kernel/irq/chip.c``).

A flow handler takes the descriptor lock, decides whether the interrupt may
run (not already in progress elsewhere, not disabled, has an action), and
runs the actions through ``handle_irq_event``:

``handle_edge_irq``
    x86 MSI. Acks at the chip, counts, and loops while another edge arrived
    during the handler (``IRQS_PENDING``). A disabled or action-less IRQ is
    masked and flagged pending, so ``enable_irq`` can replay it.
``handle_simple_irq``
    Software-demultiplexed IRQs: no chip calls; counts.
``handle_untracked_irq``
    What the VMD's child IRQs use: like simple, but "not subjected to stats
    tracking, randomness, or spurious interrupt detection" — no per-CPU counts
    and no ``note_interrupt``.
``handle_bad_irq``
    The handler of a descriptor nobody set up: counts and logs. Every new
    descriptor starts with it, so it is defined with them (in ``irqdesc``).

``chained_irq_enter``/``chained_irq_exit`` bracket a chained (demultiplexing)
handler: without an ``irq_eoi`` the parent is masked and acked on entry and
unmasked on exit.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from vmdsim.kernel.irq.chip import (
    irqd_clear,
    irqd_has_set,
    irqd_irq_disabled,
    irqd_irq_masked,
    irqd_set,
    mask_ack_irq,
    mask_irq,
    unmask_irq,
)
from vmdsim.kernel.irq.flags import (
    IRQD_IRQ_INPROGRESS,
    IRQD_WAKEUP_ARMED,
    IRQS_PENDING,
    IRQS_REPLAY,
    IRQS_WAITING,
)
from vmdsim.kernel.irq.handle import __handle_irq_event_percpu, handle_irq_event
from vmdsim.kernel.irq.irqdesc import (
    handle_bad_irq,  # noqa: F401 - a flow handler too, exported from here (it is irqdesc's)
    kstat_incr_irqs_this_cpu,
)
from vmdsim.kernel.locking import raw_spin_lock, raw_spin_unlock
from vmdsim.kernel.mem import NullPointerDereference

if TYPE_CHECKING:
    from vmdsim.kernel.irq.chip import irq_chip
    from vmdsim.kernel.irq.irqdesc import irq_desc


def irq_may_run(desc: irq_desc) -> bool:
    """False while the IRQ is being handled on another CPU (no polling, no PM wakeups)."""
    return not irqd_has_set(desc.irq_data, IRQD_IRQ_INPROGRESS | IRQD_WAKEUP_ARMED)


def _no_action_or_disabled(desc: irq_desc) -> bool:
    return desc.action is None or irqd_irq_disabled(desc.irq_data)


def handle_simple_irq(desc: irq_desc) -> None:
    raw_spin_lock(desc.lock)
    try:
        if not irq_may_run(desc):
            return
        desc.istate = desc.istate & ~(IRQS_REPLAY | IRQS_WAITING)
        if _no_action_or_disabled(desc):
            desc.istate = desc.istate | IRQS_PENDING
            return
        kstat_incr_irqs_this_cpu(desc)
        handle_irq_event(desc)
    finally:
        raw_spin_unlock(desc.lock)


def handle_untracked_irq(desc: irq_desc) -> None:
    raw_spin_lock(desc.lock)
    if not irq_may_run(desc):
        raw_spin_unlock(desc.lock)
        return
    desc.istate = desc.istate & ~(IRQS_REPLAY | IRQS_WAITING)
    if _no_action_or_disabled(desc):
        desc.istate = desc.istate | IRQS_PENDING
        raw_spin_unlock(desc.lock)
        return
    desc.istate = desc.istate & ~IRQS_PENDING
    irqd_set(desc.irq_data, IRQD_IRQ_INPROGRESS)
    raw_spin_unlock(desc.lock)
    try:
        __handle_irq_event_percpu(desc)
    finally:
        raw_spin_lock(desc.lock)
        irqd_clear(desc.irq_data, IRQD_IRQ_INPROGRESS)
        raw_spin_unlock(desc.lock)


def handle_edge_irq(desc: irq_desc) -> None:
    raw_spin_lock(desc.lock)
    try:
        desc.istate = desc.istate & ~(IRQS_REPLAY | IRQS_WAITING)
        if not irq_may_run(desc) or _no_action_or_disabled(desc):
            desc.istate = desc.istate | IRQS_PENDING
            mask_ack_irq(desc)
            return
        kstat_incr_irqs_this_cpu(desc)
        d = desc.irq_data
        d.chip.irq_ack(d)
        while True:
            if desc.action is None:
                mask_irq(desc)
                return
            # Another edge came in while we ran and was masked: unmask unless disabled.
            if desc.istate & IRQS_PENDING and not irqd_irq_disabled(d) and irqd_irq_masked(d):
                unmask_irq(desc)
            handle_irq_event(desc)
            if not desc.istate & IRQS_PENDING or irqd_irq_disabled(d):
                return
    finally:
        raw_spin_unlock(desc.lock)


def chained_irq_enter(chip: irq_chip, desc: irq_desc) -> None:
    d = desc.irq_data
    if chip.irq_eoi is not None:
        return
    if chip.irq_mask_ack is not None:
        chip.irq_mask_ack(d)
    else:
        if chip.irq_mask is None:  # called unchecked, as in Linux
            raise NullPointerDereference(f"{chip.name} chip's irq_mask", "chained_irq_enter")
        chip.irq_mask(d)
        if chip.irq_ack is not None:
            chip.irq_ack(d)


def chained_irq_exit(chip: irq_chip, desc: irq_desc) -> None:
    d = desc.irq_data
    if chip.irq_eoi is not None:
        chip.irq_eoi(d)
    else:
        if chip.irq_unmask is None:  # called unchecked, as in Linux
            raise NullPointerDereference(f"{chip.name} chip's irq_unmask", "chained_irq_exit")
        chip.irq_unmask(d)
