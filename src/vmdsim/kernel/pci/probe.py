"""Finding what is on the buses (``drivers/pci/probe.c``).

Root buses come from a host bridge (``pci_create_root_bus``: its ops,
sysdata and windows); ``pci_scan_child_bus`` probes every slot with config
reads (function 0 first, functions 1-7 only on a multi-function device, only
device 0 below a PCIe downstream port), reads each function's header
(``pci_setup_device``: class, header type, capabilities, BARs sized by
writing all-ones with decode turned off) and descends through bridges.

Bus numbers, as Linux does it: a bridge whose firmware numbers make sense is
scanned with them in a first pass; the others get numbers in a second pass:
the next free bus as secondary, subordinate first 0xff then lowered to the
highest bus found below; nothing beyond the end of the parent's bus range
(``busn_res``, e.g. a VMD's CFGBAR size) is handed out.

Per device it also configures Max Payload Size against the upstream bridge
and enables LTR where the path supports it (``pci_configure_device``), finds
the MSI/MSI-X capabilities (and turns off an enable bit left set, as
``pci_msi_init``/``pci_msix_init`` do), and inherits the bus's MSI domain.

Simplifications: no ARI, SR-IOV, cardbus, Enhanced Allocation, ROMs or
Configuration RRS retries; a PCI Express function's config space is 4 KiB,
others 256 bytes.
"""

from __future__ import annotations

from typing import Any

from vmdsim.hw.regs import (
    PCI_BRIDGE_CONTROL,
    PCI_BRIDGE_CTL_MASTER_ABORT,
    PCI_CAP_ID_EXP,
    PCI_CAP_ID_MSI,
    PCI_CAP_ID_MSIX,
    PCI_CAP_ID_PM,
    PCI_CFG_SPACE_EXP_SIZE,
    PCI_CFG_SPACE_SIZE,
    PCI_CLASS_REVISION,
    PCI_COMMAND,
    PCI_EXP_DEVCAP,
    PCI_EXP_DEVCAP2,
    PCI_EXP_DEVCAP2_LTR,
    PCI_EXP_DEVCAP_PAYLOAD,
    PCI_EXP_DEVCTL2,
    PCI_EXP_DEVCTL2_LTR_EN,
    PCI_EXP_FLAGS,
    PCI_EXP_SLTCAP,
    PCI_EXP_SLTCAP_HPC,
    PCI_EXP_TYPE_RC_END,
    PCI_EXP_TYPE_ROOT_PORT,
    PCI_HEADER_TYPE,
    PCI_HEADER_TYPE_BRIDGE,
    PCI_HEADER_TYPE_MASK,
    PCI_HEADER_TYPE_MFD,
    PCI_HEADER_TYPE_NORMAL,
    PCI_INTERRUPT_LINE,
    PCI_INTERRUPT_PIN,
    PCI_IO_BASE,
    PCI_MEMORY_BASE,
    PCI_MEMORY_LIMIT,
    PCI_MEMORY_RANGE_MASK,
    PCI_MEMORY_RANGE_TYPE_MASK,
    PCI_MSI_FLAGS,
    PCI_MSI_FLAGS_ENABLE,
    PCI_MSIX_FLAGS,
    PCI_MSIX_FLAGS_ENABLE,
    PCI_PREF_BASE_UPPER32,
    PCI_PREF_LIMIT_UPPER32,
    PCI_PREF_MEMORY_BASE,
    PCI_PREF_MEMORY_LIMIT,
    PCI_PREF_RANGE_MASK,
    PCI_PREF_RANGE_TYPE_64,
    PCI_PREF_RANGE_TYPE_MASK,
    PCI_PRIMARY_BUS,
    PCI_ROM_ADDRESS,
    PCI_ROM_ADDRESS1,
    PCI_SEC_STATUS,
    PCI_STATUS,
    PCI_STD_NUM_BARS,
    PCI_SUBORDINATE_BUS,
    PCI_SUBSYSTEM_ID,
    PCI_SUBSYSTEM_VENDOR_ID,
    PCI_VENDOR_ID,
)
from vmdsim.kernel.pci.access import (
    PCI_POSSIBLE_ERROR,
    pci_bus_read_config_dword,
    pci_read_config_byte,
    pci_read_config_dword,
    pci_read_config_word,
    pci_write_config_byte,
    pci_write_config_dword,
    pci_write_config_word,
    pcie_capability_read_dword,
    pcie_capability_set_word,
)
from vmdsim.kernel.pci.bus import (
    pci_bus_add_devices,
    pci_bus_add_resource,
    pci_bus_remove_resources,
    pcibios_bus_to_resource,
    pcibios_resource_to_bus,
)
from vmdsim.kernel.pci.device import dev_get_msi_domain, dev_set_msi_domain
from vmdsim.kernel.pci.driver import device_add
from vmdsim.kernel.pci.pci import (
    PCI_COMMAND_DECODE_ENABLE,
    pci_find_capability,
    pcie_get_mps,
    pcie_set_mps,
)
from vmdsim.kernel.pci.pci_h import (
    PCI_BRIDGE_RESOURCE_NUM,
    PCI_BRIDGE_RESOURCES,
    PCI_CLASS_BRIDGE_PCI,
    PCI_CLASS_NOT_DEFINED,
    PCI_NUM_RESOURCES,
    PCI_UNKNOWN,
    for_each_pci_bridge,
    pci_bus,
    pci_dev,
    pci_find_host_bridge,
    pci_host_bridge,
    pci_is_pcie,
    pci_is_root_bus,
    pci_name,
    pci_pcie_type,
    pci_upstream_bridge,
    pcie_downstream_port,
    resource_entry,
)
from vmdsim.kernel.pci.resource import (
    EEXIST,
    EINVAL,
    EIO,
    ENOMEM,
    IORESOURCE_BUS,
    IORESOURCE_MEM,
    IORESOURCE_MEM_64,
    IORESOURCE_PCI_FIXED,
    IORESOURCE_PREFETCH,
    IORESOURCE_SIZEALIGN,
    IORESOURCE_UNSET,
    adjust_resource,
    format_resource,
    kzalloc_obj,
    release_resource,
    request_resource_conflict,
    resource,
)
from vmdsim.kernel.pci.subsys import PCIE_BUS_DEFAULT, PCIE_BUS_TUNE_OFF, pci_info, pci_subsys

# -- allocation and release of the core's objects ------------------------------------------


def pci_alloc_dev(bus: pci_bus) -> pci_dev | None:
    """A new ``pci_dev`` on ``bus`` with its resource slots; None when memory runs out."""
    k = bus.k
    dev = kzalloc_obj(k, pci_dev, bus)
    if dev is None:
        return None
    for _ in range(PCI_NUM_RESOURCES):
        r = kzalloc_obj(k, resource)
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


def pci_alloc_bus(k: Any, parent: pci_bus | None) -> pci_bus | None:
    b = kzalloc_obj(k, pci_bus, k, parent)
    if b is None:
        return None
    busn = kzalloc_obj(k, resource, "", 0, 0, 0)
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


def pci_alloc_host_bridge(k: Any) -> pci_host_bridge | None:
    pci_subsys(k)
    return kzalloc_obj(k, pci_host_bridge, k)


def pci_free_host_bridge(bridge: pci_host_bridge) -> None:
    bridge.k.mem.kfree(bridge)


# -- bus numbers ---------------------------------------------------------------------------
def pci_bus_insert_busn_res(b: pci_bus, bus: int, bus_max: int) -> bool:
    """Take [bus, bus_max] for ``b`` in its parent's (or the domain's) bus-number tree."""
    res = b.busn_res
    res.start, res.end, res.flags = bus, bus_max, IORESOURCE_BUS
    res.name = b.name or f"PCI Bus {b.domain_nr:04x}:{bus:02x}"
    if not pci_is_root_bus(b):
        parent_res = b.parent.busn_res
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
        b = b.parent
    if d is None:
        d = dev_get_msi_domain(b.dev) if b is not bus else None
    dev_set_msi_domain(bus.dev, d)


def pci_register_host_bridge(bridge: pci_host_bridge) -> int:
    """Create the root bus of ``bridge`` and attach its windows; 0 or a negative errno."""
    k = bridge.k
    sub = pci_subsys(k)
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
    who = bridge.dev.parent.init_name + ": " if bridge.dev.parent is not None else ""
    sub.printk(f"{who}PCI host bridge to bus {bus.dev.init_name}")
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


def pci_create_root_bus(k: Any, parent: Any, bus: int, ops: Any, sysdata: Any,
                        resources: list[resource_entry]) -> pci_bus | None:
    """A new root bus numbered ``bus`` whose config cycles go through ``ops``.

    ``parent`` is the ``struct device`` it hangs off (the VMD's, or None); the
    entries of ``resources`` (``pci_add_resource[_offset]``) move to the host
    bridge, leaving the caller's list empty. None on failure.
    """
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
    if not found:
        pci_info(b, f"No busn resource found for root bus, will use [bus {bridge.busnr:02x}-ff]")
        pci_bus_insert_busn_res(b, bridge.busnr, 255)
    mx = pci_scan_child_bus(b)
    if not found:
        pci_bus_update_busn_res_end(b, mx)
    return 0


def pci_scan_root_bus(k: Any, parent: Any, bus: int, ops: Any, sysdata: Any,
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
    from vmdsim.kernel.pci.setup_bus import (
        pci_assign_unassigned_root_bus_resources,
        pci_bus_claim_resources,
    )

    ret = pci_scan_root_bus_bridge(bridge)
    if ret < 0:
        return ret
    bus = bridge.bus
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
    if not primary and primary != bus.number and secondary:
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


def pci_rescan_bus(bus: pci_bus) -> int:
    """Scan again below ``bus``, assign what is new and add it (drivers bind)."""
    from vmdsim.kernel.pci.setup_bus import pci_assign_unassigned_bus_resources

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


# -- reading a function's header -------------------------------------------------------------
def set_pcie_port_type(dev: pci_dev) -> None:
    pos = pci_find_capability(dev, PCI_CAP_ID_EXP)
    if not pos:
        return
    dev.pcie_cap = pos
    _, dev.pcie_flags_reg = pci_read_config_word(dev, pos + PCI_EXP_FLAGS)
    _, dev.devcap = pci_read_config_dword(dev, pos + PCI_EXP_DEVCAP)
    dev.pcie_mpss = dev.devcap & PCI_EXP_DEVCAP_PAYLOAD


def set_pcie_hotplug_bridge(dev: pci_dev) -> None:
    if not pci_is_pcie(dev):
        return
    _, reg32 = pcie_capability_read_dword(dev, PCI_EXP_SLTCAP)
    if reg32 & PCI_EXP_SLTCAP_HPC:
        dev.is_hotplug_bridge = dev.is_pciehp = True


def pci_cfg_space_size(dev: pci_dev) -> int:
    if not pci_is_pcie(dev):
        return PCI_CFG_SPACE_SIZE
    ret, status = pci_read_config_dword(dev, PCI_CFG_SPACE_SIZE)
    if ret or PCI_POSSIBLE_ERROR(status):
        return PCI_CFG_SPACE_SIZE
    return PCI_CFG_SPACE_EXP_SIZE


def pci_read_irq(dev: pci_dev) -> None:
    """The INTx pin and the line firmware routed it to (the model routes none: 0)."""
    _, pin = pci_read_config_byte(dev, PCI_INTERRUPT_PIN)
    dev.pin = pin
    irq = 0
    if pin:
        _, irq = pci_read_config_byte(dev, PCI_INTERRUPT_LINE)
    dev.irq = irq


def decode_bar(dev: pci_dev, bar: int) -> int:
    from vmdsim.hw.regs import (
        PCI_BASE_ADDRESS_MEM_MASK,
        PCI_BASE_ADDRESS_MEM_PREFETCH,
        PCI_BASE_ADDRESS_MEM_TYPE_1M,
        PCI_BASE_ADDRESS_MEM_TYPE_64,
        PCI_BASE_ADDRESS_MEM_TYPE_MASK,
        PCI_BASE_ADDRESS_SPACE,
        PCI_BASE_ADDRESS_SPACE_IO,
    )
    from vmdsim.kernel.pci.resource import IORESOURCE_IO

    if (bar & PCI_BASE_ADDRESS_SPACE) == PCI_BASE_ADDRESS_SPACE_IO:
        return (bar & 0x3) | IORESOURCE_IO
    flags = bar & ~PCI_BASE_ADDRESS_MEM_MASK & 0xF
    flags |= IORESOURCE_MEM
    if flags & PCI_BASE_ADDRESS_MEM_PREFETCH:
        flags |= IORESOURCE_PREFETCH
    mem_type = bar & PCI_BASE_ADDRESS_MEM_TYPE_MASK
    if mem_type == PCI_BASE_ADDRESS_MEM_TYPE_1M:
        pci_info(dev, "1M mem BAR treated as 32-bit BAR")
    elif mem_type == PCI_BASE_ADDRESS_MEM_TYPE_64:
        flags |= IORESOURCE_MEM_64
    elif mem_type != 0:
        pci_info(dev, f"mem unknown type {mem_type:x} treated as 32-bit BAR")
    return flags


def pci_size(base: int, maxbase: int, mask: int) -> int:
    size = mask & maxbase
    if not size:
        return 0
    size = size & ~(size - 1)
    if base == maxbase and ((base | (size - 1)) & mask) != mask:
        return 0
    return size


def __pci_read_base(dev: pci_dev, res: resource, pos: int) -> int:
    """Size the BAR at config offset ``pos`` into ``res``; 1 if it is 64-bit (two slots)."""
    from vmdsim.hw.regs import PCI_BASE_ADDRESS_IO_MASK, PCI_BASE_ADDRESS_MEM_MASK
    from vmdsim.kernel.pci.resource import IORESOURCE_IO

    # Stop decoding while the BAR holds all-ones (no logging until decode is back).
    _, orig_cmd = pci_read_config_word(dev, PCI_COMMAND)
    if orig_cmd & PCI_COMMAND_DECODE_ENABLE:
        pci_write_config_word(dev, PCI_COMMAND, orig_cmd & ~PCI_COMMAND_DECODE_ENABLE)
    res.name = pci_name(dev)
    _, l = pci_read_config_dword(dev, pos)
    pci_write_config_dword(dev, pos, l | 0xFFFFFFFF)
    _, sz = pci_read_config_dword(dev, pos)
    pci_write_config_dword(dev, pos, l)
    if PCI_POSSIBLE_ERROR(sz):
        sz = 0
    if PCI_POSSIBLE_ERROR(l):
        l = 0
    res.flags = decode_bar(dev, l) | IORESOURCE_SIZEALIGN
    if res.flags & IORESOURCE_IO:
        l64 = l & PCI_BASE_ADDRESS_IO_MASK
        sz64 = sz & PCI_BASE_ADDRESS_IO_MASK
        mask64 = PCI_BASE_ADDRESS_IO_MASK & 0xFFFF
    else:
        l64 = l & PCI_BASE_ADDRESS_MEM_MASK
        sz64 = sz & PCI_BASE_ADDRESS_MEM_MASK
        mask64 = PCI_BASE_ADDRESS_MEM_MASK
    if res.flags & IORESOURCE_MEM_64:
        _, l = pci_read_config_dword(dev, pos + 4)
        pci_write_config_dword(dev, pos + 4, 0xFFFFFFFF)
        _, sz = pci_read_config_dword(dev, pos + 4)
        pci_write_config_dword(dev, pos + 4, l)
        l64 |= l << 32
        sz64 |= sz << 32
        mask64 |= 0xFFFFFFFF << 32
    if orig_cmd & PCI_COMMAND_DECODE_ENABLE:
        pci_write_config_word(dev, PCI_COMMAND, orig_cmd)
    is64 = 1 if res.flags & IORESOURCE_MEM_64 else 0
    if not sz64:
        res.flags = 0
        return is64
    sz64 = pci_size(l64, sz64, mask64)
    if not sz64:
        pci_info(dev, f"BAR at {pos:#x}: invalid; can't size")
        res.flags = 0
        return is64
    region = (l64, l64 + sz64 - 1)
    pcibios_bus_to_resource(dev.bus, res, region)
    inverted = pcibios_resource_to_bus(dev.bus, res)
    if inverted[0] != region[0]:
        res.flags |= IORESOURCE_UNSET
        res.start = 0
        res.end = region[1] - region[0]
        pci_info(dev, f"BAR {(pos - 0x10) // 4}: initial BAR value {region[0]:#010x} invalid")
    pci_info(dev, f"BAR {(pos - 0x10) // 4} {format_resource(res)}")
    return is64


def pci_read_bases(dev: pci_dev, howmany: int, rom: int) -> None:
    pos = 0
    while pos < howmany:
        res = dev.resource[pos]
        reg = 0x10 + (pos << 2)
        pos += __pci_read_base(dev, res, reg)
        pos += 1
    _ = rom  # no expansion ROMs in the model


def pci_read_bridge_windows(bridge: pci_dev) -> None:
    """Find which windows the bridge implements (I/O, prefetchable, 64-bit prefetchable)."""
    _, io = pci_read_config_word(bridge, PCI_IO_BASE)
    if not io:
        pci_write_config_word(bridge, PCI_IO_BASE, 0xE0F0)
        _, io = pci_read_config_word(bridge, PCI_IO_BASE)
        pci_write_config_word(bridge, PCI_IO_BASE, 0)
    if io:
        bridge.io_window = True
    _, pmem = pci_read_config_dword(bridge, PCI_PREF_MEMORY_BASE)
    if not pmem:
        pci_write_config_dword(bridge, PCI_PREF_MEMORY_BASE, 0xFFE0FFF0)
        _, pmem = pci_read_config_dword(bridge, PCI_PREF_MEMORY_BASE)
        pci_write_config_dword(bridge, PCI_PREF_MEMORY_BASE, 0)
    if not pmem:
        return
    bridge.pref_window = True
    if (pmem & PCI_PREF_RANGE_TYPE_MASK) == PCI_PREF_RANGE_TYPE_64:
        # The bridge claims a 64-bit window: check the upper base bits are writable.
        _, saved = pci_read_config_dword(bridge, PCI_PREF_BASE_UPPER32)
        pci_write_config_dword(bridge, PCI_PREF_BASE_UPPER32, 0xFFFFFFFF)
        _, tmp = pci_read_config_dword(bridge, PCI_PREF_BASE_UPPER32)
        pci_write_config_dword(bridge, PCI_PREF_BASE_UPPER32, saved)
        if tmp:
            bridge.pref_64_window = True


def pci_read_bridge_mmio(dev: pci_dev, res: resource) -> None:
    _, base_lo = pci_read_config_word(dev, PCI_MEMORY_BASE)
    _, limit_lo = pci_read_config_word(dev, PCI_MEMORY_LIMIT)
    base = (base_lo & PCI_MEMORY_RANGE_MASK) << 16
    limit = (limit_lo & PCI_MEMORY_RANGE_MASK) << 16
    if base <= limit:
        res.flags = (base_lo & PCI_MEMORY_RANGE_TYPE_MASK) | IORESOURCE_MEM
        pcibios_bus_to_resource(dev.bus, res, (base, limit + 0xFFFFF))
        pci_info(dev, f"  bridge window {format_resource(res)}")


def pci_read_bridge_mmio_pref(dev: pci_dev, res: resource) -> None:
    _, base_lo = pci_read_config_word(dev, PCI_PREF_MEMORY_BASE)
    _, limit_lo = pci_read_config_word(dev, PCI_PREF_MEMORY_LIMIT)
    base = (base_lo & PCI_PREF_RANGE_MASK) << 16
    limit = (limit_lo & PCI_PREF_RANGE_MASK) << 16
    if (base_lo & PCI_PREF_RANGE_TYPE_MASK) == PCI_PREF_RANGE_TYPE_64:
        _, base_hi = pci_read_config_dword(dev, PCI_PREF_BASE_UPPER32)
        _, limit_hi = pci_read_config_dword(dev, PCI_PREF_LIMIT_UPPER32)
        base |= base_hi << 32
        limit |= limit_hi << 32
    if base <= limit:
        res.flags = ((base_lo & PCI_PREF_RANGE_TYPE_MASK) | IORESOURCE_MEM
                     | IORESOURCE_PREFETCH)
        if res.flags & PCI_PREF_RANGE_TYPE_64:
            res.flags |= IORESOURCE_MEM_64
        pcibios_bus_to_resource(dev.bus, res, (base, limit + 0xFFFFF))
        pci_info(dev, f"  bridge window {format_resource(res)}")


def pci_read_bridge_bases(child: pci_bus) -> None:
    """Read the windows of the bridge above ``child`` into its window resources."""
    if pci_is_root_bus(child):
        return
    dev = child.self
    pci_info(dev, f"PCI bridge to {format_resource(child.busn_res)}")
    pci_bus_remove_resources(child)
    for i in range(PCI_BRIDGE_RESOURCE_NUM):
        child.resource[i] = dev.resource[PCI_BRIDGE_RESOURCES + i]
    pci_read_bridge_mmio(dev, child.resource[1])
    pci_read_bridge_mmio_pref(dev, child.resource[2])


def pcibios_fixup_bus(bus: pci_bus) -> None:
    """x86: read the bridge windows of a newly scanned bus."""
    pci_read_bridge_bases(bus)


def pci_setup_device(dev: pci_dev) -> int:
    """Read ``dev``'s header: identity, class, capabilities, BARs; 0 or -EIO."""
    _, hdr_type = pci_read_config_byte(dev, PCI_HEADER_TYPE)
    dev.sysdata = dev.bus.sysdata
    dev.dev.parent = dev.bus.dev
    dev.hdr_type = hdr_type & PCI_HEADER_TYPE_MASK
    dev.multifunction = bool(hdr_type & PCI_HEADER_TYPE_MFD)
    set_pcie_port_type(dev)
    dev.dma_mask = 0xFFFFFFFF
    dev.dev.init_name = pci_name(dev)
    _, cls = pci_read_config_dword(dev, PCI_CLASS_REVISION)
    dev.revision = cls & 0xFF
    dev.class_ = cls >> 8
    dev.cfg_size = pci_cfg_space_size(dev)
    dev.current_state = PCI_UNKNOWN
    kind = {0: "PCIe Endpoint", 4: "PCIe Root Port", 9: "PCIe Root Complex Integrated Endpoint",
            5: "PCIe Switch Upstream Port", 6: "PCIe Switch Downstream Port"}
    what = kind.get(pci_pcie_type(dev), "PCIe") if pci_is_pcie(dev) else "conventional PCI"
    pci_info(dev, f"[{dev.vendor:04x}:{dev.device:04x}] type {dev.hdr_type:02x} class "
                  f"{dev.class_:#08x} {what}")
    cls16 = dev.class_ >> 8
    if dev.hdr_type == PCI_HEADER_TYPE_NORMAL:
        if cls16 == PCI_CLASS_BRIDGE_PCI:
            return _bad_header(dev)
        pci_read_irq(dev)
        pci_read_bases(dev, PCI_STD_NUM_BARS, PCI_ROM_ADDRESS)
        _, dev.subsystem_vendor = pci_read_config_word(dev, PCI_SUBSYSTEM_VENDOR_ID)
        _, dev.subsystem_device = pci_read_config_word(dev, PCI_SUBSYSTEM_ID)
    elif dev.hdr_type == PCI_HEADER_TYPE_BRIDGE:
        pci_read_irq(dev)
        dev.transparent = (dev.class_ & 0xFF) == 1
        pci_read_bases(dev, 2, PCI_ROM_ADDRESS1)
        pci_read_bridge_windows(dev)
        set_pcie_hotplug_bridge(dev)
    else:
        pci_info(dev, f"unknown header type {dev.hdr_type:02x}, ignoring device")
        return -EIO
    return 0


def _bad_header(dev: pci_dev) -> int:
    pci_info(dev, f"ignoring class {dev.class_:#08x} (doesn't match header type "
                  f"{dev.hdr_type:02x})")
    dev.class_ = PCI_CLASS_NOT_DEFINED << 8
    return 0


# -- configuring a new device ------------------------------------------------------------------
def pci_configure_mps(dev: pci_dev) -> None:
    """Match the device's Max Payload Size to the upstream bridge (pcie_bus_config=default)."""
    k = dev.k
    bridge = pci_upstream_bridge(dev)
    if not pci_is_pcie(dev):
        return
    if pci_pcie_type(dev) == PCI_EXP_TYPE_RC_END:
        mps = 128 << dev.pcie_mpss
        if pcie_set_mps(dev, mps):
            pci_info(dev, f"can't set Max Payload Size to {mps}")
        return
    if bridge is None or not pci_is_pcie(bridge):
        return
    mps = pcie_get_mps(dev)
    p_mps = pcie_get_mps(bridge)
    if mps == p_mps:
        return
    if k.pci.pcie_bus_config == PCIE_BUS_TUNE_OFF:
        pci_info(dev, f"Max Payload Size {mps}, but upstream {pci_name(bridge)} set to "
                      f"{p_mps}; if necessary, use \"pci=pcie_bus_safe\" and report a bug")
        return
    if k.pci.pcie_bus_config != PCIE_BUS_DEFAULT:
        return
    mpss = 128 << dev.pcie_mpss
    if mpss < p_mps and pci_pcie_type(bridge) == PCI_EXP_TYPE_ROOT_PORT:
        pcie_set_mps(bridge, mpss)
        pci_info(dev, f"Upstream bridge's Max Payload Size set to {mpss} (was {p_mps}, "
                      f"max {128 << bridge.pcie_mpss})")
        p_mps = pcie_get_mps(bridge)
    if pcie_set_mps(dev, p_mps):
        pci_info(dev, f"can't set Max Payload Size to {p_mps}; if necessary, use "
                      "\"pci=pcie_bus_safe\" and report a bug")
        return
    pci_info(dev, f"Max Payload Size set to {p_mps} (was {mps}, max {mpss})")


def pci_configure_ltr(dev: pci_dev) -> None:
    """Enable LTR on a root port, and below it where every link on the path supports it."""
    host = pci_find_host_bridge(dev.bus)
    if not pci_is_pcie(dev):
        return
    _, cap = pcie_capability_read_dword(dev, PCI_EXP_DEVCAP2)
    if not cap & PCI_EXP_DEVCAP2_LTR:
        return
    _, ctl = pcie_capability_read_dword(dev, PCI_EXP_DEVCTL2)
    bridge = pci_upstream_bridge(dev)
    if ctl & PCI_EXP_DEVCTL2_LTR_EN:
        if pci_pcie_type(dev) == PCI_EXP_TYPE_ROOT_PORT or (bridge is not None
                                                            and bridge.ltr_path):
            dev.ltr_path = True
        return
    if not host.native_ltr:
        return
    if pci_pcie_type(dev) == PCI_EXP_TYPE_ROOT_PORT:
        pcie_capability_set_word(dev, PCI_EXP_DEVCTL2, PCI_EXP_DEVCTL2_LTR_EN)
        dev.ltr_path = True
        return
    if bridge is not None and bridge.ltr_path:
        pcie_capability_set_word(dev, PCI_EXP_DEVCTL2, PCI_EXP_DEVCTL2_LTR_EN)
        dev.ltr_path = True


def pci_configure_device(dev: pci_dev) -> None:
    pci_configure_mps(dev)
    pci_configure_ltr(dev)


def pcie_bus_configure_settings(bus: pci_bus) -> None:
    """MPS tuning for a hierarchy (``pci=pcie_bus_safe/perf/peer2peer``). With the default
    setting Linux leaves it to ``pci_configure_mps`` at device add: nothing to do here."""
    if bus.self is None or not pci_is_pcie(bus.self):
        return
    if bus.k.pci.pcie_bus_config in (PCIE_BUS_TUNE_OFF, PCIE_BUS_DEFAULT):
        return
    raise NotImplementedError("pcie_bus_config other than default/tune_off is not modelled")


def pci_msi_init(dev: pci_dev) -> None:
    dev.msi_cap = pci_find_capability(dev, PCI_CAP_ID_MSI)
    if not dev.msi_cap:
        return
    _, ctrl = pci_read_config_word(dev, dev.msi_cap + PCI_MSI_FLAGS)
    if ctrl & PCI_MSI_FLAGS_ENABLE:
        pci_write_config_word(dev, dev.msi_cap + PCI_MSI_FLAGS, ctrl & ~PCI_MSI_FLAGS_ENABLE)


def pci_msix_init(dev: pci_dev) -> None:
    dev.msix_cap = pci_find_capability(dev, PCI_CAP_ID_MSIX)
    if not dev.msix_cap:
        return
    _, ctrl = pci_read_config_word(dev, dev.msix_cap + PCI_MSIX_FLAGS)
    if ctrl & PCI_MSIX_FLAGS_ENABLE:
        pci_write_config_word(dev, dev.msix_cap + PCI_MSIX_FLAGS, ctrl & ~PCI_MSIX_FLAGS_ENABLE)


def pci_init_capabilities(dev: pci_dev) -> None:
    pci_msi_init(dev)
    pci_msix_init(dev)
    dev.pm_cap = pci_find_capability(dev, PCI_CAP_ID_PM)


def pci_set_msi_domain(dev: pci_dev) -> None:
    dev_set_msi_domain(dev.dev, dev_get_msi_domain(dev.bus.dev))


def pci_device_add(dev: pci_dev, bus: pci_bus) -> None:
    """Configure a newly found device and put it on its bus and the device list (not yet
    visible to drivers: ``pci_bus_add_device`` does that)."""
    pci_configure_device(dev)
    dev.dev.dma_mask = 0xFFFFFFFF
    dev.state_saved = False
    pci_init_capabilities(dev)
    bus.devices.append(dev)
    pci_set_msi_domain(dev)
    dev.match_driver = False
    device_add(dev)

