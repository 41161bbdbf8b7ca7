"""Sizing bridge windows and assigning resources (``drivers/pci/setup-bus.c``).

Two passes, as in Linux:

1. ``__pci_bus_size_bridges`` works bottom-up: a bridge's windows are sized
   from what sits below it (BARs and the windows of bridges further down).
   With a 64-bit prefetchable window, 64-bit prefetchable BARs go there and
   everything else in the non-prefetchable window; without one, a 32-bit
   prefetchable window takes the prefetchable BARs. Windows are aligned and
   sized to at least 1 MiB (``calculate_mem_align``/``calculate_memsize``).
   A hotplug bridge also asks for optional extra space (``pci=hpmmiosize``,
   2 MiB each by default), recorded on the ``realloc_head`` list.
2. ``__pci_bus_assign_resources`` works top-down: on each bus, the unassigned
   resources of its devices (BARs and the windows of bridges on it) are
   allocated largest alignment first from the bus's windows, first with the
   optional sizes and, if anything fails, again with required sizes only
   (releasing the resource types that failed) and then the optional extra
   added where it still fits; BARs are written to the devices, then each
   bridge's base/limit registers are programmed (``pci_setup_bridge``; an
   unused window is closed: base above limit).

Simplifications: no I/O space (I/O windows and BARs are never sized or
programmed), no cardbus, no SR-IOV; no retry loop that releases and regrows
bridge windows when assignment fails (``pci=realloc``): a resource that does
not fit stays unassigned (BARs keep ``IORESOURCE_UNSET``, so enabling the
device fails with -EINVAL; windows are disabled). Growing an assigned window
by its optional size is done by reallocating it within its parent before
anything is placed below it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, cast

from vmdsim.hw.regs import (
    PCI_BRIDGE_CONTROL,
    PCI_MEMORY_BASE,
    PCI_PREF_BASE_UPPER32,
    PCI_PREF_LIMIT_UPPER32,
    PCI_PREF_MEMORY_BASE,
    PCI_PREF_RANGE_TYPE_64,
)
from vmdsim.kernel.errno import EBUSY
from vmdsim.kernel.pci.access import pci_write_config_dword, pci_write_config_word
from vmdsim.kernel.pci.bus import pcibios_resource_to_bus
from vmdsim.kernel.pci.pci import do_pci_enable_device, pci_set_master
from vmdsim.kernel.pci.pci_h import (
    PCI_BRIDGE_MEM_WINDOW,
    PCI_BRIDGE_PREF_MEM_WINDOW,
    PCI_BRIDGE_RESOURCES,
    PCI_CLASS_BRIDGE_HOST,
    PCI_CLASS_NOT_DEFINED,
    PCI_NUM_RESOURCES,
    pci_bus,
    pci_bus_for_each_resource,
    pci_dev,
    pci_is_enabled,
    pci_is_root_bus,
)
from vmdsim.kernel.pci.resource import (
    IORESOURCE_IO,
    IORESOURCE_MEM,
    IORESOURCE_MEM_64,
    IORESOURCE_PCI_FIXED,
    IORESOURCE_PREFETCH,
    IORESOURCE_STARTALIGN,
    IORESOURCE_UNSET,
    __request_resource,
    allocate_resource,
    format_resource,
    release_resource,
    resource,
    resource_size,
)
from vmdsim.kernel.pci.setup_res import (
    pci_assign_resource,
    pci_claim_resource,
    pci_resource_alignment,
    pci_update_resource,
    pcibios_align_resource,
    resource_name,
)
from vmdsim.kernel.pci.subsys import pci_info

if TYPE_CHECKING:
    from vmdsim.kernel.core import Kernel

SZ_1M = 1 << 20
PCI_P2P_DEFAULT_MEM_ALIGN = SZ_1M


class pci_dev_resource:
    """An entry of the sort and realloc lists: a device's resource and its extras."""

    __slots__ = ("dev", "res", "start", "end", "flags", "add_size", "min_align")

    def __init__(self, dev: pci_dev, res: resource, add_size: int = 0, min_align: int = 0):
        self.dev, self.res = dev, res
        self.start, self.end, self.flags = res.start, res.end, res.flags
        self.add_size, self.min_align = add_size, min_align


Realloc = list[pci_dev_resource]


def _resno(dev: pci_dev, res: resource) -> int:
    for i, r in enumerate(dev.resource):
        if r is res:
            return i
    raise ValueError(f"{res!r} is not a resource of {dev!r}")


def _get_res_add(realloc_head: Realloc | None, res: resource) -> pci_dev_resource | None:
    if realloc_head:
        for e in realloc_head:
            if e.res is res:
                return e
    return None


def _remove_from_list(realloc_head: Realloc | None, res: resource) -> None:
    if realloc_head:
        realloc_head[:] = [e for e in realloc_head if e.res is not res]


def reset_resource(res: resource) -> None:
    res.start = 0
    res.end = 0
    res.flags = 0


# -- sizing ------------------------------------------------------------------------------
def pci_bridge_check_ranges(bus: pci_bus) -> None:
    """Mark which windows the bridge above ``bus`` implements."""
    bridge = bus.self
    assert bridge is not None  # called for a bus below a bridge
    b_res = bridge.resource
    b_res[PCI_BRIDGE_MEM_WINDOW].flags |= IORESOURCE_MEM
    if bridge.pref_window:
        b_res[PCI_BRIDGE_PREF_MEM_WINDOW].flags |= IORESOURCE_MEM | IORESOURCE_PREFETCH
        if bridge.pref_64_window:
            b_res[PCI_BRIDGE_PREF_MEM_WINDOW].flags |= IORESOURCE_MEM_64 | PCI_PREF_RANGE_TYPE_64


def find_bus_resource_of_type(bus: pci_bus, type_mask: int, type_: int) -> resource | None:
    for r in pci_bus_for_each_resource(bus):
        if r.flags & type_mask == type_ and r.parent is None:
            return r
    return None


def _align_up(x: int, a: int) -> int:
    return (x + a - 1) // a * a


def calculate_memsize(size: int, min_size: int, add_size: int, children_add_size: int,
                      old_size: int, align: int) -> int:
    if size < min_size:
        size = min_size
    if old_size == 1:
        old_size = 0
    size = max(size, add_size) + children_add_size
    return _align_up(max(size, old_size), align)


def calculate_mem_align(aligns: list[int], max_order: int) -> int:
    """The smallest window alignment that still lets every BAR be naturally aligned."""
    align = 0
    min_align = 0
    for order in range(max_order + 1):
        align1 = 1 << (order + 20)
        if not align:
            min_align = align1
        elif _align_up(align + min_align, min_align) < align1:
            min_align = align1 >> 1
        align += aligns[order]
    return min_align


def pbus_size_mem(bus: pci_bus, mask: int, type_: int, type2: int, type3: int, add_size: int,
                  realloc_head: Realloc | None) -> int:
    """Size the window of the bridge above ``bus`` that holds resources of ``type*``."""
    b_res = find_bus_resource_of_type(bus, mask | IORESOURCE_PREFETCH, type_)
    if b_res is None:
        return -28  # -ENOSPC: the bridge has no such window
    aligns = [0] * 28
    max_order = 0
    size = 0
    children_add_size = 0
    add_align = 0
    for dev in bus.devices:
        for i, r in enumerate(dev.resource):
            if r.parent is not None or r.flags & IORESOURCE_PCI_FIXED:
                continue
            if r.flags & mask not in (type_, type2, type3):
                continue
            r_size = resource_size(r)
            align = pci_resource_alignment(dev, r)
            order = max(align.bit_length() - 1 - 20, 0) if align else 0
            if order >= len(aligns):
                pci_info(dev, f"{resource_name(dev, i)} {format_resource(r)}: disabling; "
                              f"bad alignment {align:#x}")
                r.flags = 0
                continue
            size += max(r_size, align)
            if r_size <= align:
                aligns[order] += align
            max_order = max(max_order, order)
            e = _get_res_add(realloc_head, r)
            if e is not None:
                children_add_size += e.add_size
                add_align = max(add_align, e.min_align)
    win_align = PCI_P2P_DEFAULT_MEM_ALIGN
    min_align = max(calculate_mem_align(aligns, max_order), win_align)
    old_size = resource_size(b_res)
    size0 = calculate_memsize(size, 0, 0, 0, old_size, min_align)
    add_align = max(min_align, add_align)
    if realloc_head is None or (not add_size and not children_add_size):
        size1 = size0
    else:
        size1 = calculate_memsize(size, 0, add_size, children_add_size, old_size, add_align)
    if not size0 and not size1:
        if bus.self is not None and (b_res.start or b_res.end):
            pci_info(bus.self, f"disabling bridge window {format_resource(b_res)} to "
                               f"{format_resource(bus.busn_res)} (unused)")
        b_res.flags = 0
        return 0
    b_res.start = min_align
    b_res.end = size0 + min_align - 1
    b_res.flags |= IORESOURCE_STARTALIGN
    if bus.self is not None and size1 > size0 and realloc_head is not None:
        realloc_head.append(pci_dev_resource(bus.self, b_res, size1 - size0, add_align))
        pci_info(bus.self, f"bridge window {format_resource(b_res)} to "
                           f"{format_resource(bus.busn_res)} add_size {size1 - size0:#x} "
                           f"add_align {add_align:#x}")
    return 0


def __pci_bus_size_bridges(bus: pci_bus, realloc_head: Realloc | None) -> None:
    for dev in bus.devices:
        b = dev.subordinate
        if b is None:
            continue
        __pci_bus_size_bridges(b, realloc_head)
    if pci_is_root_bus(bus):
        return
    k = bus.k
    pci_bridge_check_ranges(bus)
    add_mmio = add_pref = 0
    if cast(pci_dev, bus.self).is_hotplug_bridge:  # not a root bus: it has a bridge
        add_mmio = k.pci.pci_hotplug_mmio_size
        add_pref = k.pci.pci_hotplug_mmio_pref_size
    pref = cast(pci_dev, bus.self).resource[PCI_BRIDGE_PREF_MEM_WINDOW]
    mask = IORESOURCE_MEM
    prefmask = IORESOURCE_MEM | IORESOURCE_PREFETCH
    type2 = type3 = 0
    if pref.flags & IORESOURCE_MEM_64:
        prefmask |= IORESOURCE_MEM_64
        ret = pbus_size_mem(bus, prefmask, prefmask, prefmask, prefmask,
                            add_pref if realloc_head is not None else 0, realloc_head)
        if ret == 0:
            # 64-bit prefetchable BARs go there; all others (32-bit prefetchable too)
            # go in the non-prefetchable window.
            mask = prefmask
            type2 = prefmask & ~IORESOURCE_MEM_64
            type3 = prefmask & ~IORESOURCE_PREFETCH
    if not type2:
        prefmask &= ~IORESOURCE_MEM_64
        ret = pbus_size_mem(bus, prefmask, prefmask, prefmask, prefmask,
                            add_pref if realloc_head is not None else 0, realloc_head)
        if ret == 0:
            mask = prefmask
        else:
            add_mmio += add_pref
        type2 = type3 = IORESOURCE_MEM
    pbus_size_mem(bus, mask, IORESOURCE_MEM, type2, type3,
                  add_mmio if realloc_head is not None else 0, realloc_head)


def pci_bus_size_bridges(bus: pci_bus) -> None:
    """Size every bridge window below ``bus`` (required sizes only)."""
    __pci_bus_size_bridges(bus, None)


# -- assignment -------------------------------------------------------------------------
def pdev_sort_resources(dev: pci_dev, head: list[pci_dev_resource]) -> None:
    """Add ``dev``'s unassigned resources to ``head``, kept sorted by alignment (largest
    first; equal alignments keep device order)."""
    cls = dev.class_ >> 8
    if cls in (PCI_CLASS_NOT_DEFINED, PCI_CLASS_BRIDGE_HOST):
        return
    for i, r in enumerate(dev.resource):
        if r.flags & IORESOURCE_PCI_FIXED or not r.flags or r.parent is not None:
            continue
        if r.flags & IORESOURCE_IO:
            continue  # no I/O space in the model
        r_align = pci_resource_alignment(dev, r)
        if not r_align:
            pci_info(dev, f"{resource_name(dev, i)} {format_resource(r)}: alignment must "
                          "not be zero")
            continue
        entry = pci_dev_resource(dev, r)
        pos = len(head)
        for j, e in enumerate(head):
            if r_align > pci_resource_alignment(e.dev, e.res):
                pos = j
                break
        head.insert(pos, entry)


def _assign_requested(head: list[pci_dev_resource], fail: list[pci_dev_resource] | None,
                      optional: bool) -> None:
    for e in head:
        res = e.res
        if not resource_size(res) or not res.flags:
            continue
        idx = _resno(e.dev, res)
        if pci_assign_resource(e.dev, idx):
            if fail is not None:
                fail.append(pci_dev_resource(e.dev, res))
            if not optional:
                if idx >= PCI_BRIDGE_RESOURCES:
                    reset_resource(res)  # a window that does not fit is disabled
                # a BAR keeps its size and IORESOURCE_UNSET: enabling the device will fail


def _need_to_release(mask: int, res: resource) -> bool:
    if res.flags & IORESOURCE_IO:
        return bool(mask & IORESOURCE_IO)
    if res.flags & IORESOURCE_PREFETCH:
        if mask & IORESOURCE_PREFETCH:
            return True
        # the caller asks only about assigned resources: res has a parent
        return (bool(mask & IORESOURCE_MEM)
                and not cast(resource, res.parent).flags & IORESOURCE_PREFETCH)
    if res.flags & IORESOURCE_MEM:
        return bool(mask & IORESOURCE_MEM)
    return False


def reallocate_resource(root: resource, old: resource, newsize: int, align: int) -> int:
    """Grow ``old`` to ``newsize`` inside ``root`` (in place or moved); 0 or -EBUSY."""
    if old.child is not None:
        return -EBUSY
    start, end = old.start, old.end
    release_resource(old)
    if allocate_resource(root, old, newsize, root.start, root.end, align,
                         pcibios_align_resource, None) == 0:
        return 0
    old.start, old.end = start, end
    if __request_resource(root, old) is not None:
        raise RuntimeError(f"reallocate_resource: cannot put {old!r} back")
    return -EBUSY


def pci_reassign_resource(dev: pci_dev, resno: int, addsize: int, min_align: int) -> int:
    res = dev.resource[resno]
    if res.parent is None:
        return -22  # -EINVAL
    new_size = resource_size(res) + addsize
    align = min_align or resource_size(res)
    old_start = res.start
    ret = reallocate_resource(res.parent, res, new_size, align)
    if ret:
        return ret
    pci_info(dev, f"{resource_name(dev, resno)} {format_resource(res)}: "
                  f"{'expanded' if res.start == old_start else 'reassigned'} by {addsize:#x}")
    if resno < PCI_BRIDGE_RESOURCES:
        pci_update_resource(dev, resno)
    return 0


def reassign_resources_sorted(realloc_head: Realloc, head: list[pci_dev_resource]) -> None:
    """Give the optional extra to resources of ``head`` that still can take it."""
    in_head = {id(e.res) for e in head}
    for add in list(realloc_head):
        res = add.res
        if id(res) not in in_head:
            continue
        realloc_head.remove(add)
        if not res.flags:
            continue
        idx = _resno(add.dev, res)
        if not resource_size(res):
            res.start = add.min_align
            res.end = add.min_align + add.add_size - 1
            if pci_assign_resource(add.dev, idx):
                reset_resource(res)
        else:
            if pci_reassign_resource(add.dev, idx, add.add_size, add.min_align):
                pci_info(add.dev, f"{resource_name(add.dev, idx)} {format_resource(res)}: "
                                  f"failed to add {add.add_size:#x}")


def __assign_resources_sorted(head: list[pci_dev_resource], realloc_head: Realloc | None,
                              fail_head: list[pci_dev_resource] | None) -> None:
    if realloc_head:
        saved = [pci_dev_resource(e.dev, e.res) for e in head]
        for e in head:
            add = _get_res_add(realloc_head, e.res)
            if add is None:
                continue
            e.res.end += add.add_size
            if e.res.flags & IORESOURCE_STARTALIGN and add.min_align > e.res.start:
                r_size = resource_size(e.res)
                e.res.start = add.min_align
                e.res.end = add.min_align + r_size - 1
        head.sort(key=lambda e: -pci_resource_alignment(e.dev, e.res))
        local_fail: list[pci_dev_resource] = []
        _assign_requested(head, local_fail, optional=True)
        if not local_fail:
            for e in head:
                _remove_from_list(realloc_head, e.res)
            return
        fail_type = 0
        for f in local_fail:
            fail_type |= f.flags
        fail_type &= IORESOURCE_IO | IORESOURCE_MEM | IORESOURCE_PREFETCH
        keep = []
        for e in head:
            if e.res.parent is not None and not _need_to_release(fail_type, e.res):
                _remove_from_list(realloc_head, e.res)
                keep.append(e)
        head[:] = [e for e in head if e not in keep]
        keep_ids = {id(e.res) for e in keep}
        for e in head:
            if e.res.parent is not None:
                release_resource(e.res)
        for s in saved:
            if id(s.res) in keep_ids:
                continue
            s.res.start, s.res.end, s.res.flags = s.start, s.end, s.flags
        head.sort(key=lambda e: -pci_resource_alignment(e.dev, e.res))
    _assign_requested(head, fail_head, optional=False)
    if realloc_head is not None:
        reassign_resources_sorted(realloc_head, head)


def pbus_assign_resources_sorted(bus: pci_bus, realloc_head: Realloc | None,
                                 fail_head: list[pci_dev_resource] | None) -> None:
    head: list[pci_dev_resource] = []
    for dev in bus.devices:
        pdev_sort_resources(dev, head)
    __assign_resources_sorted(head, realloc_head, fail_head)


def __pci_bus_assign_resources(bus: pci_bus, realloc_head: Realloc | None,
                               fail_head: list[pci_dev_resource] | None) -> None:
    pbus_assign_resources_sorted(bus, realloc_head, fail_head)
    for dev in list(bus.devices):
        b = dev.subordinate
        if b is None:
            continue
        __pci_bus_assign_resources(b, realloc_head, fail_head)
        if not pci_is_enabled(dev):
            pci_setup_bridge(b)


def pci_bus_assign_resources(bus: pci_bus) -> None:
    """Assign every unassigned resource below ``bus`` and program the bridges."""
    __pci_bus_assign_resources(bus, None, None)


# -- programming a bridge ------------------------------------------------------------------
def pci_setup_bridge_mmio(bridge: pci_dev) -> None:
    res = bridge.resource[PCI_BRIDGE_MEM_WINDOW]
    if res.flags & IORESOURCE_MEM:
        start, end = pcibios_resource_to_bus(bridge.bus, res)
        val = ((start >> 16) & 0xFFF0) | (end & 0xFFF00000)
        pci_info(bridge, f"  bridge window {format_resource(res)}")
    else:
        val = 0x0000FFF0  # base above limit: closed
    pci_write_config_dword(bridge, PCI_MEMORY_BASE, val)


def pci_setup_bridge_mmio_pref(bridge: pci_dev) -> None:
    # Clear the upper limit first so a half-programmed window never decodes.
    pci_write_config_dword(bridge, PCI_PREF_LIMIT_UPPER32, 0)
    bu = lu = 0
    res = bridge.resource[PCI_BRIDGE_PREF_MEM_WINDOW]
    if res.flags & IORESOURCE_PREFETCH:
        start, end = pcibios_resource_to_bus(bridge.bus, res)
        val = ((start >> 16) & 0xFFF0) | (end & 0xFFF00000)
        if res.flags & IORESOURCE_MEM_64:
            bu, lu = start >> 32, end >> 32
        pci_info(bridge, f"  bridge window {format_resource(res)}")
    else:
        val = 0x0000FFF0
    pci_write_config_dword(bridge, PCI_PREF_MEMORY_BASE, val)
    pci_write_config_dword(bridge, PCI_PREF_BASE_UPPER32, bu)
    pci_write_config_dword(bridge, PCI_PREF_LIMIT_UPPER32, lu)


def pci_setup_bridge(bus: pci_bus) -> None:
    """Program the windows of the bridge above ``bus`` from its resources."""
    bridge = bus.self
    assert bridge is not None  # a bus below a bridge
    pci_info(bridge, f"PCI bridge to {format_resource(bus.busn_res)}")
    pci_setup_bridge_mmio(bridge)
    pci_setup_bridge_mmio_pref(bridge)
    pci_write_config_word(bridge, PCI_BRIDGE_CONTROL, bus.bridge_ctl)


# -- the entry points ------------------------------------------------------------------
def pci_assign_unassigned_root_bus_resources(bus: pci_bus) -> None:
    realloc: Realloc = []
    fail: list[pci_dev_resource] = []
    __pci_bus_size_bridges(bus, realloc)
    __pci_bus_assign_resources(bus, realloc, fail)
    realloc.clear()


def pci_assign_unassigned_resources(k: Kernel) -> None:
    """Size and assign everything left unassigned on every root bus (x86: fs_initcall)."""
    for bus in list(k.pci.pci_root_buses):
        pci_assign_unassigned_root_bus_resources(bus)


def pci_assign_unassigned_bus_resources(bus: pci_bus) -> None:
    """Size the bridges below ``bus`` and assign what is unassigned (the VMD uses this)."""
    realloc: Realloc = []
    for dev in list(bus.devices):
        if dev.subordinate is not None:
            __pci_bus_size_bridges(dev.subordinate, realloc)
    __pci_bus_assign_resources(bus, realloc, None)
    realloc.clear()


def pci_assign_unassigned_bridge_resources(bridge: pci_dev) -> None:
    """After a hot-add below ``bridge``: size, assign, reprogram and re-enable it."""
    parent = bridge.subordinate
    assert parent is not None  # a bridge with a bus behind it
    realloc: Realloc = []
    __pci_bus_size_bridges(parent, realloc)
    __pci_bus_assign_resources(parent, realloc, None)
    pci_setup_bridge(parent)
    realloc.clear()
    if pci_is_enabled(bridge):
        retval = do_pci_enable_device(bridge, (1 << PCI_NUM_RESOURCES) - 1)
        if retval:
            pci_info(bridge, f"Error reenabling bridge ({retval})")
    pci_set_master(bridge)


def pci_bus_claim_resources(bus: pci_bus) -> None:
    """Claim whatever firmware assigned below ``bus`` (bridge windows before their
    contents), as ``pci_host_probe`` does when the configuration must be preserved."""
    for dev in list(bus.devices):
        for i, r in enumerate(dev.resource):
            if r.flags and r.parent is None and not r.flags & IORESOURCE_UNSET and r.start:
                pci_claim_resource(dev, i)
        if dev.subordinate is not None:
            pci_bus_claim_resources(dev.subordinate)

