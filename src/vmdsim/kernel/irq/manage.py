"""Driver-facing IRQ management (``kernel/irq/manage.c``, ``devres.c``), on ``k.irq``.

``request_irq`` allocates an ``irqaction``, activates the IRQ in its domain
(first action only), starts it up (unmask) and only then publishes the
action, all under the descriptor lock — an interrupt that arrives between
the unmask and the publication finds no action and is flagged pending, as in
Linux. ``free_irq`` unpublishes the action and shuts the IRQ down (masks it;
for the VMD's children, the chip's ``irq_disable`` takes it off the vector's
list) under the lock, waits in ``synchronize_irq`` until no CPU is running
the handler (a spinning wait: ``block_until(..., sleep=False)``), then
deactivates it in its domain (for MSI: writes a zero message) and frees the
action.

``synchronize_irq`` waits only for handlers already marked in progress: an
interrupt that a CPU has taken but whose flow handler has not yet set
``IRQD_IRQ_INPROGRESS`` is not waited for — the window the seed's race, and
descriptor freeing through RCU, are about.

Not modelled: threaded handlers (``request_threaded_irq`` with a thread
function is refused), NMIs, per-CPU IRQs, wakeup and PM state, the
``chip_bus_lock`` of slow-bus chips, affinity notifiers.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from vmdsim.kernel.base.devres import devres_add, devres_alloc, devres_free
from vmdsim.kernel.errno import EBUSY, EINVAL, ENOMEM, ENOSYS
from vmdsim.kernel.irq.chip import (
    irq_activate,
    irq_chip_is_none,
    irq_disable,
    irq_do_set_affinity,
    irq_shutdown,
    irq_startup,
    irqd_clear,
    irqd_has_set,
    irqd_is_activated,
    irqd_set,
)
from vmdsim.kernel.irq.flags import (
    IRQ_DISABLE_UNLAZY,
    IRQ_NOAUTOEN,
    IRQ_NOREQUEST,
    IRQD_AFFINITY_ON_ACTIVATE,
    IRQD_AFFINITY_SET,
    IRQD_IRQ_INPROGRESS,
    IRQF_NO_AUTOEN,
    IRQF_ONESHOT,
    IRQF_SHARED,
    IRQF_TRIGGER_MASK,
    IRQS_AUTODETECT,
    IRQS_ONESHOT,
    IRQS_SPURIOUS_DISABLED,
    IRQS_SUSPENDED,
    IRQS_WAITING,
    IrqError,
)
from vmdsim.kernel.irq.handle import IrqHandler, irqaction
from vmdsim.kernel.irq.irqdesc import DescTableMixin
from vmdsim.kernel.irq.irqdomain import irq_domain_deactivate_irq
from vmdsim.kernel.locking import (
    mutex_lock,
    mutex_unlock,
    raw_spin_lock_irqsave,
    raw_spin_unlock_irqrestore,
)
from vmdsim.kernel.printk import pr_err
from vmdsim.kernel.sched import current, in_interrupt
from vmdsim.kernel.shared import peek

if TYPE_CHECKING:
    from vmdsim.kernel.core import Kernel
    from vmdsim.kernel.irq.irqdesc import irq_desc


def _not_inprogress(common: Any) -> bool:
    # Read without a scheduling point: the scheduler evaluates it between steps.
    return not peek(common, "state_use_accessors") & IRQD_IRQ_INPROGRESS


def _synchronize_hardirq(desc: irq_desc) -> None:
    """Spin until no CPU is inside the IRQ's handler, then double-check under the lock."""
    d = desc.irq_data
    common = d.common
    while True:
        if irqd_has_set(d, IRQD_IRQ_INPROGRESS):
            current().cpu.sched.block_until(
                lambda: _not_inprogress(common),
                f"IRQ {d.irq}'s handler to finish (synchronize_irq)", sleep=False)
        flags = raw_spin_lock_irqsave(desc.lock)
        inprogress = irqd_has_set(d, IRQD_IRQ_INPROGRESS)
        raw_spin_unlock_irqrestore(desc.lock, flags)
        if not inprogress:
            return


def _enable(desc: irq_desc) -> None:
    """``__enable_irq``: undo one disable; at depth 1, start the IRQ again."""
    depth = desc.depth
    if depth == 0 or (depth == 1 and desc.istate & IRQS_SUSPENDED):
        raise IrqError(f"Unbalanced enable for IRQ {desc.irq_data.irq}")
    if depth == 1:
        irq_startup(desc, True, True)
    else:
        desc.depth = depth - 1


def _disable(desc: irq_desc) -> None:
    depth = desc.depth
    desc.depth = depth + 1
    if depth == 0:
        irq_disable(desc)


class irq_devres:
    """What ``devm_request_irq`` remembers (Linux: ``struct irq_devres`` in the devres node)."""

    def __init__(self, k: Kernel, irq: int, dev_id: Any) -> None:
        self.k = k
        self.irq = irq
        self.dev_id = dev_id


def devm_irq_release(dr: irq_devres) -> None:
    dr.k.irq.free_irq(dr.irq, dr.dev_id)


class ManageMixin(DescTableMixin):
    """``k.irq.request_irq`` and friends."""

    k: Kernel


    # -- request ------------------------------------------------------------------------
    def request_irq(self, irq: int, handler: IrqHandler, flags: int, name: str,
                    dev_id: Any) -> int:
        """Install ``handler(irq, dev_id)`` on ``irq`` and start the IRQ; 0 or -errno."""
        return self.request_threaded_irq(irq, handler, None, flags, name, dev_id)

    def request_threaded_irq(self, irq: int, handler: IrqHandler | None, thread_fn: Any,
                             flags: int, name: str, dev_id: Any) -> int:
        if thread_fn is not None:
            raise IrqError(f"request_threaded_irq({irq}, {name}): threaded handlers are "
                           "not modelled")
        if flags & IRQF_SHARED and dev_id is None:
            return -EINVAL
        if handler is None:
            return -EINVAL
        desc = self.irq_to_desc(irq)
        if desc is None or desc.status_use_accessors & IRQ_NOREQUEST:
            return -EINVAL
        action = self.k.mem.kzalloc(irqaction, handler, flags, name, dev_id, owner="irq")
        if action is None:
            return -ENOMEM
        ret = self._setup_irq(irq, desc, action)
        if ret:
            self.k.mem.kfree(action)
        return ret

    def _setup_irq(self, irq: int, desc: irq_desc, new: irqaction) -> int:
        if irq_chip_is_none(desc.irq_data.chip):
            return -ENOSYS
        new.irq = irq
        mutex_lock(desc.request_mutex)
        flags = raw_spin_lock_irqsave(desc.lock)
        try:
            old = desc.action
            shared = False
            last = None
            if old is not None:
                if not (old.flags & new.flags & IRQF_SHARED) or \
                        (old.flags ^ new.flags) & (IRQF_TRIGGER_MASK | IRQF_ONESHOT):
                    pr_err(self.k, f"Flags mismatch irq {irq}. {new.flags:08x} ({new.name}) "
                                f"vs. {old.flags:08x} ({old.name})")
                    return -EBUSY
                while old is not None:
                    last, old = old, old.next
                shared = True
            if not shared:
                ret = irq_activate(desc)
                if ret:
                    return ret
                desc.istate = desc.istate & ~(IRQS_AUTODETECT | IRQS_SPURIOUS_DISABLED
                                              | IRQS_ONESHOT | IRQS_WAITING)
                irqd_clear(desc.irq_data, IRQD_IRQ_INPROGRESS)
                if not new.flags & IRQF_NO_AUTOEN and \
                        not desc.status_use_accessors & IRQ_NOAUTOEN:
                    irq_startup(desc, True, False)
                else:
                    desc.depth = 1
            if last is None:
                desc.action = new  # publish
            else:
                last.next = new
            desc.irq_count = 0
            desc.irqs_unhandled = 0
            if shared and desc.istate & IRQS_SPURIOUS_DISABLED:
                desc.istate = desc.istate & ~IRQS_SPURIOUS_DISABLED
                _enable(desc)
            return 0
        finally:
            raw_spin_unlock_irqrestore(desc.lock, flags)
            mutex_unlock(desc.request_mutex)

    # -- free ---------------------------------------------------------------------------
    def free_irq(self, irq: int, dev_id: Any) -> str | None:
        """Remove the action of ``dev_id``; returns its name. Waits for running handlers."""
        if in_interrupt():
            raise IrqError(f"free_irq({irq}) called from interrupt context")
        desc = self.irq_to_desc(irq)
        if desc is None:
            return None
        mutex_lock(desc.request_mutex)
        flags = raw_spin_lock_irqsave(desc.lock)
        prev, action = None, desc.action
        while action is not None and action.dev_id is not dev_id:
            prev, action = action, action.next
        if action is None:
            raw_spin_unlock_irqrestore(desc.lock, flags)
            mutex_unlock(desc.request_mutex)
            raise IrqError(f"Trying to free already-free IRQ {irq}")
        if prev is None:
            desc.action = action.next  # unpublish
        else:
            prev.next = action.next
        if desc.action is None:
            desc.status_use_accessors &= ~IRQ_DISABLE_UNLAZY
            irq_shutdown(desc)
        raw_spin_unlock_irqrestore(desc.lock, flags)
        _synchronize_hardirq(desc)
        if desc.action is None:
            flags = raw_spin_lock_irqsave(desc.lock)
            irq_domain_deactivate_irq(desc.irq_data)
            raw_spin_unlock_irqrestore(desc.lock, flags)
        mutex_unlock(desc.request_mutex)
        name = action.name
        self.k.mem.kfree(action)
        return name

    def irq_has_action(self, irq: int) -> bool:
        desc = self.irq_to_desc(irq)
        return desc is not None and desc.action is not None

    # -- synchronize / disable / enable ---------------------------------------------------
    def synchronize_hardirq(self, irq: int) -> bool:
        """Wait until no CPU runs ``irq``'s handler; True (no threads to report)."""
        desc = self.irq_to_desc(irq)
        if desc is not None:
            _synchronize_hardirq(desc)
        return True

    def synchronize_irq(self, irq: int) -> None:
        """Wait until no CPU runs ``irq``'s handler (there are no irq threads to wait for)."""
        self.synchronize_hardirq(irq)

    def disable_irq_nosync(self, irq: int) -> int:
        desc = self.irq_to_desc(irq)
        if desc is None:
            return -EINVAL
        flags = raw_spin_lock_irqsave(desc.lock)
        _disable(desc)
        raw_spin_unlock_irqrestore(desc.lock, flags)
        return 0

    def disable_irq(self, irq: int) -> None:
        """Disable (nestable) and wait for running handlers to finish."""
        if not self.disable_irq_nosync(irq):
            self.synchronize_irq(irq)

    def enable_irq(self, irq: int) -> None:
        """Undo one ``disable_irq``; replays an interrupt that came while disabled."""
        desc = self.irq_to_desc(irq)
        if desc is None:
            return
        flags = raw_spin_lock_irqsave(desc.lock)
        try:
            _enable(desc)
        finally:
            raw_spin_unlock_irqrestore(desc.lock, flags)

    # -- affinity ---------------------------------------------------------------------------
    def irq_set_affinity(self, irq: int, mask: frozenset[int] | set[int]) -> int:
        """Target ``irq`` at the CPUs in ``mask``; 0 or -errno (-EINVAL: chip cannot)."""
        desc = self.irq_to_desc(irq)
        if desc is None:
            return -EINVAL
        mask = frozenset(mask)
        flags = raw_spin_lock_irqsave(desc.lock)
        try:
            d = desc.irq_data
            if d.chip is None or d.chip.irq_set_affinity is None:
                return -EINVAL
            if irqd_has_set(d, IRQD_AFFINITY_ON_ACTIVATE) and not irqd_is_activated(d):
                d.common.affinity = mask
                irqd_set(d, IRQD_AFFINITY_SET)
                return 0
            ret = irq_do_set_affinity(d, mask, False)
            irqd_set(d, IRQD_AFFINITY_SET)
            return ret
        finally:
            raw_spin_unlock_irqrestore(desc.lock, flags)

    # -- managed (devres) -------------------------------------------------------------------
    def devm_request_irq(self, dev: Any, irq: int, handler: IrqHandler, flags: int,
                         name: str, dev_id: Any) -> int:
        """``request_irq`` undone by ``free_irq`` when ``dev`` (a ``struct device``) unbinds."""
        dr = devres_alloc(dev, devm_irq_release, irq_devres(self.k, irq, dev_id),
                          "devm_request_irq")
        if dr is None:
            return -ENOMEM
        ret = self.request_irq(irq, handler, flags, name, dev_id)
        if ret:
            devres_free(dr)
            return ret
        devres_add(dev, dr)
        return 0

    def devm_free_irq(self, dev: Any, irq: int, dev_id: Any) -> None:
        """Free an IRQ ``devm_request_irq`` installed, and forget its devres node."""
        head = dev.devres_head
        for i in range(len(head) - 1, -1, -1):
            dr = head[i]
            data = dr.data
            if dr.release is devm_irq_release and data.irq == irq and data.dev_id is dev_id:
                del head[i]
                devres_free(dr)
                self.free_irq(irq, dev_id)
                return
        raise IrqError(f"devm_free_irq({irq}): no managed IRQ with that dev_id on {dev!r}")
