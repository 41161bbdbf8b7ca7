"""Moving a live child IRQ from one VMD vector to another without losing an interrupt.

Linux never moves a child IRQ: ``vmd_msi_free`` carries the comment "XXX:
Potential optimization to rebalance". This is that optimisation, built
from the pieces Linux already has, in this order (``vmd_move_irq``):

1. take the child's ``request_mutex`` (no ``request_irq``/``free_irq`` of it
   meanwhile) and its descriptor lock;
2. **mask** the child at its device: from now on a completion sets the
   entry's pending bit (MSI-X PBA) instead of sending the message;
3. take it **off the old vector's list** (list lock), marked not enabled;
4. drop the descriptor lock and **wait for the old vector's readers**
   (``synchronize_srcu`` of that vector, or ``synchronize_rcu`` for the RCU
   protocols): a walker still standing on the entry must leave before its
   links are reused, or it would follow them into the new vector's list;
5. under the descriptor lock again: recount, point the mapping at the new
   vector, put it on the **new list** (tail), compose and **write the new
   message** (the device is still masked, so no torn message is sent), and
   **unmask** — a completion that came while masked, i.e. while the child
   was on neither list, is sent now, to the new vector, whose walk finds it;
6. **retrigger the new vector** (``check_irq_resend``: an IPI of the VMD
   vector to its CPU): an interrupt the device sent to the old vector
   *before* step 2 may be walked only after step 3 and miss the child; the
   replayed walk of the new vector runs the child's handler after the move,
   and the child's handler finds the completion still posted. The replay
   goes through the new vector's edge flow, so it never runs the child
   concurrently with that vector's own walks.

If the child is disabled while it waits in step 4 (``disable_irq``), the
move still repoints it but leaves it off the lists and masked, and
``enable_irq`` later publishes it on the new vector. If it is disabled and
enabled again meanwhile, it is back on the old list and the move is
abandoned. Only live children (enabled: on a list) are moved. One that is
allocated but not enabled may be half-way through activation or
deactivation, which the MSI core does without the descriptor lock, so
rewriting its message could race with the core's own write; such children
stay where they are (in steady state every child is live; the not-enabled
ones are those of a device being torn down, whose ``msi_free`` comes next).

``vmd_rebalance`` moves children, one at a time, from the most loaded fast
vector to the least loaded, until they differ by at most one — which makes
the maximum ``ceil(n / m)``. It runs under the VMD MSI domain's mutex, the
one ``irq_domain_alloc_irqs``/``irq_domain_free_irqs`` hold around
``msi_init``/``msi_free``, so no mapping is created or freed under it (the
``rebalance`` policy calls it from ``msi_free``, where the mutex is held).

Where Linux would need more: ``check_irq_resend`` is internal to genirq
(``kernel/irq/internals.h``); a driver would ask for an exported
``irq_retrigger`` (or use ``irq_set_irqchip_state(..., PENDING)`` where the
chip supports it).
"""

from __future__ import annotations

from vmdsim.drivers.vmd.dev import fast_vectors, vmd_dev, vmd_irq, vmd_irq_list
from vmdsim.kernel.irq.chip import (
    check_irq_resend,
    irq_chip_compose_msi_msg,
    irq_chip_write_msi_msg,
    irqd_irq_disabled,
    irqd_is_activated,
)
from vmdsim.kernel.irq.irqdesc import irq_data
from vmdsim.kernel.irq.msi import msi_msg
from vmdsim.kernel.locking import (
    mutex_lock,
    mutex_unlock,
    raw_spin_lock_irqsave,
    raw_spin_unlock_irqrestore,
)
from vmdsim.kernel.rculist import list_add_tail_rcu, list_del_rcu
from vmdsim.kernel.sched import current


def _write_msg(data: irq_data) -> None:
    msg = msi_msg()
    if irq_chip_compose_msi_msg(data, msg) == 0:
        irq_chip_write_msi_msg(data, msg)


def vmd_move_irq(vmd: vmd_dev, vmdirq: vmd_irq, dst: vmd_irq_list, *,
                 replay: bool = True) -> bool:
    """Move one child IRQ to vector ``dst``; True if it moved. The caller holds the VMD
    MSI domain's mutex (the mapping cannot be freed under it). ``replay=False`` skips
    step 6 — only to show what it is for: an interrupt can then be lost."""
    kirq = vmd.dev.k.irq
    lock = vmd.module.list_lock
    desc = kirq.irq_to_desc(vmdirq.virq)
    data = desc.irq_data
    src = vmdirq.irq
    if src is dst:
        return False
    mutex_lock(desc.request_mutex)
    try:
        # 2-3: mask, unlink (only a live child: on a list, its message active)
        flags = raw_spin_lock_irqsave(desc.lock)
        if not vmdirq.enabled:
            raw_spin_unlock_irqrestore(desc.lock, flags)
            return False
        data.chip.irq_mask(data)
        lflags = raw_spin_lock_irqsave(lock)
        list_del_rcu(vmdirq)
        vmdirq.enabled = False
        raw_spin_unlock_irqrestore(lock, lflags)
        raw_spin_unlock_irqrestore(desc.lock, flags)

        # 4: no walker of src may still stand on the entry
        vmd.protocol.wait_for_readers(src)

        # 5: repoint, relink, new message, unmask
        flags = raw_spin_lock_irqsave(desc.lock)
        lflags = raw_spin_lock_irqsave(lock)
        if vmdirq.enabled:  # disabled and re-enabled meanwhile: it is back on src
            raw_spin_unlock_irqrestore(lock, lflags)
            raw_spin_unlock_irqrestore(desc.lock, flags)
            return False
        src.count = src.count - 1
        dst.count = dst.count + 1
        vmdirq.irq = dst
        relink = not irqd_irq_disabled(data)  # disabled meanwhile: enable_irq relinks
        if relink:
            list_add_tail_rcu(vmdirq, dst.irq_list)
            vmdirq.enabled = True
        raw_spin_unlock_irqrestore(lock, lflags)
        if irqd_is_activated(data):
            _write_msg(data)
        if relink:
            data.chip.irq_unmask(data)
        raw_spin_unlock_irqrestore(desc.lock, flags)
        vmd.moves += 1

        # 6: replay the new vector for what was sent to the old one before the mask
        if relink and replay:
            ddesc = kirq.irq_to_desc(dst.virq)
            flags = raw_spin_lock_irqsave(ddesc.lock)
            check_irq_resend(ddesc, True)
            raw_spin_unlock_irqrestore(ddesc.lock, flags)
        return True
    finally:
        mutex_unlock(desc.request_mutex)


def _most_and_least(vmd: vmd_dev) -> tuple[vmd_irq_list, vmd_irq_list, vmd_irq | None]:
    """(most loaded fast vector, least loaded, a child to move off the first)."""
    lock = vmd.module.list_lock
    flags = raw_spin_lock_irqsave(lock)
    fast = fast_vectors(vmd)
    src = max(fast, key=lambda irqs: (irqs.count, irqs.index))
    dst = min(fast, key=lambda irqs: (irqs.count, irqs.index))
    victim = None
    if src.count - dst.count > 1:
        # the most recently placed live one (on the list)
        live = [c for c in vmd.children if c.irq is src and c.enabled]
        victim = live[-1] if live else None
    raw_spin_unlock_irqrestore(lock, flags)
    return src, dst, victim


def vmd_rebalance_locked(vmd: vmd_dev) -> int:
    """Even out the fast vectors (the domain mutex is held); the number of moves made."""
    if vmd.irq_domain is None or len(fast_vectors(vmd)) < 2:
        return 0
    owner = vmd.irq_domain.root.mutex.owner
    if owner is not current():
        raise RuntimeError(f"{vmd.name}: vmd_rebalance_locked without the VMD MSI domain's "
                           "mutex (use vmd_rebalance)")
    moves = 0
    while True:
        src, dst, victim = _most_and_least(vmd)
        if victim is None:
            return moves
        if vmd_move_irq(vmd, victim, dst):
            moves += 1
        else:
            return moves  # it would not move (disabled or freed meanwhile): try later


def vmd_rebalance(vmd: vmd_dev) -> int:
    """Even out the fast vectors now (from a task); the number of moves made."""
    if vmd.irq_domain is None:
        return 0
    m = vmd.irq_domain.root.mutex
    mutex_lock(m)
    try:
        return vmd_rebalance_locked(vmd)
    finally:
        mutex_unlock(m)


def vmd_move(vmd: vmd_dev, virq: int, index: int, *, replay: bool = True) -> bool:
    """Move child IRQ ``virq`` to vector ``index`` now (from a task); True if it moved."""
    if vmd.irq_domain is None or not 0 <= index < len(vmd.irqs):
        return False
    m = vmd.irq_domain.root.mutex
    mutex_lock(m)
    try:
        for child in vmd.children:
            if child.virq == virq:
                return vmd_move_irq(vmd, child, vmd.irqs[index], replay=replay)
        return False
    finally:
        mutex_unlock(m)
