"""Interrupt descriptors and the sparse table that maps IRQ numbers to them
(``kernel/irq/irqdesc.c``, ``include/linux/irqdesc.h``), and the structures of
``include/linux/irq.h`` they are made of: ``irq_data`` with its ``irqd_*``
accessors, and ``irq_chip``.

This is the bottom of the IRQ core: the chip code, the flow handlers, the
domains and ``request_irq`` all use descriptors, and nothing here uses them.
So the two things every new descriptor starts with live here too: the chip
of a descriptor nobody set up, ``no_irq_chip`` (with ``dummy_irq_chip``, from
``kernel/irq/dummychip.c``), and its flow handler, ``handle_bad_irq`` (from
``kernel/irq/handle.c``). ``chip`` and ``flow`` export them under their usual
names as well.

An IRQ number ("virq") names an :class:`irq_desc`. Its ``irq_data`` is the
top of the chip hierarchy (each parent domain adds one level through
``parent_data``); ``irq_common_data`` holds what all levels share: the state
bits (``IRQD_*``, including ``IRQD_IRQ_INPROGRESS``, which
``synchronize_irq`` waits on), the handler data and the MSI descriptor.

What the explorer sees: the table slot of every IRQ (``sparse_irqs#N.irq42``),
and the descriptor fields a teardown race touches: ``handle_irq``, ``action``,
``istate``, ``depth`` of the descriptor, ``chip`` and ``chip_data`` of every
``irq_data``, ``state_use_accessors`` and ``handler_data`` of the common data.
Each access passes the scheduling point.

Freeing a descriptor (``irq_free_descs``) first removes it from the table, then
frees it in one of two ways, chosen per kernel with ``k.irq.desc_free``:

``"rcu"`` (Linux since 4.14, commit "genirq: Free irq_desc with rcu")
    ``call_rcu(delayed_free_desc)``: a CPU that looked the descriptor up inside
    an RCU read-side section may keep using it until that section ends. The
    comment in ``free_desc`` says why: "That allows demultiplex interrupts to
    do rcu based management of the child interrupts."
``"immediate"`` (Linux before that, and the seed's RFC)
    ``kfree`` at once: a CPU that read the descriptor pointer just before
    calls into freed memory — the allocator reports the use-after-free.

Where the model simplifies: Linux embeds ``irq_common_data`` and ``irq_data``
in ``irq_desc`` and allocates the affinity masks and per-CPU statistics
separately; the model allocates the descriptor, its common data and its
top ``irq_data`` as three objects (freed together), so that a stale pointer to
any of them hits the allocator's poison. The three allocations stand in for
Linux's (desc, ``alloc_masks``, ``kstat_irqs``), so fault injection walks a
failure at each. There is no NUMA node, no sysfs/proc/debugfs entry and no
``nr_irqs`` expansion beyond a fixed bitmap of :data:`IRQ_BITMAP_BITS`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from vmdsim.kernel.errno import EEXIST, EINVAL, ENOMEM, EPERM
from vmdsim.kernel.irq.flags import (
    IRQD_ACTIVATED,
    IRQD_AFFINITY_MANAGED,
    IRQD_HANDLE_ENFORCE_IRQCTX,
    IRQD_IRQ_DISABLED,
    IRQD_IRQ_INPROGRESS,
    IRQD_IRQ_MASKED,
    IRQD_IRQ_STARTED,
    IRQD_LEVEL,
)
from vmdsim.kernel.locking import mutex, mutex_lock, mutex_unlock, raw_spinlock_t
from vmdsim.kernel.printk import pr_err
from vmdsim.kernel.sched import current, in_interrupt
from vmdsim.kernel.shared import READ, WRITE, KObject, init_private, peek, poke, sched_point, shared

if TYPE_CHECKING:
    from vmdsim.kernel.core import Kernel
    from vmdsim.kernel.irq.affinity import irq_affinity_desc
    from vmdsim.kernel.irq.irqdomain import irq_domain
    from vmdsim.kernel.irq.msi import msi_msg

IRQ_BITMAP_BITS = 8192  # NR_IRQS + 8196 in Linux; plenty for a model
NR_IRQS_LEGACY = 16
DESC_FREE_MODES = ("rcu", "immediate")

FlowHandler = Callable[["irq_desc"], None]


# -- struct irq_chip, and the chips of kernel/irq/dummychip.c -------------------------
CHIP_OPS = ("irq_startup", "irq_shutdown", "irq_enable", "irq_disable", "irq_ack", "irq_mask",
            "irq_mask_ack", "irq_unmask", "irq_eoi", "irq_set_affinity", "irq_retrigger",
            "irq_compose_msi_msg", "irq_write_msi_msg")


class irq_chip:
    """``struct irq_chip``: ``irq_chip("VMD-MSI", irq_enable=fn, ...)``; unset ops are None.

    An explorer's copy of a kernel copies the chips it uses, so the model never
    tests a chip's identity: "no chip" is ``irq_chip_is_none(chip)``.
    """

    # The callbacks (CHIP_OPS), each taking the irq_data of the chip's own level.
    irq_startup: Callable[[irq_data], int] | None
    irq_shutdown: Callable[[irq_data], None] | None
    irq_enable: Callable[[irq_data], None] | None
    irq_disable: Callable[[irq_data], None] | None
    irq_ack: Callable[[irq_data], None] | None
    irq_mask: Callable[[irq_data], None] | None
    irq_mask_ack: Callable[[irq_data], None] | None
    irq_unmask: Callable[[irq_data], None] | None
    irq_eoi: Callable[[irq_data], None] | None
    irq_set_affinity: Callable[[irq_data, frozenset[int], bool], int] | None
    irq_retrigger: Callable[[irq_data], int] | None
    irq_compose_msi_msg: Callable[[irq_data, msi_msg], None] | None
    irq_write_msi_msg: Callable[[irq_data, msi_msg], None] | None

    def __init__(self, name: str, *, flags: int = 0, **ops: Any) -> None:
        unknown = set(ops) - set(CHIP_OPS)
        if unknown:
            raise TypeError(f"irq_chip {name}: no such callback {', '.join(sorted(unknown))}; "
                            f"a chip has {', '.join(CHIP_OPS)}")
        self.name = name
        self.flags = flags
        for op in CHIP_OPS:
            setattr(self, op, ops.get(op))

    def __repr__(self) -> str:
        return f"<irq_chip {self.name}>"


def _noop(data: irq_data) -> None:
    pass


def _noop_startup(data: irq_data) -> int:
    return 0


def ack_bad(data: irq_data) -> None:
    """``ack_bad()``: an interrupt nobody set up (x86 ``ack_bad_irq`` logs and EOIs)."""


class _no_irq_chip(irq_chip):
    """The type of ``no_irq_chip``; a copy of it is still "no chip"."""


# The placeholder chip of a descriptor nobody set up, and the do-nothing one.
no_irq_chip = _no_irq_chip("none", irq_startup=_noop_startup, irq_shutdown=_noop,
                           irq_enable=_noop, irq_disable=_noop, irq_ack=ack_bad)


def irq_chip_is_none(chip: irq_chip | None) -> bool:
    """``chip == &no_irq_chip`` (or no chip at all)."""
    return chip is None or isinstance(chip, _no_irq_chip)


dummy_irq_chip = irq_chip("dummy", irq_startup=_noop_startup, irq_shutdown=_noop,
                          irq_enable=_noop, irq_disable=_noop, irq_ack=_noop, irq_mask=_noop,
                          irq_unmask=_noop)


class irq_common_data(KObject):
    """``struct irq_common_data``: state shared by every level of one IRQ's hierarchy."""

    state_use_accessors = shared()  # IRQD_* bits
    handler_data = shared()

    def __init__(self) -> None:
        init_private(self, state_use_accessors=0, handler_data=None)
        self.msi_desc: Any = None
        self.affinity: frozenset[int] = frozenset()
        self.effective_affinity: frozenset[int] = frozenset()


class irq_data(KObject):
    """``struct irq_data``: one level of an IRQ in a domain hierarchy.

    ``irq`` is the Linux IRQ number, ``hwirq`` the number inside ``domain``;
    ``parent_data`` is the same IRQ one domain further from the device.
    """

    chip = shared()
    chip_data = shared()

    def __init__(self, irq: int, common: irq_common_data, chip: irq_chip | None = None) -> None:
        init_private(self, chip=chip, chip_data=None)
        self.irq = irq
        self.hwirq = 0
        self.common = common
        self.domain: irq_domain | None = None
        self.parent_data: irq_data | None = None

    def __repr__(self) -> str:
        dom = self.domain.name if self.domain is not None else "-"
        return f"<irq_data irq {self.irq} hwirq {self.hwirq} in {dom}>"


class irq_desc(KObject):
    """``struct irq_desc``: everything the core knows of one interrupt.

    ``handle_irq`` is the flow handler (``handle_edge_irq``...), ``action`` the
    chain of :class:`~vmdsim.kernel.irq.handle.irqaction` that ``request_irq``
    installed, ``depth`` the nesting of ``disable_irq``, ``istate`` the
    ``IRQS_*`` bits. ``kstat_irqs[cpu]`` counts interrupts per CPU.
    """

    handle_irq = shared()
    action = shared()
    istate = shared()
    depth = shared()

    def __init__(self, k: Kernel, irq: int) -> None:
        init_private(self, handle_irq=None, action=None, istate=0, depth=1)
        self.k = k
        self.irq = irq
        self.irq_common_data: irq_common_data = None  # type: ignore[assignment]
        self.irq_data: irq_data = None  # type: ignore[assignment]
        self.status_use_accessors = 0  # IRQ_* settings
        self.lock = raw_spinlock_t(f"irq_desc{irq}.lock", key="irq_desc_lock_class")
        self.request_mutex = mutex(f"irq_desc{irq}.request_mutex", key="irq_desc.request_mutex")
        self.kstat_irqs = [0] * k.ncpus
        self.tot_count = 0
        self.irq_count = 0  # note_interrupt's window
        self.irqs_unhandled = 0
        self.last_unhandled = 0
        self.unhandled_total = 0  # model only: every IRQ_NONE since allocation
        self.name: str | None = None  # the flow handler's name: "edge", "simple"...

    def __repr__(self) -> str:
        return f"<irq_desc {self.irq}>"


def delayed_free_desc(desc: irq_desc) -> None:
    """The RCU callback that frees a descriptor once no reader can still see it."""
    mem = desc.k.mem
    mem.kfree(peek(desc, "irq_data"))
    mem.kfree(peek(desc, "irq_common_data"))
    mem.kfree(desc)


def free_desc(desc: irq_desc) -> None:
    """Free a descriptor at once (``desc_free = "immediate"``: Linux before 4.14)."""
    mem = desc.k.mem
    mem.kfree(peek(desc, "irq_data"))
    mem.kfree(peek(desc, "irq_common_data"))
    mem.kfree(desc)


class sparse_irqs(KObject):
    """The table of descriptors (Linux: the ``sparse_irqs`` maple tree) and its bitmap.

    Every lookup is a read of the slot ``irq<N>``, insertion and removal a write,
    so the explorer orders a lookup against a concurrent free.
    """

    def __init__(self) -> None:
        self.slots: dict[int, irq_desc] = {}
        self.allocated: set[int] = set()  # allocated_irqs bitmap

    def load(self, irq: int) -> irq_desc | None:
        sched_point(self, f"irq{irq}", READ)
        return self.slots.get(irq)

    def store(self, irq: int, desc: irq_desc | None) -> None:
        sched_point(self, f"irq{irq}", WRITE)
        if desc is None:
            self.slots.pop(irq, None)
        else:
            self.slots[irq] = desc


# -- irq_data accessors (include/linux/irq.h) ---------------------------------------------
def irqd_set(d: irq_data, mask: int) -> None:
    c = d.common
    c.state_use_accessors = c.state_use_accessors | mask


def irqd_clear(d: irq_data, mask: int) -> None:
    c = d.common
    c.state_use_accessors = c.state_use_accessors & ~mask


def irqd_has_set(d: irq_data, mask: int) -> bool:
    return bool(d.common.state_use_accessors & mask)


def irqd_irq_disabled(d: irq_data) -> bool:
    return irqd_has_set(d, IRQD_IRQ_DISABLED)


def irqd_irq_masked(d: irq_data) -> bool:
    return irqd_has_set(d, IRQD_IRQ_MASKED)


def irqd_irq_inprogress(d: irq_data) -> bool:
    return irqd_has_set(d, IRQD_IRQ_INPROGRESS)


def irqd_is_activated(d: irq_data) -> bool:
    return irqd_has_set(d, IRQD_ACTIVATED)


def irqd_is_started(d: irq_data) -> bool:
    return irqd_has_set(d, IRQD_IRQ_STARTED)


def irqd_is_level_type(d: irq_data) -> bool:
    return irqd_has_set(d, IRQD_LEVEL)


def irqd_affinity_is_managed(d: irq_data) -> bool:
    return irqd_has_set(d, IRQD_AFFINITY_MANAGED)


def irqd_to_hwirq(d: irq_data) -> int:
    return d.hwirq


def irq_data_get_irq_chip(d: irq_data) -> irq_chip:
    return d.chip


def irq_data_get_irq_chip_data(d: irq_data) -> Any:
    return d.chip_data


def irq_data_get_irq_handler_data(d: irq_data) -> Any:
    return d.common.handler_data


def irq_data_get_msi_desc(d: irq_data) -> Any:
    return d.common.msi_desc


def irq_data_get_affinity_mask(d: irq_data) -> frozenset[int]:
    return d.common.affinity


def irq_data_get_effective_affinity_mask(d: irq_data) -> frozenset[int]:
    return d.common.effective_affinity


def irq_data_update_effective_affinity(d: irq_data, mask: frozenset[int]) -> None:
    d.common.effective_affinity = frozenset(mask)


# -- irq_desc accessors (include/linux/irqdesc.h) ----------------------------------------
def irq_desc_get_irq(desc: irq_desc) -> int:
    return desc.irq_data.irq


def irq_desc_get_irq_data(desc: irq_desc) -> irq_data:
    return desc.irq_data


def irq_desc_get_chip(desc: irq_desc) -> irq_chip:
    return desc.irq_data.chip


def irq_desc_get_chip_data(desc: irq_desc) -> Any:
    return desc.irq_data.chip_data


def irq_desc_get_handler_data(desc: irq_desc) -> Any:
    return desc.irq_common_data.handler_data


def irq_desc_get_msi_desc(desc: irq_desc) -> Any:
    return desc.irq_common_data.msi_desc


def irq_desc_kstat_cpu(desc: irq_desc, cpu: int) -> int:
    return desc.kstat_irqs[cpu]


def kstat_incr_irqs_this_cpu(desc: irq_desc) -> None:
    """Count one interrupt on the running CPU (``__kstat_incr_irqs_this_cpu``)."""
    cpu = current().cpu.id
    if 0 <= cpu < len(desc.kstat_irqs):
        desc.kstat_irqs[cpu] += 1
    desc.tot_count += 1


def generic_handle_irq_desc(desc: irq_desc) -> None:
    """Call the descriptor's flow handler: ``desc->handle_irq(desc)``."""
    desc.handle_irq(desc)


def handle_bad_irq(desc: irq_desc) -> None:
    """An interrupt on a descriptor without a flow handler: count it and complain.

    ``ack_bad_irq`` is x86's: the message (it prints the IRQ number, though it says
    vector) and an EOI to the local APIC; no chip of the IRQ is called, so a
    descriptor whose hierarchy is being freed is not walked (the model has no
    APIC EOI to send, nor ``print_irq_desc``'s debug dump)."""
    kstat_incr_irqs_this_cpu(desc)
    pr_err(desc.k, f"unexpected IRQ trap at vector {desc.irq_data.irq:02x}")


# -- the table, on k.irq -----------------------------------------------------------------
class DescTableMixin:
    """``k.irq`` methods of ``kernel/irq/irqdesc.c`` (mixed into ``IrqSubsystem``)."""

    k: Kernel
    sparse_irqs: sparse_irqs
    sparse_irq_lock: mutex
    dynirq_base: int
    _desc_free: str

    # the free mode
    @property
    def desc_free(self) -> str:
        """How ``irq_free_descs`` frees a descriptor: ``"rcu"`` or ``"immediate"``."""
        return self._desc_free

    @desc_free.setter
    def desc_free(self, mode: str) -> None:
        if mode not in DESC_FREE_MODES:
            raise ValueError(f"k.irq.desc_free must be one of {', '.join(DESC_FREE_MODES)}, "
                             f"not {mode!r}")
        self._desc_free = mode

    def irq_to_desc(self, irq: int) -> irq_desc | None:
        """The descriptor of ``irq``, or None (a read of its table slot)."""
        return self.sparse_irqs.load(irq)

    def irq_get_irq_data(self, irq: int) -> irq_data | None:
        desc = self.irq_to_desc(irq)
        return desc.irq_data if desc is not None else None

    def active_irqs(self) -> list[int]:
        """IRQ numbers that have a descriptor, ascending (no scheduling points)."""
        return sorted(self.sparse_irqs.slots)

    def kstat_irqs_cpu(self, irq: int, cpu: int) -> int:
        desc = self.sparse_irqs.slots.get(irq)
        return desc.kstat_irqs[cpu] if desc is not None else 0

    def kstat_irqs(self, irq: int) -> int:
        desc = self.sparse_irqs.slots.get(irq)
        return sum(desc.kstat_irqs) if desc is not None else 0

    # allocation
    def irq_alloc_descs(self, irq: int, from_: int, cnt: int, node: int = -1,
                        affinity: list[irq_affinity_desc] | None = None) -> int:
        """Allocate ``cnt`` consecutive descriptors: at ``irq`` if >= 0, else the first
        free range at or above ``from_``; the first IRQ number or a negative errno."""
        if cnt <= 0:
            return -EINVAL
        if irq >= 0:
            if from_ > irq:
                return -EINVAL
            from_ = irq
        else:
            from_ = max(from_, self.dynirq_base)  # arch_dynirq_lower_bound()
        mutex_lock(self.sparse_irq_lock)
        try:
            start = self._find_free_area(from_, cnt)
            if start < 0:
                return start
            if irq >= 0 and start != irq:
                return -EEXIST
            return self._alloc_descs(start, cnt, affinity)
        finally:
            mutex_unlock(self.sparse_irq_lock)

    def irq_alloc_desc(self, node: int = -1) -> int:
        return self.irq_alloc_descs(-1, 0, 1, node)

    def _find_free_area(self, from_: int, cnt: int) -> int:
        used = self.sparse_irqs.allocated
        start = from_
        while start + cnt <= IRQ_BITMAP_BITS:
            clash = [i for i in range(start, start + cnt) if i in used]
            if not clash:
                return start
            start = clash[-1] + 1
        return -ENOMEM

    def _alloc_descs(self, start: int, cnt: int,
                     affinity: list[irq_affinity_desc] | None) -> int:
        for i in range(cnt):
            mask = self.default_affinity()
            flags = 0
            if affinity is not None:
                aff = affinity[i]
                mask = aff.mask
                if aff.is_managed:
                    flags = IRQD_AFFINITY_MANAGED
            desc = self._alloc_desc(start + i, flags, mask)
            if desc is None:
                for j in range(i - 1, -1, -1):
                    self._free_desc(start + j)
                return -ENOMEM
            self.sparse_irqs.allocated.add(start + i)
            self.sparse_irqs.store(start + i, desc)  # irq_insert_desc
        return start

    def _alloc_desc(self, irq: int, flags: int, mask: frozenset[int]) -> irq_desc | None:
        mem = self.k.mem
        desc = mem.kzalloc(irq_desc, self.k, irq, owner="irq")
        if desc is None:
            return None
        common = mem.kzalloc(irq_common_data, owner="irq")
        if common is None:
            mem.kfree(desc)
            return None
        data = mem.kzalloc(irq_data, irq, common, no_irq_chip, owner="irq")
        if data is None:
            mem.kfree(common)
            mem.kfree(desc)
            return None
        desc.irq_common_data = common
        desc.irq_data = data
        poke(desc, "handle_irq", handle_bad_irq)
        # desc_set_defaults(): disabled and masked until someone starts it up
        poke(common, "state_use_accessors", IRQD_IRQ_DISABLED | IRQD_IRQ_MASKED | flags)
        common.affinity = mask
        return desc

    def default_affinity(self) -> frozenset[int]:
        """``irq_default_affinity``: every CPU."""
        return frozenset(range(self.k.ncpus))

    # free
    def irq_free_descs(self, from_: int, cnt: int) -> None:
        """Remove ``cnt`` descriptors from the table and free them (see ``desc_free``)."""
        if from_ < 0 or from_ + cnt > IRQ_BITMAP_BITS:
            return
        mutex_lock(self.sparse_irq_lock)
        try:
            for i in range(cnt):
                self._free_desc(from_ + i)
            self.sparse_irqs.allocated.difference_update(range(from_, from_ + cnt))
        finally:
            mutex_unlock(self.sparse_irq_lock)

    def irq_free_desc(self, irq: int) -> None:
        self.irq_free_descs(irq, 1)

    def _free_desc(self, irq: int) -> None:
        desc = self.sparse_irqs.slots.get(irq)
        if desc is None:
            return
        self.sparse_irqs.store(irq, None)  # delete_irq_desc
        if self._desc_free == "rcu":
            self.k.rcu.call(delayed_free_desc, desc)
        else:
            free_desc(desc)

    # handling
    def generic_handle_irq(self, irq: int) -> int:
        """Run the flow handler of ``irq`` (from a demultiplexing handler); 0 or -EINVAL."""
        desc = self.irq_to_desc(irq)
        if desc is None:
            return -EINVAL
        if not in_interrupt() and \
                desc.irq_common_data.state_use_accessors & IRQD_HANDLE_ENFORCE_IRQCTX:
            return -EPERM  # x86 vector IRQs only run from their own interrupt
        generic_handle_irq_desc(desc)
        return 0
