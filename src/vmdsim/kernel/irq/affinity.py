"""Spreading a device's vectors over the CPUs (``kernel/irq/affinity.c``, ``lib/group_cpus.c``).

With ``PCI_IRQ_AFFINITY`` a driver asks for one vector per CPU group:
``irq_calc_affinity_vectors`` caps the request at the number of CPUs (plus
the ``pre_vectors``/``post_vectors`` that are not spread), and
``irq_create_affinity_masks`` gives the spread vectors consecutive, equal
groups of CPUs (the first ``ncpus % n`` groups one CPU more) and marks them
*managed*; the pre/post vectors get every CPU. A cpumask is a ``frozenset``
of CPU numbers.

Where the model simplifies: one NUMA node, every CPU present and online, so
the grouping is plain arithmetic; asking for more groups than CPUs (which the
cap prevents) wraps round-robin. Linux allocates the mask array (``kcalloc``)
and quietly proceeds without affinity if that fails; the model never fails
here.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass
class irq_affinity:
    """``struct irq_affinity``: what a driver passes to ``pci_alloc_irq_vectors_affinity``."""

    pre_vectors: int = 0
    post_vectors: int = 0
    nr_sets: int = 0
    set_size: list[int] = field(default_factory=list)
    calc_sets: Callable[[irq_affinity, int], None] | None = None
    priv: object = None


@dataclass(frozen=True)
class irq_affinity_desc:
    """``struct irq_affinity_desc``: one vector's CPUs, and whether the kernel manages it."""

    mask: frozenset[int]
    is_managed: bool = False


def cpumask_of(cpu: int) -> frozenset[int]:
    return frozenset((cpu,))


def default_calc_sets(affd: irq_affinity, affvecs: int) -> None:
    affd.nr_sets = 1
    affd.set_size = [affvecs]


def group_cpus_evenly(numgrps: int, ncpus: int) -> list[frozenset[int]]:
    """Split CPUs 0..ncpus-1 into ``numgrps`` consecutive groups of near-equal size."""
    if numgrps <= 0:
        return []
    if numgrps > ncpus:
        return [cpumask_of(g % ncpus) for g in range(numgrps)]
    per, extra = divmod(ncpus, numgrps)
    groups, cpu = [], 0
    for g in range(numgrps):
        n = per + (1 if g < extra else 0)
        groups.append(frozenset(range(cpu, cpu + n)))
        cpu += n
    return groups


def irq_create_affinity_masks(nvecs: int, affd: irq_affinity,
                              ncpus: int) -> list[irq_affinity_desc] | None:
    """One :class:`irq_affinity_desc` per vector, or None when nothing is to be spread."""
    pre, post = affd.pre_vectors, affd.post_vectors
    affvecs = nvecs - pre - post if nvecs > pre + post else 0
    (affd.calc_sets or default_calc_sets)(affd, affvecs)
    if not affvecs:
        return None
    every = frozenset(range(ncpus))
    masks: list[frozenset[int]] = [every] * pre
    used = 0
    for i in range(affd.nr_sets):
        this = affd.set_size[i]
        masks.extend(group_cpus_evenly(this, ncpus))
        used += this
    masks = masks[:pre + min(used, affvecs)]
    masks.extend([every] * (nvecs - len(masks)))
    return [irq_affinity_desc(m, pre <= i < nvecs - post) for i, m in enumerate(masks)]


def irq_calc_affinity_vectors(minvec: int, maxvec: int, affd: irq_affinity, ncpus: int) -> int:
    """How many vectors are worth allocating: the reserved ones plus at most one per CPU."""
    resv = affd.pre_vectors + affd.post_vectors
    if resv > minvec:
        return 0
    set_vecs = maxvec - resv if affd.calc_sets is not None else ncpus
    return resv + min(set_vecs, maxvec - resv)
