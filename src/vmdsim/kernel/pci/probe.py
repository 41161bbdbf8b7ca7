"""Finding what is on the buses (``drivers/pci/probe.c``, the bus half).

Root buses come from a host bridge (``pci_create_root_bus``: its ops,
sysdata and windows); ``pci_scan_child_bus`` probes every slot with config
reads (function 0 first, functions 1-7 only on a multi-function device, only
device 0 below a PCIe downstream port), has each new function's header read
and the function configured (``probe_dev``: ``pci_setup_device``,
``pci_device_add``) and descends through bridges.

Bus numbers, as Linux does it: a bridge whose firmware numbers make sense is
scanned with them in a first pass; the others get numbers in a second pass:
the next free bus as secondary, subordinate first the end of the parent's
range, then lowered to the highest bus found below; nothing beyond the end of
the parent's bus range (``busn_res``, e.g. a VMD's CFGBAR size) is handed
out. Hot-plug bridges share the spare bus numbers (``pci=hpbussize``).

Allocation failure (``k.mem.fail_nth``) is handled as Linux handles it: a
function whose ``pci_dev`` cannot be allocated is not found, a bridge whose
child bus cannot be allocated has nothing behind it, a host bridge whose root
bus cannot be allocated is not registered.

Simplifications: no ARI, SR-IOV, cardbus, Enhanced Allocation or
Configuration RRS retries. ``pci_bus_sem`` (``k.pci.pci_bus_sem``) is taken for
writing where a device joins or leaves its bus's list (``pci_device_add``,
``pci_destroy_dev``), for reading by ``pci_walk_bus``, as in Linux.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, cast

from vmdsim.hw.regs import (
    PCI_BRIDGE_CONTROL,
    PCI_BRIDGE_CTL_MASTER_ABORT,
    PCI_PRIMARY_BUS,
    PCI_SEC_STATUS,
    PCI_STATUS,
    PCI_SUBORDINATE_BUS,
    PCI_VENDOR_ID,
)
from vmdsim.kernel.base.core import dev_get_msi_domain, dev_set_msi_domain
from vmdsim.kernel.errno import EEXIST, EINVAL, ENOMEM
from vmdsim.kernel.locking import mutex_lock, mutex_unlock
from vmdsim.kernel.pci.access import (
    PCI_POSSIBLE_ERROR,
    pci_bus_read_config_dword,
    pci_ops,
    pci_read_config_dword,
    pci_read_config_word,
    pci_write_config_byte,
    pci_write_config_dword,
    pci_write_config_word,
)
from vmdsim.kernel.pci.bus import (
    pci_bus_add_devices,
    pci_bus_add_resource,
    pci_bus_remove_resources,
)
from vmdsim.kernel.pci.pci_h import (
    PCI_BRIDGE_RESOURCE_NUM,
    PCI_BRIDGE_RESOURCES,
    PCI_NUM_RESOURCES,
    PciError,
    for_each_pci_bridge,
    pci_bus,
    pci_dev,
    pci_find_host_bridge,
    pci_host_bridge,
    pci_is_pcie,
    pci_is_root_bus,
    pcie_downstream_port,
    resource_entry,
)
from vmdsim.kernel.pci.probe_dev import pci_device_add, pci_setup_device, pcibios_fixup_bus
from vmdsim.kernel.pci.resource import (
    IORESOURCE_BUS,
    IORESOURCE_PCI_FIXED,
    OWNER,
    adjust_resource,
    format_resource,
    release_resource,
    request_resource_conflict,
    resource,
)
from vmdsim.kernel.pci.setup_bus import (
    pci_assign_unassigned_bus_resources,
    pci_assign_unassigned_root_bus_resources,
    pci_bus_claim_resources,
)
from vmdsim.kernel.pci.subsys import (
    PCIE_BUS_DEFAULT,
    PCIE_BUS_TUNE_OFF,
    pci_err,
    pci_info,
)
from vmdsim.kernel.printk import pr_info

if TYPE_CHECKING:
    from vmdsim.kernel.core import Kernel

# -- allocation and release of the core's objects ------------------------------------------


def pci_alloc_dev(bus: pci_bus) -> pci_dev | None:
    """A new ``pci_dev`` on ``bus`` with its resource slots; None when memory runs out."""
    k = bus.k
    dev = k.mem.kzalloc(pci_dev, bus, owner=OWNER)
    if dev is None:
        return None
    for _ in range(PCI_NUM_RESOURCES):
        r = k.mem.kzalloc(resource, owner=OWNER)
        if r is None:
            pci_release_dev(dev)
            return None
        dev.resource.append(r)
    return dev


def pci_release_dev(dev: pci_dev) -> None:
    """Free a ``pci_dev`` and the resources that belong to it."""
    k = dev.k
    for r in dev.resource:
        k.mem.kfree(r)
    k.mem.kfree(dev)


def pci_alloc_bus(k: Kernel, parent: pci_bus | None) -> pci_bus | None:
    b = k.mem.kzalloc(pci_bus, k, parent, owner=OWNER)
    if b is None:
        return None
    busn = k.mem.kzalloc(resource, "", 0, 0, 0, owner=OWNER)
    if busn is None:
        k.mem.kfree(b)
        return None
    b.busn_res = busn
    if parent is not None:
        b.domain_nr = parent.domain_nr
    return b


def pci_release_bus(bus: pci_bus) -> None:
    """``release_pcibus_dev``: drop the bus's resources and free it."""
    k = bus.k
    pci_bus_remove_resources(bus)
    k.mem.kfree(bus.busn_res)
    k.mem.kfree(bus)


def pci_alloc_host_bridge(k: Kernel) -> pci_host_bridge | None:
    return k.mem.kzalloc(pci_host_bridge, k, owner=OWNER)


def pci_free_host_bridge(bridge: pci_host_bridge) -> None:
    bridge.k.mem.kfree(bridge)


# -- bus numbers ---------------------------------------------------------------------------
def pci_bus_insert_busn_res(b: pci_bus, bus: int, bus_max: int) -> bool:
    """Take [bus, bus_max] for ``b`` in its parent's (or the domain's) bus-number tree."""
    res = b.busn_res
    res.start, res.end, res.flags = bus, bus_max, IORESOURCE_BUS
    res.name = b.name or f"PCI Bus {b.domain_nr:04x}:{bus:02x}"
    if not pci_is_root_bus(b):
        parent_res = cast(pci_bus, b.parent).busn_res
    else:
        parent_res = b.k.pci.get_pci_domain_busn_res(b.domain_nr)
        res.flags |= IORESOURCE_PCI_FIXED
    conflict = request_resource_conflict(parent_res, res)
    if conflict is not None:
        pci_info(b, f"busn_res: can not insert {format_resource(res)} under "
                    f"{format_resource(parent_res)} (conflicts with {conflict.name} "
                    f"{format_resource(conflict)})")
    return conflict is None


def pci_bus_update_busn_res_end(b: pci_bus, bus_max: int) -> int:
    res = b.busn_res
    if res.start > bus_max:
        return -EINVAL
    old = format_resource(res)
    ret = adjust_resource(res, res.start, bus_max - res.start + 1)
    pci_info(b, f"busn_res: {old} end {'can not be' if ret else 'is'} updated to "
                f"{bus_max:02x}")
    if not ret and res.parent is None:
        pci_bus_insert_busn_res(b, res.start, res.end)
    return ret


def pci_bus_release_busn_res(b: pci_bus) -> None:
    res = b.busn_res
    if not res.flags or res.parent is None:
        return
    ret = release_resource(res)
    pci_info(b, f"busn_res: {format_resource(res)} {'can not be' if ret else 'is'} released")


# -- root buses ------------------------------------------------------------------------------
def pci_set_bus_msi_domain(bus: pci_bus) -> None:
    d = None
    b = bus
    while d is None and not pci_is_root_bus(b):
        if b.self is not None:
            d = dev_get_msi_domain(b.self.dev)
        b = cast(pci_bus, b.parent)  # not a root bus: it has a parent
    if d is None:
        d = dev_get_msi_domain(b.dev) if b is not bus else None
    dev_set_msi_domain(bus.dev, d)


def pci_register_host_bridge(bridge: pci_host_bridge) -> int:
    """Create the root bus of ``bridge`` and attach its windows; 0 or a negative errno."""
    k = bridge.k
    sub = k.pci
    bus = pci_alloc_bus(k, None)
    if bus is None:
        return -ENOMEM
    bridge.bus = bus
    bus.sysdata = bridge.sysdata
    bus.ops = bridge.ops
    bus.number = bus.busn_res.start = bridge.busnr
    bus.domain_nr = getattr(bridge.sysdata, "domain", 0)
    bus.bridge = bridge
    if sub.pci_find_bus(bus.domain_nr, bridge.busnr) is not None:
        pci_info(bus, "bus already known")
        bridge.bus = None
        pci_release_bus(bus)
        return -EEXIST
    bridge.dev.init_name = f"pci{bus.domain_nr:04x}:{bridge.busnr:02x}"
    bus.name = f"PCI Bus {bus.domain_nr:04x}:{bus.number:02x}"
    bus.dev.init_name = f"{bus.domain_nr:04x}:{bus.number:02x}"
    bus.dev.parent = bridge.dev
    pci_set_bus_msi_domain(bus)
    if bus.ops.add_bus is not None:
        err = bus.ops.add_bus(bus)
        if err:
            pci_info(bus, f"failed to add bus: {err}")
    # dev_info(bridge->dev.parent, ...): the device the host bridge hangs under (a VMD,
    # named by its driver), or pr_info for a host bridge of its own
    parent = k.pci.find_pci_dev(bridge.dev.parent)
    if parent is not None:
        pci_info(parent, f"PCI host bridge to bus {bus.dev.init_name}")
    else:
        who = bridge.dev.parent.init_name + ": " if bridge.dev.parent is not None else ""
        pr_info(k, f"{who}PCI host bridge to bus {bus.dev.init_name}")
    for window in bridge.windows:
        res = window.res
        if res.flags & IORESOURCE_BUS:
            pci_bus_insert_busn_res(bus, bus.number, res.end)
        else:
            pci_bus_add_resource(bus, res)
        addr = ""
        if window.offset:
            addr = (f" (bus address [{res.start - window.offset:#010x}-"
                    f"{res.end - window.offset:#010x}])")
        pci_info(bus, f"root bus resource {format_resource(res)}{addr}")
    sub.pci_root_buses.append(bus)
    return 0


def pci_create_root_bus(k: Kernel, parent: Any, bus: int, ops: Any, sysdata: Any,
                        resources: list[resource_entry]) -> pci_bus | None:
    """A new root bus numbered ``bus`` whose config cycles go through ``ops``.

    ``parent`` is the ``struct device`` it hangs off (the VMD's, or None); the
    entries of ``resources`` (``pci_add_resource[_offset]``) move to the host
    bridge, leaving the caller's list empty. None on failure.
    """
    if not isinstance(ops, pci_ops):
        raise PciError(f"pci_create_root_bus: bus {bus:02x} needs a pci_ops for its config "
                       f"cycles, not {ops!r}")
    bridge = pci_alloc_host_bridge(k)
    if bridge is None:
        return None
    bridge.dev.parent = parent
    bridge.windows = list(resources)
    resources.clear()
    bridge.sysdata = sysdata
    bridge.busnr = bus
    bridge.ops = ops
    if pci_register_host_bridge(bridge) < 0:
        resources.extend(bridge.windows)
        pci_free_host_bridge(bridge)
        return None
    return bridge.bus


def pci_scan_root_bus_bridge(bridge: pci_host_bridge) -> int:
    """Register ``bridge``'s root bus and scan it; 0 or a negative errno."""
    if bridge is None:
        return -EINVAL
    found = False
    for window in bridge.windows:
        if window.res.flags & IORESOURCE_BUS:
            bridge.busnr = window.res.start
            found = True
            break
    ret = pci_register_host_bridge(bridge)
    if ret < 0:
        return ret
    b = bridge.bus
    assert b is not None  # pci_register_host_bridge succeeded: the root bus exists
    if not found:
        pci_info(b, f"No busn resource found for root bus, will use [bus {bridge.busnr:02x}-ff]")
        pci_bus_insert_busn_res(b, bridge.busnr, 255)
    mx = pci_scan_child_bus(b)
    if not found:
        pci_bus_update_busn_res_end(b, mx)
    return 0


def pci_scan_root_bus(k: Kernel, parent: Any, bus: int, ops: Any, sysdata: Any,
                      resources: list[resource_entry]) -> pci_bus | None:
    found = any(w.res.flags & IORESOURCE_BUS for w in resources)
    b = pci_create_root_bus(k, parent, bus, ops, sysdata, resources)
    if b is None:
        return None
    if not found:
        pci_info(b, f"No busn resource found for root bus, will use [bus {bus:02x}-ff]")
        pci_bus_insert_busn_res(b, bus, 255)
    mx = pci_scan_child_bus(b)
    if not found:
        pci_bus_update_busn_res_end(b, mx)
    return b


def pci_host_probe(bridge: pci_host_bridge) -> int:
    """Scan, assign and add everything below a generic host bridge."""
    ret = pci_scan_root_bus_bridge(bridge)
    if ret < 0:
        return ret
    bus = bridge.bus
    assert bus is not None  # the scan registered it
    if bridge.preserve_config:
        pci_bus_claim_resources(bus)
    pci_assign_unassigned_root_bus_resources(bus)
    for child in bus.children:
        pcie_bus_configure_settings(child)
    pci_bus_add_devices(bus)
    return 0


# -- child buses ---------------------------------------------------------------------------
def pci_alloc_child_bus(parent: pci_bus, bridge: pci_dev | None, busnr: int) -> pci_bus | None:
    child = pci_alloc_bus(parent.k, parent)
    if child is None:
        return None
    child.parent = parent
    child.sysdata = parent.sysdata
    host = pci_find_host_bridge(parent)
    child.ops = host.child_ops if host.child_ops is not None else parent.ops
    child.number = child.busn_res.start = busnr
    child.primary = parent.busn_res.start
    child.busn_res.end = 0xFF
    child.dev.init_name = f"{child.domain_nr:04x}:{busnr:02x}"
    child.name = f"PCI Bus {child.domain_nr:04x}:{busnr:02x}"
    if bridge is not None:
        child.self = bridge
        child.bridge = bridge
        child.dev.parent = bridge.dev
        for i in range(PCI_BRIDGE_RESOURCE_NUM):
            r = bridge.resource[PCI_BRIDGE_RESOURCES + i]
            child.resource[i] = r
            r.name = child.name
        bridge.subordinate = child
    else:
        child.dev.parent = parent.dev
    pci_set_bus_msi_domain(child)
    if child.ops.add_bus is not None:
        child.ops.add_bus(child)
    return child


def pci_add_new_bus(parent: pci_bus, dev: pci_dev | None, busnr: int) -> pci_bus | None:
    child = pci_alloc_child_bus(parent, dev, busnr)
    if child is not None:
        parent.children.append(child)
    return child


def pci_scan_bridge_extend(bus: pci_bus, dev: pci_dev, max_: int, available_buses: int,
                           pass_: int) -> int:
    """Scan behind bridge ``dev``: pass 0 keeps sane firmware bus numbers, pass 1 assigns
    numbers to the rest. Returns the highest bus number used so far."""
    k = bus.k
    _, buses = pci_read_config_dword(dev, PCI_PRIMARY_BUS)
    primary = buses & 0xFF
    secondary = (buses >> 8) & 0xFF
    subordinate = (buses >> 16) & 0xFF
    broken = False
    if not primary and primary != bus.number and secondary and subordinate:
        pci_info(dev, "Primary bus is hard wired to 0")
        primary = bus.number
    if not pass_ and (primary != bus.number or secondary <= bus.number
                      or secondary > subordinate):
        pci_info(dev, f"bridge configuration invalid ([bus {secondary:02x}-{subordinate:02x}]),"
                      " reconfiguring")
        broken = True
    # Master-Abort Mode off while probing below, so empty slots do not raise errors.
    _, bctl = pci_read_config_word(dev, PCI_BRIDGE_CONTROL)
    pci_write_config_word(dev, PCI_BRIDGE_CONTROL, bctl & ~PCI_BRIDGE_CTL_MASTER_ABORT)
    child = None
    if (secondary or subordinate) and not k.pci.pcibios_assign_all_busses and not broken:
        # Configured by firmware: keep it, in the first pass.
        if pass_:
            return _scan_bridge_out(dev, bctl, max_)
        child = k.pci.pci_find_bus(bus.domain_nr, secondary)
        if child is None:
            child = pci_add_new_bus(bus, dev, secondary)
            if child is None:
                return _scan_bridge_out(dev, bctl, max_)
            child.primary = primary
            pci_bus_insert_busn_res(child, secondary, subordinate)
            child.bridge_ctl = bctl
        cmax = pci_scan_child_bus_extend(child, subordinate - secondary)
        if cmax > subordinate:
            pci_info(dev, f"bridge has subordinate {subordinate:02x} but max busn {cmax:02x}")
        if subordinate > max_:
            max_ = subordinate
    else:
        if not pass_:
            if k.pci.pcibios_assign_all_busses or broken:
                # Stop forwarding config cycles until pass 1 renumbers this bridge.
                pci_write_config_dword(dev, PCI_PRIMARY_BUS, buses & ~0xFFFFFF)
            return _scan_bridge_out(dev, bctl, max_)
        pci_write_config_word(dev, PCI_STATUS, 0xFFFF)  # clear errors
        if max_ >= bus.busn_res.end:
            pci_info(dev, f"can't allocate child bus {max_:02x} from "
                          f"{format_resource(bus.busn_res)}")
            return _scan_bridge_out(dev, bctl, max_)
        child = k.pci.pci_find_bus(bus.domain_nr, max_ + 1)
        if child is None:
            child = pci_add_new_bus(bus, dev, max_ + 1)
            if child is None:
                return _scan_bridge_out(dev, bctl, max_)
            pci_bus_insert_busn_res(child, max_ + 1, bus.busn_res.end)
        max_ += 1
        if available_buses:
            available_buses -= 1
        buses = ((buses & 0xFF000000) | child.primary | (child.busn_res.start << 8)
                 | (child.busn_res.end << 16))
        pci_write_config_dword(dev, PCI_PRIMARY_BUS, buses)  # all three in one write
        child.bridge_ctl = bctl
        max_ = pci_scan_child_bus_extend(child, available_buses)
        pci_bus_update_busn_res_end(child, max_)
        pci_write_config_byte(dev, PCI_SUBORDINATE_BUS, max_)
    child.name = f"PCI Bus {child.domain_nr:04x}:{child.number:02x}"
    b = bus
    while b.parent is not None:
        if (child.busn_res.end > b.busn_res.end or child.number > b.busn_res.end
                or child.number < b.number or child.busn_res.end < b.number):
            pci_info(dev, f"devices behind bridge are unusable because "
                          f"{format_resource(child.busn_res)} cannot be assigned for them")
            break
        b = b.parent
    return _scan_bridge_out(dev, bctl, max_)


def _scan_bridge_out(dev: pci_dev, bctl: int, max_: int) -> int:
    pci_write_config_word(dev, PCI_SEC_STATUS, 0xFFFF)
    pci_write_config_word(dev, PCI_BRIDGE_CONTROL, bctl)
    return max_


def pci_scan_bridge(bus: pci_bus, dev: pci_dev, max_: int, pass_: int) -> int:
    return pci_scan_bridge_extend(bus, dev, max_, 0, pass_)


def pci_scan_child_bus_extend(bus: pci_bus, available_buses: int) -> int:
    """Scan every slot of ``bus`` and the buses behind its bridges; the highest bus number."""
    k = bus.k
    start = bus.busn_res.start
    mx = start
    for devfn in range(0, 256, 8):
        pci_scan_slot(bus, devfn)
    used_buses = 0
    if not bus.is_added:
        pcibios_fixup_bus(bus)
        bus.is_added = True
    normal_bridges = hotplug_bridges = 0
    for dev in for_each_pci_bridge(bus):
        if dev.is_hotplug_bridge:
            hotplug_bridges += 1
        else:
            normal_bridges += 1
    for dev in for_each_pci_bridge(bus):
        cmax = mx
        mx = pci_scan_bridge_extend(bus, dev, mx, 0, 0)
        used_buses += 1
        if mx - cmax > 1:
            used_buses += mx - cmax - 1
    for dev in for_each_pci_bridge(bus):
        buses = 0
        if not hotplug_bridges and normal_bridges == 1:
            buses = available_buses
        elif dev.is_hotplug_bridge:
            buses = available_buses // hotplug_bridges
            room = available_buses - used_buses + 1
            if room >= 0:
                buses = min(buses, room)
        cmax = mx
        mx = pci_scan_bridge_extend(bus, dev, cmax, buses, 1)
        if mx - cmax > 1:
            used_buses += mx - cmax - 1
    if bus.self is not None and bus.self.is_hotplug_bridge:
        used_buses = max(available_buses, k.pci.pci_hotplug_bus_size - 1)
        if mx - start < used_buses:
            mx = min(start + used_buses, bus.busn_res.end)
    return mx


def pci_scan_child_bus(bus: pci_bus) -> int:
    return pci_scan_child_bus_extend(bus, 0)


def pci_hp_add_bridge(dev: pci_dev) -> int:
    """Give a hot-added bridge bus numbers and scan behind it (pciehp calls this for each
    bridge it finds in a new card); 0, or -1 when no bus number is free or the bus behind
    it could not be created."""
    parent = dev.bus
    start, end = parent.busn_res.start, parent.busn_res.end
    busnr = start
    while busnr <= end and parent.k.pci.pci_find_bus(parent.domain_nr, busnr) is not None:
        busnr += 1
    if busnr > end:
        pci_err(dev, "No bus number available for hot-added bridge")
        return -1
    busnr -= 1
    # Keep firmware's numbers if it configured the bridge, else assign; spare buses go to
    # the new bridge so a chain of hot-plug bridges can grow later.
    busnr = pci_scan_bridge_extend(parent, dev, busnr, 0, 0)
    pci_scan_bridge_extend(parent, dev, busnr, end - busnr, 1)
    return 0 if dev.subordinate is not None else -1


def pci_lock_rescan_remove(k: Kernel) -> None:
    """Take the mutex that serialises hotplug, rescans and removals (sleeps if contended)."""
    mutex_lock(k.pci.pci_rescan_remove_lock)


def pci_unlock_rescan_remove(k: Kernel) -> None:
    mutex_unlock(k.pci.pci_rescan_remove_lock)


def pci_rescan_bus(bus: pci_bus) -> int:
    """Scan again below ``bus``, assign what is new and add it (drivers bind). The caller
    holds ``pci_lock_rescan_remove``, as in Linux."""
    mx = pci_scan_child_bus(bus)
    pci_assign_unassigned_bus_resources(bus)
    pci_bus_add_devices(bus)
    return mx


def only_one_child(bus: pci_bus) -> bool:
    """A PCIe downstream port leads to a link with only device 0 on it."""
    bridge = bus.self
    return bridge is not None and pci_is_pcie(bridge) and pcie_downstream_port(bridge)


def pci_scan_slot(bus: pci_bus, devfn: int) -> int:
    """Scan the functions of one slot; how many new devices were found."""
    if only_one_child(bus) and devfn > 0:
        return 0
    fn = 0
    nr = 0
    while True:
        dev = pci_scan_single_device(bus, devfn + fn)
        if dev is not None:
            if not dev.is_added:
                nr += 1
            if fn > 0:
                dev.multifunction = True
        elif fn == 0:
            break  # function 0 is required
        if fn >= 7 or (dev is not None and not dev.multifunction):
            break
        fn += 1
    return nr


def pci_get_slot(bus: pci_bus, devfn: int) -> pci_dev | None:
    for dev in bus.devices:
        if dev.devfn == devfn:
            return dev
    return None


def pci_scan_single_device(bus: pci_bus, devfn: int) -> pci_dev | None:
    dev = pci_get_slot(bus, devfn)
    if dev is not None:
        return dev
    dev = pci_scan_device(bus, devfn)
    if dev is None:
        return None
    pci_device_add(dev, bus)
    return dev


def pci_bus_read_dev_vendor_id(bus: pci_bus, devfn: int) -> tuple[bool, int]:
    ret, l = pci_bus_read_config_dword(bus, devfn, PCI_VENDOR_ID)
    if ret:
        return False, l
    if PCI_POSSIBLE_ERROR(l) or l in (0, 0x0000FFFF, 0xFFFF0000):
        return False, l
    return True, l


def pci_scan_device(bus: pci_bus, devfn: int) -> pci_dev | None:
    ok, l = pci_bus_read_dev_vendor_id(bus, devfn)
    if not ok:
        return None
    dev = pci_alloc_dev(bus)
    if dev is None:
        return None
    dev.devfn = devfn
    dev.vendor = l & 0xFFFF
    dev.device = (l >> 16) & 0xFFFF
    if pci_setup_device(dev):
        pci_release_dev(dev)
        return None
    return dev


def pcie_bus_configure_settings(bus: pci_bus) -> None:
    """MPS tuning for a hierarchy (``pci=pcie_bus_safe/perf/peer2peer``). With the default
    setting Linux leaves it to ``pci_configure_mps`` at device add: nothing to do here."""
    if bus.self is None or not pci_is_pcie(bus.self):
        return
    if bus.k.pci.pcie_bus_config in (PCIE_BUS_TUNE_OFF, PCIE_BUS_DEFAULT):
        return
    raise NotImplementedError("pcie_bus_config other than default/tune_off is not modelled")
