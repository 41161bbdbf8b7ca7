"""Vector-assignment policies: which VMD vector a new child IRQ is multiplexed onto.

Chosen per VMD instance by name (module parameter ``policy``):

``modulo`` (the RFC, 2015)
    ``virq % msix_count``. Depends on how the IRQ number space happens to be
    populated: vectors end up empty or crowded depending on init order and
    hotplug — what the review objected to. (It predates ``first_vec``: on a
    client part it may use the reserved vector 0.)
``least-loaded`` (Linux today, ``vmd_next_irq``; the default)
    one usable vector: everyone shares it. NVMe-class children (0x010802)
    go to the usable vector with the fewest assigned child IRQs, ties to the
    lowest index, starting after ``first_vec``; everything else (root-port
    services: AER, PME, hotplug) shares ``first_vec``, the "slow" vector.
``affinity`` (nobody shipped it; the driver's comment asks for it "once we
solve the affinity problem")
    the VMD's fast vectors get a per-CPU spread of affinities (vector
    ``first_vec + 1 + j`` on CPU ``j mod ncpus``); an NVMe queue vector with a
    managed single-CPU affinity goes to the least-loaded fast vector *of that
    CPU*, so the demultiplexing runs on the CPU that owns the queue and
    sharing happens only among queues of one CPU. A child vector without a
    per-CPU affinity (the admin queue) takes the least-loaded fast vector;
    non-NVMe children share the slow vector.
``rebalance`` (nobody shipped it either)
    places like ``least-loaded``, and whenever a child IRQ is freed (a
    driver unbinds, a drive is hot-removed) moves live child IRQs between
    fast vectors until the most loaded one holds ``ceil(n / m)`` (n child
    IRQs on m fast vectors) — see ``rebalance.py`` for the move itself.

Every policy counts each child IRQ on its vector (``vmd_irq_list.count``)
under the global list lock. (Linux counts only the fast path and its
``msi_free`` decrements every vector's count, so the slow vector's count
wraps below zero, harmlessly: nothing compares it. The model counts every
child IRQ, so ``count`` is the true load.)
"""

from __future__ import annotations

from typing import Any

from vmdsim.drivers.vmd.dev import fast_vectors, vmd_dev, vmd_irq, vmd_irq_list
from vmdsim.drivers.vmd.rebalance import vmd_rebalance_locked
from vmdsim.kernel.locking import raw_spin_lock_irqsave, raw_spin_unlock_irqrestore
from vmdsim.kernel.pci.subsys import pci_warn


class vmd_policy:
    """A placement policy; static (never copied with a kernel)."""

    name = ""
    summary = ""

    def setup(self, vmd: vmd_dev) -> int:
        """Called once the VMD's vectors and handlers exist; 0 or -errno."""
        return 0

    def pick(self, vmd: vmd_dev, desc: Any, virq: int, vmdirq: vmd_irq) -> int:
        """The vector index for a new child IRQ (called under the list lock)."""
        raise NotImplementedError

    def next_irq(self, vmd: vmd_dev, desc: Any, virq: int, vmdirq: vmd_irq) -> vmd_irq_list:
        lock = vmd.module.list_lock
        flags = raw_spin_lock_irqsave(lock)
        irqs = vmd.irqs[self.pick(vmd, desc, virq, vmdirq)]
        irqs.count = irqs.count + 1
        vmd.children.append(vmdirq)
        raw_spin_unlock_irqrestore(lock, flags)
        return irqs

    def after_free(self, vmd: vmd_dev) -> None:
        """Called by ``msi_free`` once a child IRQ is gone (domain mutex held)."""

    def __deepcopy__(self, memo: dict) -> vmd_policy:
        return self

    def __copy__(self) -> vmd_policy:
        return self

    def __repr__(self) -> str:
        return f"<vmd policy {self.name}>"


class modulo(vmd_policy):
    name = "modulo"
    summary = "RFC: virq % msix_count"

    def pick(self, vmd: vmd_dev, desc: Any, virq: int, vmdirq: vmd_irq) -> int:
        return virq % vmd.msix_count


class least_loaded(vmd_policy):
    name = "least-loaded"
    summary = "Linux: NVMe to the least-loaded fast vector, others share the first"

    def pick(self, vmd: vmd_dev, desc: Any, virq: int, vmdirq: vmd_irq) -> int:
        if vmd.msix_count == 1 + vmd.first_vec:
            return vmd.first_vec
        if not vmdirq.fast:
            return vmd.first_vec
        irqs = vmd.irqs
        best = vmd.first_vec + 1
        for i in range(best, vmd.msix_count):
            if irqs[i].count < irqs[best].count:
                best = i
        return best


class affinity(vmd_policy):
    name = "affinity"
    summary = "NVMe queue vectors to a fast vector on the queue's own CPU"

    def setup(self, vmd: vmd_dev) -> int:
        kirq = vmd.dev.k.irq
        ncpus = vmd.dev.k.ncpus
        for j, irqs in enumerate(fast_vectors(vmd)):
            cpu = j % ncpus
            if kirq.irq_set_affinity(irqs.virq, frozenset((cpu,))):
                pci_warn(vmd.dev, f"{vmd.name}: cannot target vector {irqs.index} at CPU{cpu}")
                continue
            irqs.cpu = cpu
        return 0

    def pick(self, vmd: vmd_dev, desc: Any, virq: int, vmdirq: vmd_irq) -> int:
        if vmd.msix_count == 1 + vmd.first_vec or not vmdirq.fast:
            return vmd.first_vec
        fast = fast_vectors(vmd)
        mine = [irqs for irqs in fast if vmdirq.cpu >= 0 and irqs.cpu == vmdirq.cpu]
        best = min(mine or fast, key=lambda irqs: (irqs.count, irqs.index))
        return best.index


class rebalance(least_loaded):
    name = "rebalance"
    summary = "least-loaded, and live moves keep fast-vector load at ceil(n/m) after frees"

    def after_free(self, vmd: vmd_dev) -> None:
        vmd_rebalance_locked(vmd)


POLICIES: dict[str, vmd_policy] = {
    p.name: p for p in (least_loaded(), modulo(), affinity(), rebalance())}
DEFAULT_POLICY = "least-loaded"
