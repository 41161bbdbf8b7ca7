"""Running the actions of an interrupt (``kernel/irq/handle.c``) and the spurious-
interrupt detector (``kernel/irq/spurious.c``).

An :class:`irqaction` is what ``request_irq`` installs: ``handler(irq,
dev_id)`` returning ``IRQ_HANDLED`` or ``IRQ_NONE``. Shared IRQs chain
actions through ``next``. ``handle_irq_event`` marks the IRQ in progress
(``IRQD_IRQ_INPROGRESS``, what ``synchronize_irq`` waits on), drops the
descriptor lock, runs every action, and retakes the lock.

``note_interrupt`` keeps Linux's accounting: every 100000 interrupts, an IRQ
with more than 99900 unhandled ones is reported ("nobody cared") and
disabled. Linux forgives an unhandled interrupt that comes more than HZ/10
after the previous one; the model has no clock, so every unhandled interrupt
counts.

Model additions (not in Linux): each action counts its calls and the calls
that returned ``IRQ_HANDLED`` (``calls``, ``handled``), and each descriptor
its unhandled interrupts since allocation (``unhandled_total``), which the
load measurements need for IRQs whose flow handler keeps no statistics
(``handle_untracked_irq``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from vmdsim.kernel.irq.chip import _chained_irqaction, irq_disable
from vmdsim.kernel.irq.flags import (
    IRQ_HANDLED,
    IRQ_NONE,
    IRQ_WAKE_THREAD,
    IRQD_IRQ_INPROGRESS,
    IRQS_PENDING,
    IRQS_POLL_INPROGRESS,
    IRQS_SPURIOUS_DISABLED,
    IrqError,
)
from vmdsim.kernel.irq.irqdesc import irqd_clear, irqd_set
from vmdsim.kernel.locking import irqs_disabled, local_irq_disable, raw_spin_lock, raw_spin_unlock
from vmdsim.kernel.printk import pr_emerg, pr_err
from vmdsim.kernel.shared import KObject, poke, shared

if TYPE_CHECKING:
    from vmdsim.kernel.irq.irqdesc import irq_desc

IrqHandler = Callable[[int, Any], int]

SPURIOUS_WINDOW = 100000
SPURIOUS_LIMIT = 99900


class irqaction(KObject):
    """``struct irqaction``: one handler installed on an IRQ."""

    next = shared()

    def __init__(self, handler: IrqHandler, flags: int, name: str, dev_id: Any) -> None:
        poke(self, "next", None)
        self.handler = handler
        self.flags = flags
        self.name = name
        self.dev_id = dev_id
        self.irq = 0
        self.thread_fn: IrqHandler | None = None
        self.calls = 0  # model only
        self.handled = 0  # model only

    def __repr__(self) -> str:
        return f"<irqaction {self.name} on IRQ {self.irq}>"


def irq_desc_is_chained(desc: irq_desc) -> bool:
    return isinstance(desc.action, _chained_irqaction)


def for_each_action_of_desc(desc: irq_desc) -> Iterator[irqaction | _chained_irqaction]:
    action = desc.action
    while action is not None:
        yield action
        action = action.next


def __handle_irq_event_percpu(desc: irq_desc) -> int:
    """Run every action; the OR of their results."""
    retval = IRQ_NONE
    irq = desc.irq_data.irq
    for action in for_each_action_of_desc(desc):
        res = action.handler(irq, action.dev_id)
        if not irqs_disabled():
            local_irq_disable()
            raise IrqError(f"irq {irq} handler {action.handler!r} enabled interrupts")
        if res not in (IRQ_NONE, IRQ_HANDLED, IRQ_WAKE_THREAD,
                       IRQ_HANDLED | IRQ_WAKE_THREAD):
            raise IrqError(f"irq event {irq}: bogus return value {res!r} from "
                           f"{action.name} (a handler returns IRQ_HANDLED or IRQ_NONE)")
        if res & IRQ_WAKE_THREAD:
            raise IrqError(f"irq {irq} handler {action.name} woke a thread: threaded "
                           "handlers are not modelled")
        action.calls += 1
        if res == IRQ_HANDLED:
            action.handled += 1
        retval |= res
    return retval


def handle_irq_event_percpu(desc: irq_desc) -> int:
    retval = __handle_irq_event_percpu(desc)
    note_interrupt(desc, retval)
    return retval


def handle_irq_event(desc: irq_desc) -> int:
    """Called with ``desc.lock`` held: run the actions with the lock dropped."""
    desc.istate = desc.istate & ~IRQS_PENDING
    irqd_set(desc.irq_data, IRQD_IRQ_INPROGRESS)
    raw_spin_unlock(desc.lock)
    try:
        ret = handle_irq_event_percpu(desc)
    finally:
        raw_spin_lock(desc.lock)
        irqd_clear(desc.irq_data, IRQD_IRQ_INPROGRESS)
    return ret


def note_interrupt(desc: irq_desc, action_ret: int) -> None:
    """Count unhandled interrupts; disable an IRQ that nobody handles."""
    if desc.istate & IRQS_POLL_INPROGRESS:
        return
    if action_ret == IRQ_NONE:
        desc.irqs_unhandled += 1
        desc.unhandled_total += 1
    desc.irq_count += 1
    if desc.irq_count < SPURIOUS_WINDOW:
        return
    desc.irq_count = 0
    if desc.irqs_unhandled > SPURIOUS_LIMIT:
        irq = desc.irq_data.irq
        pr_err(desc.k, f"irq {irq}: nobody cared (try booting with the \"irqpoll\" option)")
        pr_emerg(desc.k, f"Disabling IRQ #{irq}")
        desc.istate = desc.istate | IRQS_SPURIOUS_DISABLED
        desc.depth = desc.depth + 1
        irq_disable(desc)
    desc.irqs_unhandled = 0
