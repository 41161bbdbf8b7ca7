"""Generic MSI: descriptors, MSI domains and their default operations (``kernel/irq/msi.c``,
``include/linux/msi.h``).

An MSI domain is an IRQ domain whose ``host_data`` is a :class:`msi_domain_info`:
the chip of the device level, the flow handler, and :class:`msi_domain_ops`
through which the domain's owner takes part in allocation:

``msi_prepare(domain, dev, nvec, arg)``
    once per allocation; a positive return asks the caller to retry with that
    many vectors (how the VMD cuts a request to its own vector count);
``set_desc(arg, desc)``
    before each descriptor's IRQs are allocated;
``get_hwirq(info, arg)``, ``msi_init(domain, info, virq, hwirq, arg)``
    per IRQ, after the parent domain (if any) has allocated its level — the
    VMD's ``msi_init`` picks a VMD vector and installs ``handle_untracked_irq``;
``msi_free(domain, info, virq)``
    per IRQ on free, before the parent levels go — the VMD waits for its
    vector's SRCU readers here.

With ``MSI_FLAG_ACTIVATE_EARLY`` (every PCI/MSI domain) each IRQ is activated
right after allocation, so its message is in the device before MSI is
enabled there. Activation composes the message with the nearest chip that
can (the x86 vector chip, or the VMD's own chip when the domain has no
parent) and writes it with the device-level chip's ``irq_write_msi_msg``.

Descriptors live per device (Linux: ``dev->msi.data``, an xarray per MSI
domain); the model keeps one :class:`msi_device_data` per ``struct device``
in ``k.irq.msi_dev_data``, created on first use and dropped with its last
descriptor. Descriptor fields of the PCI part (``desc->pci.msi_attrib.*``,
``msix_ctrl``, ``mask_pos``...) are flattened onto :class:`msi_desc`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, cast

from vmdsim.kernel.errno import EEXIST, EINVAL, ENOENT, ENOSPC
from vmdsim.kernel.irq.chip import (
    irq_chip_compose_msi_msg,
    irq_chip_write_msi_msg,
    irqd_is_activated,
)
from vmdsim.kernel.irq.flags import IRQ_SET_MASK_OK_DONE
from vmdsim.kernel.irq.irqdomain import (
    DOMAIN_BUS_PCI_DEVICE_MSI,
    DOMAIN_BUS_PCI_DEVICE_MSIX,
    DOMAIN_BUS_PCI_MSI,
    DOMAIN_BUS_VMD_MSI,
    IRQ_DOMAIN_FLAG_MSI,
    irq_domain,
    irq_domain_activate_irq,
    irq_domain_alloc_irqs_affinity,
    irq_domain_alloc_irqs_parent,
    irq_domain_create_hierarchy,
    irq_domain_deactivate_irq,
    irq_domain_free_irqs_top,
    irq_domain_get_irq_data,
    irq_domain_ops,
    irq_domain_set_hwirq_and_chip,
    irq_domain_update_bus_token,
    irq_find_mapping,
)
from vmdsim.kernel.locking import mutex, raw_spinlock_t
from vmdsim.kernel.shared import KObject, init_private, shared

if TYPE_CHECKING:
    from vmdsim.kernel.core import Kernel
    from vmdsim.kernel.irq.affinity import irq_affinity_desc
    from vmdsim.kernel.irq.chip import irq_chip
    from vmdsim.kernel.irq.irqdesc import irq_data
    from vmdsim.kernel.irq.irqdomain import fwnode_handle

# enum msi_domain_info flags
MSI_FLAG_USE_DEF_DOM_OPS = 1 << 0
MSI_FLAG_USE_DEF_CHIP_OPS = 1 << 1
MSI_FLAG_ACTIVATE_EARLY = 1 << 2
MSI_FLAG_MUST_REACTIVATE = 1 << 3
MSI_FLAG_DEV_SYSFS = 1 << 4
MSI_FLAG_ALLOC_SIMPLE_MSI_DESCS = 1 << 5
MSI_FLAG_FREE_MSI_DESCS = 1 << 6
MSI_FLAG_MULTI_PCI_MSI = 1 << 16
MSI_FLAG_PCI_MSIX = 1 << 17
MSI_FLAG_LEVEL_CAPABLE = 1 << 18
MSI_FLAG_NO_AFFINITY = 1 << 21


class msi_msg:
    """``struct msi_msg``: the address/data pair a device writes to signal an interrupt."""

    __slots__ = ("address_lo", "address_hi", "data")

    def __init__(self, address_lo: int = 0, address_hi: int = 0, data: int = 0) -> None:
        self.address_lo = address_lo
        self.address_hi = address_hi
        self.data = data

    def copy(self) -> msi_msg:
        return msi_msg(self.address_lo, self.address_hi, self.data)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, msi_msg) and (self.address_lo, self.address_hi, self.data) == (
            other.address_lo, other.address_hi, other.data)

    def __repr__(self) -> str:
        return f"<msi_msg {self.address_hi:#x}:{self.address_lo:#010x} data {self.data:#x}>"


class msi_desc(KObject):
    """``struct msi_desc``: one MSI (a block of ``nvec_used`` vectors) or one MSI-X entry.

    ``irq`` is its first Linux IRQ (0 until allocated), ``msg`` the message
    last written, ``affinity`` the per-vector masks from ``PCI_IRQ_AFFINITY``.
    """

    msg = shared()
    msix_ctrl = shared()
    msi_mask = shared()

    def __init__(self, dev: Any, nvec: int, affinity: list[irq_affinity_desc] | None) -> None:
        init_private(self, msg=msi_msg(), msix_ctrl=0, msi_mask=0)
        self.dev = dev  # the struct device
        self.pdev: Any = None  # the pci_dev (Linux: container_of(dev))
        self.irq = 0
        self.nvec_used = nvec
        self.affinity = affinity
        self.msi_index = 0
        # desc->pci.* (flattened)
        self.is_msix = False
        self.is_64 = False
        self.can_mask = False
        self.is_virtual = False
        self.multi_cap = 0
        self.multiple = 0
        self.default_irq = 0
        self.mask_pos = 0
        self.mask_base: Any = None  # the entry's iomem in the MSI-X table

    def __repr__(self) -> str:
        kind = "MSI-X" if self.is_msix else "MSI"
        return f"<msi_desc {kind} {self.msi_index} irq {self.irq}>"


class msi_alloc_info_t:
    """``msi_alloc_info_t`` (x86 ``struct irq_alloc_info``): the allocation's scratch pad."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        """``memset(arg, 0, sizeof(*arg))``."""
        self.desc: msi_desc | None = None
        self.hwirq = 0
        self.flags = 0
        self.type = 0
        self.mask: frozenset[int] | None = None


class msi_domain_ops:
    """``struct msi_domain_ops``."""

    def __init__(self, *, get_hwirq: Any = None, msi_init: Any = None, msi_free: Any = None,
                 msi_check: Any = None, msi_prepare: Any = None, set_desc: Any = None) -> None:
        self.get_hwirq = get_hwirq
        self.msi_init = msi_init
        self.msi_free = msi_free
        self.msi_check = msi_check
        self.msi_prepare = msi_prepare
        self.set_desc = set_desc


class msi_domain_info:
    """``struct msi_domain_info``: flags, ops, the device-level chip and flow handler."""

    def __init__(self, *, flags: int = 0, ops: msi_domain_ops | None = None,
                 chip: irq_chip | None = None, chip_data: Any = None, handler: Any = None,
                 handler_data: Any = None, handler_name: str | None = None,
                 data: Any = None, bus_token: int = 0) -> None:
        self.flags = flags
        self.bus_token = bus_token
        self.ops = ops
        self.chip = chip
        self.chip_data = chip_data
        self.handler = handler
        self.handler_data = handler_data
        self.handler_name = handler_name
        self.data = data
        self.hwsize = 0  # a device domain's: the device's vector table size


# -- default ops ----------------------------------------------------------------------------
def msi_domain_ops_get_hwirq(info: msi_domain_info, arg: msi_alloc_info_t) -> int:
    return arg.hwirq


def msi_domain_ops_prepare(domain: irq_domain, dev: Any, nvec: int,
                           arg: msi_alloc_info_t) -> int:
    arg.reset()
    return 0


def msi_domain_ops_set_desc(arg: msi_alloc_info_t, desc: msi_desc) -> None:
    arg.desc = desc


def msi_domain_ops_init(domain: irq_domain, info: msi_domain_info, virq: int, hwirq: int,
                        arg: msi_alloc_info_t) -> int:
    irq_domain_set_hwirq_and_chip(domain, virq, hwirq, info.chip, info.chip_data)
    if info.handler is not None and info.handler_name is not None:
        domain.k.irq.irq_set_handler_name(virq, info.handler, False, info.handler_name)
        if info.handler_data is not None:
            domain.k.irq.irq_set_handler_data(virq, info.handler_data)
    return 0


def msi_domain_ops_check(domain: irq_domain, info: msi_domain_info, dev: Any) -> int:
    return 0


msi_domain_ops_default = msi_domain_ops(
    get_hwirq=msi_domain_ops_get_hwirq, msi_init=msi_domain_ops_init,
    msi_check=msi_domain_ops_check, msi_prepare=msi_domain_ops_prepare,
    set_desc=msi_domain_ops_set_desc)


def msi_domain_update_dom_ops(info: msi_domain_info) -> None:
    ops = info.ops
    if ops is None:
        info.ops = msi_domain_ops_default
        return
    for name in ("get_hwirq", "msi_init", "msi_check", "msi_prepare", "set_desc"):
        if getattr(ops, name) is None:
            setattr(ops, name, getattr(msi_domain_ops_default, name))


def msi_domain_update_chip_ops(info: msi_domain_info) -> None:
    chip = info.chip
    if chip is None or chip.irq_mask is None or chip.irq_unmask is None:
        raise ValueError("msi_create_irq_domain: the chip needs irq_mask and irq_unmask "
                         "(or MSI_FLAG_USE_DEF_CHIP_OPS on a PCI/MSI domain)")
    if chip.irq_set_affinity is None and not info.flags & MSI_FLAG_NO_AFFINITY:
        chip.irq_set_affinity = msi_domain_set_affinity


# -- the irq_domain_ops of every MSI domain -------------------------------------------------
def msi_domain_set_affinity(d: irq_data, mask: frozenset[int], force: bool) -> int:
    parent = d.parent_data
    assert parent is not None  # the affinity setter of a domain with a parent level
    ret = parent.chip.irq_set_affinity(parent, mask, force)
    if ret >= 0 and ret != IRQ_SET_MASK_OK_DONE:
        msg = msi_msg()
        if irq_chip_compose_msi_msg(d, msg):
            raise RuntimeError(f"msi_domain_set_affinity: IRQ {d.irq} cannot compose a message")
        irq_chip_write_msi_msg(d, msg)
    return ret


def msi_domain_activate(domain: irq_domain, d: irq_data, early: bool) -> int:
    msg = msi_msg()
    ret = irq_chip_compose_msi_msg(d, msg)
    if ret:
        return ret
    irq_chip_write_msi_msg(d, msg)
    return 0


def msi_domain_deactivate(domain: irq_domain, d: irq_data) -> None:
    irq_chip_write_msi_msg(d, msi_msg())


def msi_domain_alloc(domain: irq_domain, virq: int, nr_irqs: int, arg: msi_alloc_info_t) -> int:
    info: msi_domain_info = domain.host_data
    ops = info.ops
    assert ops is not None  # an MSI domain's info has its ops
    hwirq = ops.get_hwirq(info, arg)
    if irq_find_mapping(domain, hwirq) > 0:
        return -EEXIST
    if domain.parent is not None:
        ret = irq_domain_alloc_irqs_parent(domain, virq, nr_irqs, arg)
        if ret < 0:
            return ret
    for i in range(nr_irqs):
        ret = ops.msi_init(domain, info, virq + i, hwirq + i, arg)
        if ret < 0:
            if ops.msi_free is not None:
                # Down to index 0, as Linux since Jinjie Ruan's fix of October 2024 (Fixes:
                # f3cf8bb0d6c3); before it, the loop's `i > 0` never freed index 0.
                for j in range(i - 1, -1, -1):
                    ops.msi_free(domain, info, virq + j)
            irq_domain_free_irqs_top(domain, virq, nr_irqs)
            return ret
    return 0


def msi_domain_free(domain: irq_domain, virq: int, nr_irqs: int) -> None:
    info: msi_domain_info = domain.host_data
    assert info.ops is not None  # an MSI domain's info has its ops
    if info.ops.msi_free is not None:
        for i in range(nr_irqs):
            info.ops.msi_free(domain, info, virq + i)
    irq_domain_free_irqs_top(domain, virq, nr_irqs)


msi_irq_domain_ops = irq_domain_ops(alloc=msi_domain_alloc, free=msi_domain_free,
                                    activate=msi_domain_activate,
                                    deactivate=msi_domain_deactivate)


def msi_create_irq_domain(fwnode: fwnode_handle | None, info: msi_domain_info,
                          parent: irq_domain | None, *, k: Kernel | None = None,
                          owner: str | None = "irq", extra_flags: int = 0) -> irq_domain | None:
    """An MSI domain for ``info`` under ``parent`` (None: no parent, as the VMD's);
    ``extra_flags`` are ``__msi_create_irq_domain``'s (a device domain's)."""
    if info.flags & MSI_FLAG_USE_DEF_DOM_OPS:
        msi_domain_update_dom_ops(info)
    if info.flags & MSI_FLAG_USE_DEF_CHIP_OPS:
        msi_domain_update_chip_ops(info)
    domain = irq_domain_create_hierarchy(parent, IRQ_DOMAIN_FLAG_MSI | extra_flags, 0, fwnode,
                                         msi_irq_domain_ops, info, k=k, owner=owner)
    if domain is not None:
        irq_domain_update_bus_token(domain, info.bus_token)
    return domain


# -- per-device descriptors --------------------------------------------------------------------
class msi_device_data:
    """``struct msi_device_data``: a device's MSI descriptors (by index) and what maps them."""

    def __init__(self, dev: Any) -> None:
        self.descs: dict[int, msi_desc] = {}
        self.domain: irq_domain | None = None
        self.device_domains: dict[int, irq_domain] = {}  # msi_parent.py (v6.2+)
        self.devres_added = False  # msi_device_data_release is registered on the device
        # msi_lock_descs()
        self.lock = mutex(f"{dev.init_name or 'device'}.msi.mutex", key="msi_device_data.mutex")
        # What Linux keeps in struct pci_dev, for a PCI device:
        self.pdev: Any = None
        self.msix_base: Any = None
        self.is_msi_managed = False
        self.msi_lock = raw_spinlock_t(f"{dev.init_name or 'device'}.msi_lock", key="msi_lock")


def msi_setup_device_data(dev: Any) -> msi_device_data:
    table = dev.k.irq.msi_dev_data
    md = table.get(dev)
    if md is None:
        md = table[dev] = msi_device_data(dev)
    return md


def msi_device_data_get(dev: Any) -> msi_device_data | None:
    return dev.k.irq.msi_dev_data.get(dev)


def msi_insert_msi_desc(dev: Any, desc: msi_desc, index: int) -> None:
    md = msi_setup_device_data(dev)
    desc.msi_index = index
    md.descs[index] = desc


def msi_for_each_desc(dev: Any) -> list[msi_desc]:
    md = msi_device_data_get(dev)
    return [md.descs[i] for i in sorted(md.descs)] if md is not None else []


def msi_first_desc(dev: Any) -> msi_desc | None:
    descs = msi_for_each_desc(dev)
    return descs[0] if descs else None


def msi_free_msi_descs(dev: Any) -> None:
    """Free every descriptor of ``dev`` (and forget its per-device data if nothing is left)."""
    md = msi_device_data_get(dev)
    if md is None:
        return
    for index in sorted(md.descs):
        dev.k.mem.kfree(md.descs.pop(index))


def msi_free_device_data_if_unused(dev: Any) -> None:
    """Model: forget ``dev``'s MSI data once nothing holds it (no descriptor, no mapped
    MSI-X table, no pcim release pending, no devres of its own). Linux frees it with the
    device's devres (``msi_device_data_release``, msi_parent.py), which the model adds
    only where a device domain can exist (v6.2+)."""
    md = msi_device_data_get(dev)
    if md is not None and not md.descs and md.msix_base is None and \
            not md.is_msi_managed and not md.devres_added and not md.device_domains:
        del dev.k.irq.msi_dev_data[dev]


def msi_get_virq(dev: Any, index: int) -> int:
    """The Linux IRQ of vector ``index`` (MSI: the block's first + index); -ENOENT if none."""
    md = msi_device_data_get(dev)
    if md is None or not md.descs:
        return -ENOENT
    first = md.descs[min(md.descs)]
    if not first.is_msix:
        if index < first.nvec_used and first.irq:
            return first.irq + index
        return -ENOENT
    desc = md.descs.get(index)
    return desc.irq if desc is not None and desc.irq else -ENOENT


# -- allocation for a device -------------------------------------------------------------------
PCI_BUS_TOKENS = (DOMAIN_BUS_PCI_MSI, DOMAIN_BUS_PCI_DEVICE_MSI, DOMAIN_BUS_PCI_DEVICE_MSIX,
                  DOMAIN_BUS_VMD_MSI)


def msi_handle_pci_fail(domain: irq_domain, desc: msi_desc, allocated: int) -> int:
    if domain.bus_token not in PCI_BUS_TOKENS:
        return -ENOSPC
    if desc.nvec_used > 1:
        return 1  # let a failed multi-MSI allocation retry with one vector
    return allocated if allocated else -ENOSPC


def msi_domain_prepare_irqs(domain: irq_domain, dev: Any, nvec: int,
                            arg: msi_alloc_info_t) -> int:
    info: msi_domain_info = domain.host_data
    ops = info.ops
    assert ops is not None  # an MSI domain's info has its ops
    ret = ops.msi_check(domain, info, dev) if ops.msi_check is not None else 0
    if ret == 0:
        ret = ops.msi_prepare(domain, dev, nvec, arg)
    return ret


def _alloc_descs_irqs(domain: irq_domain, dev: Any, nirqs: int) -> int:
    info: msi_domain_info = domain.host_data
    ops = info.ops
    assert ops is not None  # an MSI domain's info has its ops
    arg = msi_alloc_info_t()
    ret = msi_domain_prepare_irqs(domain, dev, nirqs, arg)
    if ret:
        return ret
    activate = bool(info.flags & MSI_FLAG_ACTIVATE_EARLY)
    kirq = dev.k.irq
    allocated = 0
    for desc in msi_for_each_desc(dev):
        if desc.irq:
            continue
        if allocated >= nirqs:
            return -EINVAL
        ops.set_desc(arg, desc)
        virq = irq_domain_alloc_irqs_affinity(domain, -1, desc.nvec_used, -1, arg, False,
                                              desc.affinity)
        if virq < 0:
            return msi_handle_pci_fail(domain, desc, allocated)
        for i in range(desc.nvec_used):
            kirq.irq_set_msi_desc_off(virq, i, desc)
            if activate:  # msi_init_virq(); every CPU is online, so managed IRQs start too
                d = cast("irq_data", irq_domain_get_irq_data(domain, virq + i))  # just made
                ret = irq_domain_activate_irq(d, False)
                if ret:
                    return ret
        allocated += 1
    return 0


def msi_domain_alloc_irqs_all_locked(domain: irq_domain, dev: Any, nirqs: int) -> int:
    """Allocate IRQs for every descriptor of ``dev`` not yet mapped.

    0 on success; a positive count asks the caller to retry with that many
    vectors; -errno otherwise. On any failure everything is freed again
    (with ``MSI_FLAG_FREE_MSI_DESCS``, the descriptors too).
    """
    md = msi_setup_device_data(dev)
    md.domain = domain
    ret = _alloc_descs_irqs(domain, dev, nirqs)
    if ret:
        msi_domain_free_irqs_all_locked(domain, dev)
    return ret


def msi_domain_free_irqs_all_locked(domain: irq_domain, dev: Any) -> None:
    """Deactivate and free every IRQ of ``dev``'s descriptors."""
    info: msi_domain_info = domain.host_data
    kirq = dev.k.irq
    for desc in msi_for_each_desc(dev):
        if not desc.irq:
            continue
        for i in range(desc.nvec_used):
            d = irq_domain_get_irq_data(domain, desc.irq + i)
            if d is not None and irqd_is_activated(d):
                irq_domain_deactivate_irq(d)
        kirq.irq_domain_free_irqs(desc.irq, desc.nvec_used)
        desc.irq = 0
    if info.flags & MSI_FLAG_FREE_MSI_DESCS:
        msi_free_msi_descs(dev)
