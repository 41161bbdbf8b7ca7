"""The VMD vector handler (``vmd_irq``) and the teardown protocols that keep it safe — or not.

One handler is requested on each of the VMD's own vectors, with that
vector's ``vmd_irq_list`` as its ``dev_id``. It walks the list and calls
``generic_handle_irq`` for every child IRQ on it: the VMD cannot tell which
child sent the message, so every child sharing the vector runs its flow
handler (``handle_untracked_irq``), and each child's action finds out for
itself whether its device had work.

What protects the walk against a child IRQ being torn down at the same time
is the *protocol*, chosen per VMD instance by name:

``rfc-v3`` (the RFC of October 2015)
    the walk is an RCU read-side section; ``msi_free`` frees the mapping at
    once (``kfree``). A CPU still walking can follow a freed ``vmd_irq``:
    use-after-free on the mapping.
``kfree-rcu`` (the first fix the review asked for)
    same read side; ``msi_free`` frees the mapping after a grace period
    (``kfree_rcu``). The mapping is safe, but the IRQ core frees the child's
    descriptor at once (``k.irq.desc_free = "immediate"``, Linux before
    4.14): a CPU that read the child's IRQ number just before the removal
    calls ``generic_handle_irq`` on a freed descriptor — the seed's KABOOM.
    With descriptors freed through RCU (``"rcu"``), it is safe.
``synchronize-rcu`` (from v4.9, ee6ee49fd09f, until the SRCU change 3906b91844d6)
    the RCU walk; ``msi_free`` runs ``synchronize_rcu`` before uncounting and
    freeing the mapping, so a walker that read the child is done before
    ``msi_free`` returns and the IRQ core frees the descriptor — safe even
    with descriptors freed at once, at the cost of a global grace period per
    child freed (what the SRCU change avoided).
``spinlock`` (what the review's answer ruled out)
    the walk holds the driver's list lock, which ``vmd_irq_disable`` also
    takes; ``msi_free`` frees at once, since no walker can hold an entry the
    lock let go. Keith Busch's reply explains why it cannot work: the walk's
    ``generic_handle_irq`` takes the child's ``desc->lock`` under the list
    lock, while ``free_irq`` holds that ``desc->lock`` when ``irq_shutdown``
    reaches ``vmd_irq_disable`` and its list lock: the opposite order, a
    deadlock between a CPU demultiplexing and one freeing a child.
``srcu`` (Linux since 3906b91844d6, 2018: one ``srcu_struct`` per vector; the
default; v4.5 shipped ``kfree-rcu``'s walk and free)
    the walk is an SRCU read-side section of the vector's ``srcu_struct``;
    ``msi_free`` runs ``synchronize_srcu`` on it before uncounting and freeing
    the mapping, and the descriptor is freed after ``msi_free`` returns, so
    no walker can still hold either.

A protocol also says how a live move (``rebalance.py``) waits for the
readers of the vector a child leaves: ``synchronize_rcu`` for the RCU read
sides, ``synchronize_srcu`` of that vector for ``srcu``.

Model additions: each vector counts its handler runs (``calls``) and the
child flow handlers they started (``child_calls``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from vmdsim.drivers.vmd.dev import vmd_dev, vmd_irq_list
from vmdsim.kernel.irq.flags import IRQ_HANDLED
from vmdsim.kernel.locking import raw_spin_lock_irqsave, raw_spin_unlock_irqrestore
from vmdsim.kernel.rcu import rcu_read_lock, rcu_read_unlock, synchronize_rcu
from vmdsim.kernel.rculist import list_for_each_entry_rcu
from vmdsim.kernel.srcu import srcu_read_lock, srcu_read_unlock, synchronize_srcu

if TYPE_CHECKING:  # the struct shares its C name with the handler below
    from vmdsim.drivers.vmd.dev import vmd_irq as vmd_irq_t


# -- the handlers ---------------------------------------------------------------------------
def vmd_irq(irq: int, irqs: vmd_irq_list) -> int:
    """Linux today: walk the vector's list inside its SRCU read-side section."""
    irqs.calls += 1
    kirq = irqs.vmd.dev.k.irq
    idx = srcu_read_lock(irqs.srcu)
    for vmdirq in list_for_each_entry_rcu(irqs.irq_list):
        irqs.child_calls += 1
        kirq.generic_handle_irq(vmdirq.virq)
    srcu_read_unlock(irqs.srcu, idx)
    return IRQ_HANDLED


def vmd_irq_rcu(irq: int, irqs: vmd_irq_list) -> int:
    """The RFC's walk (a chained flow handler there; an action here): ``rcu_read_lock``."""
    irqs.calls += 1
    kirq = irqs.vmd.dev.k.irq
    rcu_read_lock()
    for vmdirq in list_for_each_entry_rcu(irqs.irq_list):
        irqs.child_calls += 1
        kirq.generic_handle_irq(vmdirq.virq)
    rcu_read_unlock()
    return IRQ_HANDLED


def vmd_irq_locked(irq: int, irqs: vmd_irq_list) -> int:
    """The walk under the list lock (the ``spinlock`` protocol: the review's ruled-out one)."""
    irqs.calls += 1
    kirq = irqs.vmd.dev.k.irq
    lock = irqs.vmd.module.list_lock
    flags = raw_spin_lock_irqsave(lock)
    for vmdirq in list_for_each_entry_rcu(irqs.irq_list):
        irqs.child_calls += 1
        kirq.generic_handle_irq(vmdirq.virq)  # takes the child's desc->lock
    raw_spin_unlock_irqrestore(lock, flags)
    return IRQ_HANDLED


# -- the protocols ----------------------------------------------------------------------------
def _uncount(vmd: vmd_dev, vmdirq: vmd_irq_t) -> None:
    """Drop the child from its vector's count (and from the driver's registry)."""
    lock = vmd.module.list_lock
    flags = raw_spin_lock_irqsave(lock)
    irqs = vmdirq.irq
    irqs.count = irqs.count - 1
    if vmdirq in vmd.children:
        vmd.children.remove(vmdirq)
    raw_spin_unlock_irqrestore(lock, flags)


class TeardownProtocol:
    """A teardown protocol: the vector handler and what ``msi_free`` does. Model-only
    (Linux has one protocol, ``srcu``; the others are the review's versions), so the
    classes carry names no kernel symbol has.

    Static (never copied with a kernel), like the ops tables it stands for."""

    name = ""
    summary = ""
    handler: Any = None

    def msi_free(self, vmd: vmd_dev, vmdirq: vmd_irq_t) -> None:
        raise NotImplementedError

    def wait_for_readers(self, irqs: vmd_irq_list) -> None:
        """Wait until no walker of ``irqs`` that started before this call is still walking."""
        synchronize_rcu()

    def __deepcopy__(self, memo: dict) -> TeardownProtocol:
        return self

    def __copy__(self) -> TeardownProtocol:
        return self

    def __repr__(self) -> str:
        return f"<vmd protocol {self.name}>"


class RfcV3Teardown(TeardownProtocol):
    name = "rfc-v3"
    summary = "RCU walk; msi_free kfree()s the mapping at once (use-after-free)"
    handler = staticmethod(vmd_irq_rcu)

    def msi_free(self, vmd: vmd_dev, vmdirq: vmd_irq_t) -> None:
        _uncount(vmd, vmdirq)
        vmd.dev.k.mem.kfree(vmdirq)


class KfreeRcuTeardown(TeardownProtocol):
    name = "kfree-rcu"
    summary = ("RCU walk; msi_free kfree_rcu()s the mapping (the descriptor may still "
               "be freed under the walker)")
    handler = staticmethod(vmd_irq_rcu)

    def msi_free(self, vmd: vmd_dev, vmdirq: vmd_irq_t) -> None:
        _uncount(vmd, vmdirq)
        vmd.dev.k.mem.kfree_rcu(vmdirq)


class SynchronizeRcuTeardown(TeardownProtocol):
    name = "synchronize-rcu"
    summary = "RCU walk; msi_free synchronize_rcu()s before freeing (v4.9 until SRCU)"
    handler = staticmethod(vmd_irq_rcu)

    def msi_free(self, vmd: vmd_dev, vmdirq: vmd_irq_t) -> None:
        synchronize_rcu()
        _uncount(vmd, vmdirq)
        vmd.dev.k.mem.kfree(vmdirq)


class SrcuTeardown(TeardownProtocol):
    name = "srcu"
    summary = "per-vector SRCU walk; msi_free synchronize_srcu()s before freeing (Linux)"
    handler = staticmethod(vmd_irq)

    def msi_free(self, vmd: vmd_dev, vmdirq: vmd_irq_t) -> None:
        synchronize_srcu(vmdirq.irq.srcu)
        _uncount(vmd, vmdirq)
        vmd.dev.k.mem.kfree(vmdirq)

    def wait_for_readers(self, irqs: vmd_irq_list) -> None:
        synchronize_srcu(irqs.srcu)


class SpinlockTeardown(RfcV3Teardown):
    """Frees at once, as ``rfc-v3`` does: a walker holding the list lock cannot be on an
    entry ``vmd_irq_disable`` took off the list under that lock."""

    name = "spinlock"
    summary = ("walk under the list lock; msi_free kfree()s at once (lock order against "
               "free_irq's desc->lock: deadlock)")
    handler = staticmethod(vmd_irq_locked)

    def wait_for_readers(self, irqs: vmd_irq_list) -> None:
        """A walker holds the list lock: once it is free, none that started is walking."""
        lock = irqs.vmd.module.list_lock
        raw_spin_unlock_irqrestore(lock, raw_spin_lock_irqsave(lock))


PROTOCOLS: dict[str, TeardownProtocol] = {
    p.name: p for p in (SrcuTeardown(), RfcV3Teardown(), KfreeRcuTeardown(),
                        SynchronizeRcuTeardown(), SpinlockTeardown())}
DEFAULT_PROTOCOL = "srcu"
