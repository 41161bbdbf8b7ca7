"""The x86 vector domain and the interrupt entry (``arch/x86/kernel/apic/vector.c``,
``arch/x86/kernel/irq.c``).

The vector domain is the root of every x86 interrupt hierarchy. Allocating
an IRQ in it gives the IRQ an ``apic_chip_data``; *activating* it takes a
CPU vector from the matrix (the least loaded CPU of the IRQ's affinity mask,
the lowest free vector there, 32..235) and enters the descriptor in that
CPU's ``vector_irq`` table. The MSI message it composes is address
``0xFEE00000 | (APIC ID << 12)``, data = vector (physical destination mode,
fixed delivery; the APIC ID of CPU n is n).

``common_interrupt(vector)`` is what ``k.sched.handle_irq`` runs on the CPU
being interrupted: it looks up ``vector_irq[vector]`` of that CPU and calls
the descriptor's flow handler; a vector with nothing behind it is logged
("No irq handler for vector") and counted in ``spurious_vectors``, one whose
IRQ was shut down is quietly dropped.

Moving an IRQ (``irq_set_affinity``) gives it a new vector and keeps the old
one mapped until the first interrupt arrives on the new one (Linux's
``irq_complete_move`` cleanup), so an interrupt already in flight to the old
vector is not lost. Since Linux 4.20 a hard-interrupt handler, running with
interrupts off, is an RCU read-side section; the model's RCU counts only
explicit readers, so ``common_interrupt`` takes ``rcu_read_lock`` around the
handler when ``k.irq.hardirq_rcu_reader`` is True (the default). Set it to
False to model kernels where it was not (the seed's era).

Where the model simplifies: no reservation mode (a vector is assigned at
activation, which ``MSI_FLAG_ACTIVATE_EARLY`` makes allocation time, and
released at deactivation), no managed-vector reservations, no CPU hotplug,
no legacy/IO-APIC vectors, no interrupt remapping. EOI is implicit.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from vmdsim.kernel.errno import EBUSY, ENOMEM, ENOSPC
from vmdsim.kernel.irq.affinity import cpumask_of
from vmdsim.kernel.irq.chip import (
    irq_chip,
    irq_data_get_affinity_mask,
    irq_data_update_effective_affinity,
    irqd_affinity_is_managed,
    irqd_set,
)
from vmdsim.kernel.irq.flags import (
    IRQ_SET_MASK_OK,
    IRQD_AFFINITY_ON_ACTIVATE,
    IRQD_HANDLE_ENFORCE_IRQCTX,
    IRQD_SINGLE_TARGET,
)
from vmdsim.kernel.irq.irqdesc import DescTableMixin, irq_desc
from vmdsim.kernel.irq.irqdomain import (
    irq_domain,
    irq_domain_create_hierarchy,
    irq_domain_get_irq_data,
    irq_domain_ops,
    irq_domain_reset_irq_data,
)
from vmdsim.kernel.irq.matrix import irq_matrix
from vmdsim.kernel.locking import (
    raw_spin_lock,
    raw_spin_lock_irqsave,
    raw_spin_unlock,
    raw_spin_unlock_irqrestore,
)
from vmdsim.kernel.printk import pr_emerg
from vmdsim.kernel.sched import this_cpu
from vmdsim.kernel.shared import READ, WRITE, KObject, peek, sched_point

if TYPE_CHECKING:
    from vmdsim.kernel.core import Kernel
    from vmdsim.kernel.irq.irqdesc import irq_data
    from vmdsim.kernel.irq.msi import msi_msg
    from vmdsim.kernel.irq.subsys import IrqSubsystem

NR_VECTORS = 256
FIRST_EXTERNAL_VECTOR = 0x20
FIRST_SYSTEM_VECTOR = 0xEC  # LOCAL_TIMER_VECTOR and above belong to the kernel
X86_MSI_BASE_ADDRESS_LOW = 0xFEE00000
X86_MSI_BASE_ADDRESS_HIGH = 0
MSI_ADDR_DEST_ID_SHIFT = 12


class _vector_state:
    """``VECTOR_SHUTDOWN``/``VECTOR_RETRIGGERED``: ERR_PTR markers in ``vector_irq``."""

    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return self.name


VECTOR_UNUSED = None
VECTOR_SHUTDOWN = _vector_state("VECTOR_SHUTDOWN")
VECTOR_RETRIGGERED = _vector_state("VECTOR_RETRIGGERED")


class vector_irq_t(KObject):
    """The per-CPU ``vector_irq`` tables: ``slots[cpu][vector]`` -> descriptor or marker."""

    def __init__(self, ncpus: int) -> None:
        self.slots: list[list[Any]] = [[VECTOR_UNUSED] * NR_VECTORS for _ in range(ncpus)]

    def load(self, cpu: int, vector: int) -> Any:
        sched_point(self, f"cpu{cpu}.{vector}", READ)
        return self.slots[cpu][vector]

    def store(self, cpu: int, vector: int, value: Any) -> None:
        sched_point(self, f"cpu{cpu}.{vector}", WRITE)
        self.slots[cpu][vector] = value


class apic_chip_data(KObject):
    """Where one IRQ is targeted: ``vector`` on ``cpu`` (and, while moving, the previous)."""

    def __init__(self) -> None:
        self.irq = 0
        self.vector = 0
        self.cpu = 0
        self.prev_vector = 0
        self.prev_cpu = 0
        self.move_in_progress = False
        self.is_managed = False
        self.dest_apicid = 0  # hw_irq_cfg

    def __repr__(self) -> str:
        return f"<apic_chip_data irq {self.irq}: vector {self.vector:#x} on CPU{self.cpu}>"


def apic_chip_data_of(d: irq_data) -> apic_chip_data:
    """The vector-level ``apic_chip_data`` of any level of an x86 IRQ (``apic_chip_data``)."""
    while d.parent_data is not None:
        d = d.parent_data
    return d.chip_data


def _kirq(d: irq_data) -> IrqSubsystem:
    domain = d.domain
    assert domain is not None  # the vector level of an allocated IRQ
    return domain.k.irq


# -- vector assignment (under vector_lock) ---------------------------------------------------
def _apic_update_vector(d: irq_data, newvec: int, newcpu: int) -> None:
    kirq = _kirq(d)
    apicd: apic_chip_data = d.chip_data
    desc = kirq.sparse_irqs.slots.get(d.irq)
    apicd.prev_vector = 0
    if apicd.vector:
        apicd.move_in_progress = True
        apicd.prev_vector, apicd.prev_cpu = apicd.vector, apicd.cpu
    apicd.vector, apicd.cpu = newvec, newcpu
    kirq.vector_irq.store(newcpu, newvec, desc)
    apicd.dest_apicid = newcpu
    irq_data_update_effective_affinity(d, cpumask_of(newcpu))


def _assign_vector_locked(d: irq_data, dest: frozenset[int]) -> int:
    apicd: apic_chip_data = d.chip_data
    if apicd.vector and apicd.cpu in dest:
        return 0  # already on a CPU of the new mask: no point in moving
    if apicd.move_in_progress:
        return -EBUSY
    vector, cpu = _kirq(d).vector_matrix.alloc(dest)
    if vector < 0:
        return vector
    _apic_update_vector(d, vector, cpu)
    return 0


def _assign_irq_vector_any_locked(d: irq_data) -> int:
    online = _kirq(d).default_affinity()
    if not _assign_vector_locked(d, irq_data_get_affinity_mask(d) & online):
        return 0
    if irqd_affinity_is_managed(d):
        return -ENOSPC  # a managed IRQ never leaves its mask
    if not _assign_vector_locked(d, online):
        return 0
    return -ENOSPC


def _free_moved_vector(d: irq_data) -> None:
    kirq = _kirq(d)
    apicd: apic_chip_data = d.chip_data
    kirq.vector_irq.store(apicd.prev_cpu, apicd.prev_vector, VECTOR_UNUSED)
    kirq.vector_matrix.free(apicd.prev_cpu, apicd.prev_vector)
    apicd.prev_vector = 0
    apicd.move_in_progress = False


def _clear_irq_vector(d: irq_data) -> None:
    kirq = _kirq(d)
    apicd: apic_chip_data = d.chip_data
    if not apicd.vector:
        return
    kirq.vector_irq.store(apicd.cpu, apicd.vector, VECTOR_SHUTDOWN)
    kirq.vector_matrix.free(apicd.cpu, apicd.vector)
    apicd.vector = 0
    if apicd.prev_vector:
        kirq.vector_irq.store(apicd.prev_cpu, apicd.prev_vector, VECTOR_SHUTDOWN)
        kirq.vector_matrix.free(apicd.prev_cpu, apicd.prev_vector)
        apicd.prev_vector = 0
    apicd.move_in_progress = False


def irq_force_complete_move(desc: irq_desc) -> None:
    """CPU offline: finish a move of the IRQ's vector that is still pending (free the old
    vector now). Only the vector level's data is looked at, found by domain: an IRQ with
    no level in the vector domain (a VMD child) has none, and its ``chip_data`` is not an
    ``apic_chip_data``."""
    kirq = desc.k.irq
    d = irq_domain_get_irq_data(kirq.x86_vector_domain, desc.irq_data.irq)
    if d is None:
        return
    raw_spin_lock(kirq.vector_lock)
    try:
        apicd = d.chip_data
        if apicd is not None and apicd.move_in_progress and apicd.prev_vector:
            _free_moved_vector(d)
    finally:
        raw_spin_unlock(kirq.vector_lock)


# -- the lapic_controller chip ------------------------------------------------------------------
def x86_vector_msi_compose_msg(d: irq_data, msg: msi_msg) -> None:
    apicd: apic_chip_data = d.chip_data
    msg.address_hi = X86_MSI_BASE_ADDRESS_HIGH
    msg.address_lo = X86_MSI_BASE_ADDRESS_LOW | (apicd.dest_apicid & 0xFF) << \
        MSI_ADDR_DEST_ID_SHIFT
    msg.data = apicd.vector


def apic_set_affinity(d: irq_data, dest: frozenset[int], force: bool) -> int:
    kirq = _kirq(d)
    raw_spin_lock(kirq.vector_lock)
    try:
        err = _assign_vector_locked(d, dest & kirq.default_affinity())
    finally:
        raw_spin_unlock(kirq.vector_lock)
    return err if err else IRQ_SET_MASK_OK


def apic_retrigger_irq(d: irq_data) -> int:
    """Send the IRQ's vector to its CPU as an IPI (the local APIC's ICR write)."""
    kirq = _kirq(d)
    apicd: apic_chip_data = d.chip_data
    flags = raw_spin_lock_irqsave(kirq.vector_lock)
    cpu, vector = apicd.cpu, apicd.vector
    raw_spin_unlock_irqrestore(kirq.vector_lock, flags)
    kirq.k.sched.raise_irq(cpu, vector)
    return 1


def apic_ack_edge(d: irq_data) -> None:
    """Complete a pending move once an interrupt arrives on the new vector; EOI."""
    apicd: apic_chip_data = d.chip_data
    if not apicd.move_in_progress or apicd.cpu != this_cpu().id:
        return
    kirq = _kirq(d)
    if apicd.prev_vector in kirq.k.sched.cpus[apicd.prev_cpu].pending:
        return  # still requested in the old CPU's IRR: clean up on a later interrupt
    raw_spin_lock(kirq.vector_lock)
    _free_moved_vector(d)
    raw_spin_unlock(kirq.vector_lock)


lapic_controller = irq_chip("APIC", irq_ack=apic_ack_edge, irq_set_affinity=apic_set_affinity,
                            irq_compose_msi_msg=x86_vector_msi_compose_msg,
                            irq_retrigger=apic_retrigger_irq)


# -- the domain ops --------------------------------------------------------------------------------
def x86_vector_free_irqs(domain: irq_domain, virq: int, nr_irqs: int) -> None:
    kirq = domain.k.irq
    for i in range(nr_irqs):
        d = irq_domain_get_irq_data(domain, virq + i)
        if d is None or d.chip_data is None:
            continue
        flags = raw_spin_lock_irqsave(kirq.vector_lock)
        _clear_irq_vector(d)
        apicd = d.chip_data
        irq_domain_reset_irq_data(d)
        raw_spin_unlock_irqrestore(kirq.vector_lock, flags)
        domain.k.mem.kfree(apicd)


def x86_vector_alloc_irqs(domain: irq_domain, virq: int, nr_irqs: int, arg: Any) -> int:
    for i in range(nr_irqs):
        d = irq_domain_get_irq_data(domain, virq + i)
        assert d is not None  # the core allocated this level before calling here
        apicd = domain.k.mem.kzalloc(apic_chip_data, owner="irq")
        if apicd is None:
            x86_vector_free_irqs(domain, virq, i)
            return -ENOMEM
        apicd.irq = virq + i
        apicd.is_managed = irqd_affinity_is_managed(d)
        d.chip = lapic_controller
        d.chip_data = apicd
        d.hwirq = virq + i
        irqd_set(d, IRQD_SINGLE_TARGET | IRQD_HANDLE_ENFORCE_IRQCTX | IRQD_AFFINITY_ON_ACTIVATE)
    return 0


def x86_vector_activate(domain: irq_domain, d: irq_data, reserve: bool) -> int:
    kirq = domain.k.irq
    flags = raw_spin_lock_irqsave(kirq.vector_lock)
    try:
        return _assign_irq_vector_any_locked(d)
    finally:
        raw_spin_unlock_irqrestore(kirq.vector_lock, flags)


def x86_vector_deactivate(domain: irq_domain, d: irq_data) -> None:
    kirq = domain.k.irq
    flags = raw_spin_lock_irqsave(kirq.vector_lock)
    _clear_irq_vector(d)
    raw_spin_unlock_irqrestore(kirq.vector_lock, flags)


x86_vector_domain_ops = irq_domain_ops(alloc=x86_vector_alloc_irqs, free=x86_vector_free_irqs,
                                       activate=x86_vector_activate,
                                       deactivate=x86_vector_deactivate)


def x86_vector_domain_init(k: Kernel) -> irq_domain:
    """``arch_early_irq_init``: the matrix, the per-CPU tables and the root domain."""
    kirq = k.irq
    kirq.vector_matrix = irq_matrix(k.ncpus, NR_VECTORS, FIRST_EXTERNAL_VECTOR,
                                    FIRST_SYSTEM_VECTOR)
    kirq.vector_irq = vector_irq_t(k.ncpus)
    fn = kirq.irq_domain_alloc_named_fwnode("VECTOR", owner=None)
    domain = irq_domain_create_hierarchy(None, 0, 0, fn, x86_vector_domain_ops, None, k=k,
                                         owner=None)
    assert domain is not None  # static: nothing to fail (Linux: BUG_ON(!x86_vector_domain))
    return domain


class X86VectorMixin(DescTableMixin):
    """``k.irq.common_interrupt`` and the vector bookkeeping."""

    k: Kernel
    hardirq_rcu_reader: bool
    vector_matrix: irq_matrix  # set by x86_vector_domain_init
    vector_irq: vector_irq_t
    spurious_vectors: list[int]

    def common_interrupt(self, vector: int) -> None:
        """The x86 interrupt entry: run ``vector_irq[vector]``'s handler on this CPU."""
        cpu = this_cpu().id
        rcu = self.k.rcu if self.hardirq_rcu_reader else None
        if rcu is not None:
            rcu.read_lock()
        try:
            desc = self.vector_irq.load(cpu, vector)
            if isinstance(desc, irq_desc):
                desc.handle_irq(desc)  # handle_irq() -> generic_handle_irq_desc()
            elif desc is VECTOR_UNUSED:  # None: survives copying
                self.spurious_vectors[cpu] += 1
                pr_emerg(self.k, f"common_interrupt: {cpu}.{vector} No irq handler for vector")
            else:
                self.vector_irq.store(cpu, vector, VECTOR_UNUSED)
        finally:
            if rcu is not None:
                rcu.read_unlock()

    def irq_vector_of(self, irq: int) -> tuple[int, int] | None:
        """(cpu, vector) an x86 IRQ is targeted at now, or None (for reports and tests)."""
        d = self.irq_get_irq_data(irq)
        if d is None:
            return None
        while d.parent_data is not None:
            d = d.parent_data
        apicd = d.chip_data
        if not isinstance(apicd, apic_chip_data) or not apicd.vector:
            return None
        return apicd.cpu, apicd.vector

    def vectors_in_use(self) -> list[tuple[int, int, int]]:
        """(cpu, vector, irq) for every vector that maps a descriptor (no scheduling points)."""
        out = []
        for cpu, row in enumerate(self.vector_irq.slots):
            for vector, desc in enumerate(row):
                if isinstance(desc, irq_desc):
                    out.append((cpu, vector, peek(desc, "irq")))
        return out
