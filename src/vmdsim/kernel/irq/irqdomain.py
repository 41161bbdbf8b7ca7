"""IRQ domains and their hierarchy (``kernel/irq/irqdomain.c``, ``include/linux/irqdomain.h``).

A domain translates its own interrupt numbers (``hwirq``) to Linux IRQ
numbers. In a hierarchy each IRQ has one ``irq_data`` per domain, linked by
``parent_data`` from the device's domain (top) towards the CPU's (root):
for an ordinary PCI device, PCI-MSI -> x86 vector. The VMD's MSI domain has
no parent: its allocation path ends in the VMD's own ``msi_init``.

``irq_domain_alloc_irqs`` allocates descriptors, one ``irq_data`` per parent
level, then calls the domain's ``ops.alloc`` (which calls its parent's with
``irq_domain_alloc_irqs_parent``), and finally records every level in its
domain's reverse map. ``irq_domain_free_irqs`` undoes all of that under the
root domain's mutex and frees the descriptors. ``irq_domain_activate_irq``
activates root first (x86: assign a CPU vector), then each level up (MSI:
compose and write the message); deactivation runs top first.

``irq_domain_remove`` of a domain that still has IRQs mapped is refused with
:class:`~vmdsim.kernel.irq.flags.IrqError` naming them (Linux WARNs and frees
it anyway, leaving those IRQs pointing at freed memory).

Where the model simplifies: a domain's reverse map is a dict (Linux: a
linear array or a radix tree); there are no legacy/linear/nomap variants,
no ``irq_create_mapping``, no ``select``/``translate`` (no device tree or
ACPI lookups), and no hierarchy trimming.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from vmdsim.kernel.errno import EINVAL, ENOENT, ENOMEM, ENOSYS
from vmdsim.kernel.irq.flags import IRQ_NOREQUEST, IRQD_ACTIVATED, IrqError
from vmdsim.kernel.irq.irqdesc import (
    DescTableMixin,
    irq_data,
    irqd_clear,
    irqd_is_activated,
    irqd_set,
    no_irq_chip,
)
from vmdsim.kernel.locking import mutex, mutex_lock, mutex_unlock
from vmdsim.kernel.shared import READ, WRITE, KObject, sched_point

if TYPE_CHECKING:
    from vmdsim.kernel.core import Kernel
    from vmdsim.kernel.irq.affinity import irq_affinity_desc
    from vmdsim.kernel.irq.irqdesc import irq_chip

# enum irq_domain_bus_token
DOMAIN_BUS_ANY = 0
DOMAIN_BUS_WIRED = 1
DOMAIN_BUS_GENERIC_MSI = 2
DOMAIN_BUS_PCI_MSI = 3
DOMAIN_BUS_PLATFORM_MSI = 4
DOMAIN_BUS_NEXUS = 5
DOMAIN_BUS_IPI = 6
DOMAIN_BUS_VMD_MSI = 10
DOMAIN_BUS_PCI_DEVICE_MSI = 11
DOMAIN_BUS_PCI_DEVICE_MSIX = 12

# irq_domain flags
IRQ_DOMAIN_FLAG_HIERARCHY = 1 << 0
IRQ_DOMAIN_NAME_ALLOCATED = 1 << 1
IRQ_DOMAIN_FLAG_MSI = 1 << 4

# irqchip_fwid types
IRQCHIP_FWNODE_REAL = 0
IRQCHIP_FWNODE_NAMED = 1
IRQCHIP_FWNODE_NAMED_ID = 2


class fwnode_handle(KObject):
    """An ``irqchip_fwid`` fwnode: the name a domain is known by (``VMD-MSI-65536``)."""

    def __init__(self, k: Kernel, type_: int, name: str, id_: int = 0) -> None:
        self.k = k
        self.type = type_
        self.name = name
        self.id = id_

    def __repr__(self) -> str:
        return f"<fwnode {self.name}>"


class irq_domain_ops:
    """``struct irq_domain_ops`` (hierarchy part): ``alloc(domain, virq, nr_irqs, arg)``,
    ``free(domain, virq, nr_irqs)``, ``activate(domain, irq_data, reserve)``,
    ``deactivate(domain, irq_data)``."""

    def __init__(self, *, alloc: Any = None, free: Any = None, activate: Any = None,
                 deactivate: Any = None) -> None:
        self.alloc = alloc
        self.free = free
        self.activate = activate
        self.deactivate = deactivate


class irq_domain(KObject):
    """``struct irq_domain``; ``host_data`` is the owner's (an MSI domain's ``msi_domain_info``)."""

    def __init__(self, k: Kernel, name: str, fwnode: fwnode_handle | None, ops: irq_domain_ops,
                 host_data: Any, flags: int, parent: irq_domain | None, size: int) -> None:
        self.k = k
        self.name = name
        self.fwnode = fwnode
        self.ops = ops
        self.host_data = host_data
        self.flags = flags
        self.bus_token = DOMAIN_BUS_ANY
        self.parent = parent
        self.root: irq_domain = parent.root if parent is not None else self
        self.mutex: mutex = (mutex(f"{name}.mutex", key="irq_domain.root.mutex")
                             if parent is None else self.root.mutex)
        self.mapcount = 0
        self.revmap: dict[int, irq_data] = {}
        self.hwirq_max = size or (1 << 32) - 1
        self.revmap_size = size  # Linux: the linear part of the reverse map (0: tree only)
        self.msi_parent_ops: Any = None  # an MSI parent's (msi_parent.py)
        self.dev: Any = None  # a device domain's device
        self.template: Any = None  # a device domain's copy of its template

    def __repr__(self) -> str:
        return f"<irq_domain {self.name}>"


# -- creation and removal ---------------------------------------------------------------
def irq_domain_create_hierarchy(parent: irq_domain | None, flags: int, size: int,
                                fwnode: fwnode_handle | None, ops: irq_domain_ops,
                                host_data: Any, *, k: Kernel | None = None,
                                owner: str | None = "irq") -> irq_domain | None:
    """A domain under ``parent`` (None: a root). The kernel is the parent's or fwnode's.

    ``owner=None`` makes a static domain, not allocated from ``k.mem`` (what the
    architecture creates at boot and never frees: the x86 vector and default
    PCI-MSI domains), so it is neither a leak nor a fault-injection point.
    """
    if k is None:
        k = parent.k if parent is not None else fwnode.k if fwnode is not None else None
        if k is None:
            raise IrqError("irq_domain_create_hierarchy: no parent and no fwnode: "
                           "pass k= to say which kernel the domain belongs to")
    name = fwnode.name if fwnode is not None else f"unknown-{len(k.irq.irq_domain_list) + 1}"
    flags |= IRQ_DOMAIN_FLAG_HIERARCHY if parent is not None or ops.alloc else 0
    args = (k, name, fwnode, ops, host_data, flags, parent, size)
    domain = irq_domain(*args) if owner is None else k.mem.kzalloc(irq_domain, *args,
                                                                  owner=owner)
    if domain is None:
        return None
    mutex_lock(k.irq.irq_domain_mutex)
    k.irq.irq_domain_list.append(domain)
    mutex_unlock(k.irq.irq_domain_mutex)
    return domain


def irq_domain_remove(domain: irq_domain) -> None:
    """Remove and free a domain; refused while any IRQ is still mapped in it."""
    k = domain.k
    if domain.mapcount or domain.revmap:
        virqs = sorted(d.irq for d in domain.revmap.values())
        raise IrqError(f"irq_domain_remove({domain.name}): {domain.mapcount} IRQ(s) still "
                       f"mapped ({', '.join(map(str, virqs)) or 'unknown'}); free them "
                       "(pci_free_irq_vectors / irq_domain_free_irqs) first")
    mutex_lock(k.irq.irq_domain_mutex)
    k.irq.irq_domain_list.remove(domain)
    mutex_unlock(k.irq.irq_domain_mutex)
    if "_kmem" in domain.__dict__:
        k.mem.kfree(domain)


def irq_domain_update_bus_token(domain: irq_domain, bus_token: int) -> None:
    domain.bus_token = bus_token


def irq_domain_is_hierarchy(domain: irq_domain) -> bool:
    return bool(domain.flags & IRQ_DOMAIN_FLAG_HIERARCHY)


def irq_domain_is_msi(domain: irq_domain) -> bool:
    return bool(domain.flags & IRQ_DOMAIN_FLAG_MSI)


# -- reverse map --------------------------------------------------------------------------
def irq_domain_set_mapping(domain: irq_domain, hwirq: int, data: irq_data) -> None:
    sched_point(domain, f"revmap{hwirq}", WRITE)
    domain.revmap.setdefault(hwirq, data)  # radix_tree_insert keeps an existing entry


def irq_domain_clear_mapping(domain: irq_domain, hwirq: int) -> None:
    sched_point(domain, f"revmap{hwirq}", WRITE)
    domain.revmap.pop(hwirq, None)


def irq_find_mapping(domain: irq_domain, hwirq: int) -> int:
    """The Linux IRQ that ``hwirq`` of ``domain`` maps to, or 0."""
    sched_point(domain, f"revmap{hwirq}", READ)
    data = domain.revmap.get(hwirq)
    return data.irq if data is not None else 0


# -- irq_data of a level ------------------------------------------------------------------
def irq_domain_get_irq_data(domain: irq_domain, virq: int) -> irq_data | None:
    """The ``irq_data`` of ``virq`` at ``domain``'s level of its hierarchy."""
    d = domain.k.irq.irq_get_irq_data(virq)
    while d is not None:
        if d.domain is domain:
            return d
        d = d.parent_data
    return None


def irq_domain_set_hwirq_and_chip(domain: irq_domain, virq: int, hwirq: int,
                                  chip: irq_chip | None, chip_data: Any) -> int:
    d = irq_domain_get_irq_data(domain, virq)
    if d is None:
        return -ENOENT
    d.hwirq = hwirq
    d.chip = chip if chip is not None else no_irq_chip
    d.chip_data = chip_data
    return 0


def irq_domain_set_info(domain: irq_domain, virq: int, hwirq: int, chip: irq_chip | None,
                        chip_data: Any, handler: Any, handler_data: Any,
                        handler_name: str | None) -> None:
    """Set chip, hwirq and chip data at this level, and the IRQ's flow handler."""
    irq_domain_set_hwirq_and_chip(domain, virq, hwirq, chip, chip_data)
    domain.k.irq.irq_set_handler_name(virq, handler, False, handler_name)
    domain.k.irq.irq_set_handler_data(virq, handler_data)


def irq_domain_reset_irq_data(d: irq_data) -> None:
    d.hwirq = 0
    d.chip = no_irq_chip
    d.chip_data = None


# -- allocation -----------------------------------------------------------------------------
def _alloc_irq_data(domain: irq_domain, virq: int, nr_irqs: int) -> int:
    """One ``irq_data`` per parent level for each IRQ (``irq_domain_alloc_irq_data``)."""
    k = domain.k
    for i in range(nr_irqs):
        child = k.irq.irq_get_irq_data(virq + i)
        assert child is not None  # its descriptor was just allocated
        child.domain = domain
        parent = domain.parent
        while parent is not None:
            d = k.mem.kzalloc(irq_data, child.irq, child.common, owner="irq")
            if d is None:
                _free_irq_data(k, virq, i + 1)
                return -ENOMEM
            d.domain = parent
            child.parent_data = d
            child = d
            parent = parent.parent
    return 0


def _free_irq_data(k: Kernel, virq: int, nr_irqs: int) -> None:
    for i in range(nr_irqs):
        top = k.irq.irq_get_irq_data(virq + i)
        assert top is not None  # the descriptors are freed after their irq_data
        d = top.parent_data
        top.parent_data = None
        top.domain = None
        while d is not None:
            nxt = d.parent_data
            k.mem.kfree(d)
            d = nxt


def irq_domain_alloc_irqs_hierarchy(domain: irq_domain, irq_base: int, nr_irqs: int,
                                    arg: Any) -> int:
    if domain.ops.alloc is None:
        return -ENOSYS
    return domain.ops.alloc(domain, irq_base, nr_irqs, arg)


def irq_domain_alloc_irqs_parent(domain: irq_domain, irq_base: int, nr_irqs: int,
                                 arg: Any) -> int:
    """Called by a domain's ``alloc`` to allocate the same IRQs one level down."""
    if domain.parent is None:
        return -ENOSYS
    return irq_domain_alloc_irqs_hierarchy(domain.parent, irq_base, nr_irqs, arg)


def _insert_irq(k: Kernel, virq: int) -> None:
    d = k.irq.irq_get_irq_data(virq)
    while d is not None:
        domain = d.domain
        assert domain is not None  # every level of an allocated IRQ is in its domain
        domain.mapcount += 1
        irq_domain_set_mapping(domain, d.hwirq, d)
        d = d.parent_data
    k.irq.irq_clear_status_flags(virq, IRQ_NOREQUEST)


def _remove_irq(k: Kernel, virq: int) -> None:
    d = k.irq.irq_get_irq_data(virq)
    while d is not None:
        domain = d.domain
        assert domain is not None  # every level of an allocated IRQ is in its domain
        domain.mapcount -= 1
        irq_domain_clear_mapping(domain, d.hwirq)
        d = d.parent_data


def __irq_domain_alloc_irqs(domain: irq_domain, irq_base: int, nr_irqs: int, node: int,
                            arg: Any, realloc: bool,
                            affinity: list[irq_affinity_desc] | None) -> int:
    """Allocate ``nr_irqs`` IRQs through ``domain``'s hierarchy; first IRQ or -errno."""
    if domain is None:
        return -EINVAL
    k = domain.k
    mutex_lock(domain.root.mutex)
    try:
        if realloc and irq_base >= 0:
            virq = irq_base
        else:
            virq = k.irq.irq_alloc_descs(irq_base, 1, nr_irqs, node, affinity)
            if virq < 0:
                return virq
        if _alloc_irq_data(domain, virq, nr_irqs):
            k.irq.irq_free_descs(virq, nr_irqs)
            return -ENOMEM
        ret = irq_domain_alloc_irqs_hierarchy(domain, virq, nr_irqs, arg)
        if ret < 0:
            _free_irq_data(k, virq, nr_irqs)
            k.irq.irq_free_descs(virq, nr_irqs)
            return ret
        for i in range(nr_irqs):
            _insert_irq(k, virq + i)
        return virq
    finally:
        mutex_unlock(domain.root.mutex)


irq_domain_alloc_irqs_affinity = __irq_domain_alloc_irqs


def irq_domain_alloc_irqs(domain: irq_domain, nr_irqs: int, node: int = -1,
                          arg: Any = None) -> int:
    return __irq_domain_alloc_irqs(domain, -1, nr_irqs, node, arg, False, None)


# -- free --------------------------------------------------------------------------------------
def irq_domain_free_irqs_hierarchy(domain: irq_domain, irq_base: int, nr_irqs: int) -> None:
    if domain.ops.free is None:
        return
    for i in range(nr_irqs):
        if irq_domain_get_irq_data(domain, irq_base + i) is not None:
            domain.ops.free(domain, irq_base + i, 1)


def irq_domain_free_irqs_parent(domain: irq_domain, irq_base: int, nr_irqs: int) -> None:
    if domain.parent is not None:
        irq_domain_free_irqs_hierarchy(domain.parent, irq_base, nr_irqs)


def irq_domain_free_irqs_common(domain: irq_domain, virq: int, nr_irqs: int) -> None:
    for i in range(nr_irqs):
        d = irq_domain_get_irq_data(domain, virq + i)
        if d is not None:
            irq_domain_reset_irq_data(d)
    irq_domain_free_irqs_parent(domain, virq, nr_irqs)


def irq_domain_free_irqs_top(domain: irq_domain, virq: int, nr_irqs: int) -> None:
    """Free the top level: drop handler data and flow handler, reset, free the parents."""
    kirq = domain.k.irq
    for i in range(nr_irqs):
        kirq.irq_set_handler_data(virq + i, None)
        kirq.irq_set_handler(virq + i, None)
    irq_domain_free_irqs_common(domain, virq, nr_irqs)


class DomainMixin(DescTableMixin):
    """``k.irq`` methods of ``irqdomain.c`` that name IRQs by number, and fwnodes."""

    k: Kernel

    def irq_domain_free_irqs(self, virq: int, nr_irqs: int) -> None:
        """Free IRQs allocated with ``irq_domain_alloc_irqs``, then their descriptors."""
        d = self.irq_get_irq_data(virq)
        if d is None or d.domain is None or d.domain.ops.free is None:
            raise IrqError(f"irq_domain_free_irqs({virq}): NULL pointer, cannot free irq")
        domain = d.domain
        mutex_lock(domain.root.mutex)
        try:
            for i in range(nr_irqs):
                _remove_irq(self.k, virq + i)
            irq_domain_free_irqs_hierarchy(domain, virq, nr_irqs)
        finally:
            mutex_unlock(domain.root.mutex)
        _free_irq_data(self.k, virq, nr_irqs)
        self.irq_free_descs(virq, nr_irqs)

    def generic_handle_domain_irq(self, domain: irq_domain, hwirq: int) -> int:
        """Handle the IRQ that ``hwirq`` maps to in ``domain``; 0 or -EINVAL (irqdesc.c's,
        here because it resolves the mapping first)."""
        virq = irq_find_mapping(domain, hwirq)
        if not virq:
            return -EINVAL
        return self.generic_handle_irq(virq)

    def irq_domain_alloc_named_fwnode(self, name: str, *,
                                      owner: str | None = "irq") -> fwnode_handle | None:
        """A fwnode named ``name`` (``owner=None``: a static one, as the arch's at boot)."""
        if owner is None:
            return fwnode_handle(self.k, IRQCHIP_FWNODE_NAMED, name)
        return self.k.mem.kzalloc(fwnode_handle, self.k, IRQCHIP_FWNODE_NAMED, name,
                                  owner=owner)

    def irq_domain_alloc_named_id_fwnode(self, name: str, id_: int) -> fwnode_handle | None:
        """A fwnode named ``name-id`` (the VMD: ``VMD-MSI-<its PCI domain>``)."""
        return self.k.mem.kzalloc(fwnode_handle, self.k, IRQCHIP_FWNODE_NAMED_ID,
                                  f"{name}-{id_}", id_, owner="irq")

    def irq_domain_free_fwnode(self, fwnode: fwnode_handle | None) -> None:
        if fwnode is not None and "_kmem" in fwnode.__dict__:
            self.k.mem.kfree(fwnode)


# -- activation ------------------------------------------------------------------------------
def __irq_domain_activate_irq(d: irq_data | None, reserve: bool) -> int:
    ret = 0
    if d is not None and d.domain is not None:
        domain = d.domain
        if d.parent_data is not None:
            ret = __irq_domain_activate_irq(d.parent_data, reserve)
        if not ret and domain.ops.activate is not None:
            ret = domain.ops.activate(domain, d, reserve)
            if ret and d.parent_data is not None:
                __irq_domain_deactivate_irq(d.parent_data)
    return ret


def __irq_domain_deactivate_irq(d: irq_data | None) -> None:
    if d is not None and d.domain is not None:
        domain = d.domain
        if domain.ops.deactivate is not None:
            domain.ops.deactivate(domain, d)
        if d.parent_data is not None:
            __irq_domain_deactivate_irq(d.parent_data)


def irq_domain_activate_irq(d: irq_data, reserve: bool) -> int:
    """Activate every level, root first; 0 or -errno. A no-op if already activated."""
    ret = 0
    if not irqd_is_activated(d):
        ret = __irq_domain_activate_irq(d, reserve)
    if not ret:
        irqd_set(d, IRQD_ACTIVATED)
    return ret


def irq_domain_deactivate_irq(d: irq_data) -> None:
    """Deactivate every level, top first, if activated."""
    if irqd_is_activated(d):
        __irq_domain_deactivate_irq(d)
        irqd_clear(d, IRQD_ACTIVATED)
