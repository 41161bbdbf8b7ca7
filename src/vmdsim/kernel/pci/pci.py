"""Device-level PCI services (``drivers/pci/pci.c``, ``lib/pci_iomap.c``, ``drivers/pci/devres.c``).

Capability search, enabling and disabling a device (memory decode and bus
mastering, enabling the bridges above first), BAR region requests,
``pci_iomap``, MPS/MRRS helpers, config-state save/restore and a secondary
bus reset (``pci_reset_bus``).

Simplifications: a device is put in D0 by recording it (no PM capability
handshake and no D3 transitions); INTx routing is not modelled
(``pcibios_enable_irq`` is a no-op); the delays a bus reset needs are not
modelled (the hardware completes a reset at once).
"""

from __future__ import annotations

from vmdsim.hw.regs import (
    PCI_BRIDGE_CONTROL,
    PCI_BRIDGE_CTL_BUS_RESET,
    PCI_CAP_LIST_NEXT,
    PCI_CAPABILITY_LIST,
    PCI_CFG_SPACE_EXP_SIZE,
    PCI_CFG_SPACE_SIZE,
    PCI_COMMAND,
    PCI_COMMAND_INTX_DISABLE,
    PCI_COMMAND_IO,
    PCI_COMMAND_MASTER,
    PCI_COMMAND_MEMORY,
    PCI_EXP_DEVCTL,
    PCI_EXP_DEVCTL2,
    PCI_EXP_DEVCTL_PAYLOAD,
    PCI_EXP_DEVCTL_READRQ,
    PCI_EXP_LNKCTL,
    PCI_EXP_LNKCTL2,
    PCI_EXP_RTCTL,
    PCI_EXP_SLTCTL,
    PCI_HEADER_TYPE,
    PCI_HEADER_TYPE_BRIDGE,
    PCI_HEADER_TYPE_CARDBUS,
    PCI_HEADER_TYPE_MASK,
    PCI_HEADER_TYPE_NORMAL,
    PCI_INTERRUPT_PIN,
    PCI_STATUS,
    PCI_STATUS_CAP_LIST,
)
from vmdsim.kernel.base.devres import (
    devm_add_action,
    devm_remove_action,
    devres_add,
    devres_alloc,
    devres_free,
)
from vmdsim.kernel.errno import EBUSY, EINVAL, ENOTTY
from vmdsim.kernel.io import iomem
from vmdsim.kernel.pci.access import (
    PCIBIOS_SUCCESSFUL,
    pci_bus_read_config_byte,
    pci_bus_read_config_word,
    pci_read_config_byte,
    pci_read_config_dword,
    pci_read_config_word,
    pci_write_config_dword,
    pci_write_config_word,
    pcie_capability_clear_and_set_word,
    pcie_capability_read_word,
    pcie_capability_write_word,
)
from vmdsim.kernel.pci.pci_h import (
    PCI_BRIDGE_RESOURCES,
    PCI_D0,
    PCI_NUM_RESOURCES,
    PCI_ROM_RESOURCE,
    PCI_STD_RESOURCE_END,
    PCI_UNKNOWN,
    PciError,
    pci_bus,
    pci_dev,
    pci_is_enabled,
    pci_is_pcie,
    pci_resource_len,
    pci_resource_start,
    pci_upstream_bridge,
)
from vmdsim.kernel.pci.resource import (
    IORESOURCE_IO,
    IORESOURCE_MEM,
    IORESOURCE_UNSET,
    __release_region,
    __request_region,
    format_resource,
)
from vmdsim.kernel.pci.subsys import pci_err, pci_info

PCI_FIND_CAP_TTL = 48
PCI_COMMAND_DECODE_ENABLE = PCI_COMMAND_MEMORY | PCI_COMMAND_IO


def PCI_EXT_CAP_ID(header: int) -> int:
    return header & 0x0000FFFF


def PCI_EXT_CAP_VER(header: int) -> int:
    return (header >> 16) & 0xF


def PCI_EXT_CAP_NEXT(header: int) -> int:
    return (header >> 20) & 0xFFC


# -- capabilities -------------------------------------------------------------------
def __pci_find_next_cap_ttl(bus: pci_bus, devfn: int, pos: int, cap: int, ttl: int) -> int:
    _, pos = pci_bus_read_config_byte(bus, devfn, pos)
    while ttl > 0:
        ttl -= 1
        if pos < 0x40:
            break
        pos &= ~3
        _, ent = pci_bus_read_config_word(bus, devfn, pos)
        cap_id = ent & 0xFF
        if cap_id == 0xFF:
            break
        if cap_id == cap:
            return pos
        pos = ent >> 8
    return 0


def __pci_bus_find_cap_start(bus: pci_bus, devfn: int, hdr_type: int) -> int:
    _, status = pci_bus_read_config_word(bus, devfn, PCI_STATUS)
    if not status & PCI_STATUS_CAP_LIST:
        return 0
    if hdr_type in (PCI_HEADER_TYPE_NORMAL, PCI_HEADER_TYPE_BRIDGE):
        return PCI_CAPABILITY_LIST
    if hdr_type == PCI_HEADER_TYPE_CARDBUS:
        return 0x14  # PCI_CB_CAPABILITY_LIST
    return 0


def pci_find_next_capability(dev: pci_dev, pos: int, cap: int) -> int:
    """The next capability ``cap`` after the one at ``pos``; 0 if none."""
    return __pci_find_next_cap_ttl(dev.bus, dev.devfn, pos + PCI_CAP_LIST_NEXT, cap,
                                   PCI_FIND_CAP_TTL)


def pci_find_capability(dev: pci_dev, cap: int) -> int:
    """Offset of the first standard capability ``cap`` (PCI_CAP_ID_*); 0 if absent."""
    pos = __pci_bus_find_cap_start(dev.bus, dev.devfn, dev.hdr_type)
    if pos:
        pos = __pci_find_next_cap_ttl(dev.bus, dev.devfn, pos, cap, PCI_FIND_CAP_TTL)
    return pos


def pci_bus_find_capability(bus: pci_bus, devfn: int, cap: int) -> int:
    _, hdr = pci_bus_read_config_byte(bus, devfn, PCI_HEADER_TYPE)
    pos = __pci_bus_find_cap_start(bus, devfn, hdr & PCI_HEADER_TYPE_MASK)
    if pos:
        pos = __pci_find_next_cap_ttl(bus, devfn, pos, cap, PCI_FIND_CAP_TTL)
    return pos


def pci_find_next_ext_capability(dev: pci_dev, start: int, cap: int) -> int:
    """The next extended capability ``cap`` after ``start`` (0: from the beginning)."""
    ttl = (PCI_CFG_SPACE_EXP_SIZE - PCI_CFG_SPACE_SIZE) // 8
    if dev.cfg_size <= PCI_CFG_SPACE_SIZE:
        return 0
    pos = start or PCI_CFG_SPACE_SIZE
    ret, header = pci_read_config_dword(dev, pos)
    if ret != PCIBIOS_SUCCESSFUL or header == 0:
        return 0
    while ttl > 0:
        ttl -= 1
        if PCI_EXT_CAP_ID(header) == cap and pos != start:
            return pos
        pos = PCI_EXT_CAP_NEXT(header)
        if pos < PCI_CFG_SPACE_SIZE:
            break
        ret, header = pci_read_config_dword(dev, pos)
        if ret != PCIBIOS_SUCCESSFUL:
            break
    return 0


def pci_find_ext_capability(dev: pci_dev, cap: int) -> int:
    """Offset of extended capability ``cap`` (PCI_EXT_CAP_ID_*); 0 if absent."""
    return pci_find_next_ext_capability(dev, 0, cap)


# -- power state ---------------------------------------------------------------------
def pci_set_power_state(dev: pci_dev, state: int) -> int:
    """Only D0 is modelled: the device is recorded as powered up; 0."""
    if state != PCI_D0:
        raise NotImplementedError(f"{dev!r}: the model has no D1-D3 power states "
                                  f"(asked for D{state})")
    dev.current_state = PCI_D0
    return 0


pci_set_power_state_locked = pci_set_power_state


# -- enabling ----------------------------------------------------------------------
def pci_enable_resources(dev: pci_dev, mask: int) -> int:
    """Turn on decode for every assigned resource in ``mask``; -EINVAL if one is unassigned."""
    _, cmd = pci_read_config_word(dev, PCI_COMMAND)
    old_cmd = cmd
    for i, r in enumerate(dev.resource):
        if not mask & (1 << i):
            continue
        if not r.flags & (IORESOURCE_IO | IORESOURCE_MEM):
            continue
        if i == PCI_ROM_RESOURCE:
            continue  # no expansion ROMs in the model
        if r.flags & IORESOURCE_UNSET:
            pci_err(dev, f"BAR {i} {format_resource(r)}: not assigned; can't enable device")
            return -EINVAL
        if r.parent is None:
            pci_err(dev, f"BAR {i} {format_resource(r)}: not claimed; can't enable device")
            return -EINVAL
        if r.flags & IORESOURCE_IO:
            cmd |= PCI_COMMAND_IO
        if r.flags & IORESOURCE_MEM:
            cmd |= PCI_COMMAND_MEMORY
    if cmd != old_cmd:
        pci_info(dev, f"enabling device ({old_cmd:04x} -> {cmd:04x})")
        pci_write_config_word(dev, PCI_COMMAND, cmd)
    return 0


def do_pci_enable_device(dev: pci_dev, bars: int) -> int:
    err = pci_set_power_state(dev, PCI_D0)
    if err < 0:
        return err
    err = pci_enable_resources(dev, bars)  # x86 pcibios_enable_device
    if err < 0:
        return err
    if dev.msi_enabled or dev.msix_enabled:
        return 0
    _, pin = pci_read_config_byte(dev, PCI_INTERRUPT_PIN)
    if pin:
        _, cmd = pci_read_config_word(dev, PCI_COMMAND)
        if cmd & PCI_COMMAND_INTX_DISABLE:
            pci_write_config_word(dev, PCI_COMMAND, cmd & ~PCI_COMMAND_INTX_DISABLE)
    return 0


def pci_enable_bridge(dev: pci_dev) -> None:
    bridge = pci_upstream_bridge(dev)
    if bridge is not None:
        pci_enable_bridge(bridge)
    if pci_is_enabled(dev):
        if not dev.is_busmaster:
            pci_set_master(dev)
        return
    retval = pci_enable_device(dev)
    if retval:
        pci_err(dev, f"Error enabling bridge ({retval}), continuing")
    pci_set_master(dev)


def pci_enable_device_flags(dev: pci_dev, flags: int) -> int:
    dev.enable_cnt += 1
    if dev.enable_cnt > 1:
        return 0  # already enabled
    bridge = pci_upstream_bridge(dev)
    if bridge is not None:
        pci_enable_bridge(bridge)
    bars = 0
    for i in range(PCI_ROM_RESOURCE + 1):
        if dev.resource[i].flags & flags:
            bars |= 1 << i
    for i in range(PCI_BRIDGE_RESOURCES, PCI_NUM_RESOURCES):
        if dev.resource[i].flags & flags:
            bars |= 1 << i
    err = do_pci_enable_device(dev, bars)
    if err < 0:
        dev.enable_cnt -= 1
    return err


def pci_enable_device(dev: pci_dev) -> int:
    """Enable memory (and I/O) decode, after the bridges above; 0 or a negative errno."""
    return pci_enable_device_flags(dev, IORESOURCE_MEM | IORESOURCE_IO)


def pci_enable_device_mem(dev: pci_dev) -> int:
    return pci_enable_device_flags(dev, IORESOURCE_MEM)


def do_pci_disable_device(dev: pci_dev) -> None:
    _, cmd = pci_read_config_word(dev, PCI_COMMAND)
    if cmd & PCI_COMMAND_MASTER:
        pci_write_config_word(dev, PCI_COMMAND, cmd & ~PCI_COMMAND_MASTER)


def pci_disable_device(dev: pci_dev) -> None:
    """Drop one enable; the last one clears Bus Master (decode stays on, as in Linux)."""
    if dev.enable_cnt <= 0:
        pci_err(dev, "disabling already-disabled device")
        raise PciError(f"{dev!r}: pci_disable_device on a device that is not enabled "
                       "(unbalanced pci_enable_device/pci_disable_device)")
    dev.enable_cnt -= 1
    if dev.enable_cnt != 0:
        return
    do_pci_disable_device(dev)
    dev.is_busmaster = False


def __pci_set_master(dev: pci_dev, enable: bool) -> None:
    _, old_cmd = pci_read_config_word(dev, PCI_COMMAND)
    cmd = old_cmd | PCI_COMMAND_MASTER if enable else old_cmd & ~PCI_COMMAND_MASTER
    if cmd != old_cmd:
        pci_info(dev, f"{'enabling' if enable else 'disabling'} bus mastering")
        pci_write_config_word(dev, PCI_COMMAND, cmd)
    dev.is_busmaster = enable


def pci_set_master(dev: pci_dev) -> None:
    """Let the device master the bus (DMA and MSI writes)."""
    __pci_set_master(dev, True)


def pci_clear_master(dev: pci_dev) -> None:
    __pci_set_master(dev, False)


def pcim_disable_device(dev: pci_dev) -> None:
    """The managed release of ``pcim_enable_device``."""
    pci_disable_device(dev)
    dev.is_managed = False


def pcim_enable_device(dev: pci_dev) -> int:
    """``pci_enable_device`` undone automatically when the driver is unbound.

    As Linux does it: the release is registered first (that can fail with
    -ENOMEM), then the device enabled; if enabling fails, the release is taken
    back unrun."""
    ret = devm_add_action(dev.dev, pcim_disable_device, dev, "pcim_enable_device")
    if ret:
        return ret
    ret = pci_enable_device(dev)
    if ret:
        devm_remove_action(dev.dev, pcim_disable_device, dev)
        return ret
    dev.is_managed = True
    return 0


# -- BAR regions ----------------------------------------------------------------------
def pci_select_bars(dev: pci_dev, flags: int) -> int:
    bars = 0
    for i in range(PCI_STD_RESOURCE_END + 1):
        if dev.resource[i].flags & flags:
            bars |= 1 << i
    return bars


def pci_request_region(dev: pci_dev, bar: int, name: str) -> int:
    """Mark BAR ``bar``'s range busy for ``name`` in the iomem tree; 0 or -EBUSY."""
    if pci_resource_len(dev, bar) == 0:
        return 0
    r = dev.resource[bar]
    if r.flags & IORESOURCE_IO:
        pci_warn_io(dev, bar)
        return -EBUSY
    if r.flags & IORESOURCE_MEM:
        got = __request_region(dev.k, dev.k.pci.iomem_resource, pci_resource_start(dev, bar),
                               pci_resource_len(dev, bar), name)
        if got is None:
            pci_info(dev, f"BAR {bar}: can't reserve {format_resource(r)}")
            return -EBUSY
    return 0


def pci_warn_io(dev: pci_dev, bar: int) -> None:
    pci_info(dev, f"BAR {bar}: I/O space is not modelled; can't reserve")


def pci_release_region(dev: pci_dev, bar: int) -> None:
    if pci_resource_len(dev, bar) == 0:
        return
    if dev.resource[bar].flags & IORESOURCE_MEM:
        __release_region(dev.k, dev.k.pci.iomem_resource, pci_resource_start(dev, bar),
                         pci_resource_len(dev, bar))


def pci_request_selected_regions(dev: pci_dev, bars: int, name: str) -> int:
    done: list[int] = []
    for i in range(PCI_STD_RESOURCE_END + 1):
        if bars & (1 << i):
            if pci_request_region(dev, i, name):
                for j in reversed(done):
                    pci_release_region(dev, j)
                return -EBUSY
            done.append(i)
    return 0


def pci_release_selected_regions(dev: pci_dev, bars: int) -> None:
    for i in range(PCI_STD_RESOURCE_END + 1):
        if bars & (1 << i):
            pci_release_region(dev, i)


def pci_request_mem_regions(dev: pci_dev, name: str) -> int:
    return pci_request_selected_regions(dev, pci_select_bars(dev, IORESOURCE_MEM), name)


def pci_release_mem_regions(dev: pci_dev) -> None:
    pci_release_selected_regions(dev, pci_select_bars(dev, IORESOURCE_MEM))


def pci_request_regions(dev: pci_dev, name: str) -> int:
    return pci_request_selected_regions(dev, (1 << (PCI_STD_RESOURCE_END + 1)) - 1, name)


def pci_release_regions(dev: pci_dev) -> None:
    pci_release_selected_regions(dev, (1 << (PCI_STD_RESOURCE_END + 1)) - 1)


# -- iomap ---------------------------------------------------------------------------
def pci_iomap_range(dev: pci_dev, bar: int, offset: int = 0, maxlen: int = 0) -> iomem | None:
    """Map BAR ``bar`` (from ``offset``, at most ``maxlen`` bytes; 0: all); None on failure
    (no such BAR, an unimplemented or unassigned one, an I/O BAR, or no memory)."""
    if not 0 <= bar <= PCI_STD_RESOURCE_END:
        return None
    start = pci_resource_start(dev, bar)
    length = pci_resource_len(dev, bar)
    flags = dev.resource[bar].flags
    if length <= offset or not start:
        return None
    length -= offset
    start += offset
    if maxlen and length > maxlen:
        length = maxlen
    if flags & IORESOURCE_IO:
        return None  # no port I/O in the model
    if flags & IORESOURCE_MEM:
        return dev.k.io.ioremap(start, length, caller=f"pci_iomap {dev!r} BAR{bar}")
    return None


def pci_iomap(dev: pci_dev, bar: int, maxlen: int = 0) -> iomem | None:
    return pci_iomap_range(dev, bar, 0, maxlen)


def pci_iounmap(dev: pci_dev, addr: iomem) -> None:
    dev.k.io.iounmap(addr)


def pcim_iomap(dev: pci_dev, bar: int, maxlen: int = 0) -> iomem | None:
    """``pci_iomap`` undone automatically when the driver is unbound; None on failure
    (the devres node is allocated first, then the mapping, as Linux does)."""
    dr = devres_alloc(dev.dev, dev.k.io.iounmap, None, "pcim_iomap")
    if dr is None:
        return None
    addr = pci_iomap(dev, bar, maxlen)
    if addr is None:
        devres_free(dr)
        return None
    dr.data = addr
    devres_add(dev.dev, dr)
    return addr


def pcim_iounmap(dev: pci_dev, addr: iomem) -> None:
    devm_remove_action(dev.dev, dev.k.io.iounmap, addr)
    dev.k.io.iounmap(addr)


# -- PCI Express device control: MPS and MRRS ------------------------------------------
def pcie_get_mps(dev: pci_dev) -> int:
    _, ctl = pcie_capability_read_word(dev, PCI_EXP_DEVCTL)
    return 128 << ((ctl & PCI_EXP_DEVCTL_PAYLOAD) >> 5)


def pcie_set_mps(dev: pci_dev, mps: int) -> int:
    if mps < 128 or mps > 4096 or mps & (mps - 1):
        return -EINVAL
    v = mps.bit_length() - 8
    if v > dev.pcie_mpss:
        return -EINVAL
    return pcie_capability_clear_and_set_word(dev, PCI_EXP_DEVCTL, PCI_EXP_DEVCTL_PAYLOAD,
                                              v << 5)


def pcie_get_readrq(dev: pci_dev) -> int:
    _, ctl = pcie_capability_read_word(dev, PCI_EXP_DEVCTL)
    return 128 << ((ctl & PCI_EXP_DEVCTL_READRQ) >> 12)


def pcie_set_readrq(dev: pci_dev, rq: int) -> int:
    if rq < 128 or rq > 4096 or rq & (rq - 1):
        return -EINVAL
    v = rq.bit_length() - 8
    return pcie_capability_clear_and_set_word(dev, PCI_EXP_DEVCTL, PCI_EXP_DEVCTL_READRQ,
                                              v << 12)


# -- save / restore and bus reset --------------------------------------------------
_PCIE_SAVED = (PCI_EXP_DEVCTL, PCI_EXP_LNKCTL, PCI_EXP_SLTCTL, PCI_EXP_RTCTL, PCI_EXP_DEVCTL2,
               PCI_EXP_LNKCTL2)


def pci_save_state(dev: pci_dev) -> int:
    """Save the standard header (16 dwords) and the PCIe control registers."""
    dev.saved_config_space = [pci_read_config_dword(dev, i * 4)[1] for i in range(16)]
    dev.saved_pcie = ([pcie_capability_read_word(dev, pos)[1] for pos in _PCIE_SAVED]
                      if pci_is_pcie(dev) else None)
    dev.state_saved = True
    return 0


def pci_restore_state(dev: pci_dev) -> None:
    """Write the saved state back (PCIe registers first, then the header, BARs before
    the command register), as ``pci_restore_state`` does."""
    if not dev.state_saved:
        return
    if dev.saved_pcie is not None:
        for pos, val in zip(_PCIE_SAVED, dev.saved_pcie, strict=True):
            pcie_capability_write_word(dev, pos, val)
    saved = dev.saved_config_space
    assert saved is not None  # state_saved: pci_save_state filled it
    if dev.hdr_type == PCI_HEADER_TYPE_NORMAL:
        # Each range from its end down, BARs (4-9) before the command register.
        order = list(range(15, 9, -1)) + list(range(9, 3, -1)) + list(range(3, -1, -1))
    else:
        order = list(range(15, -1, -1))
    for i in order:
        _, cur = pci_read_config_dword(dev, i * 4)
        if cur != saved[i]:
            pci_write_config_dword(dev, i * 4, saved[i])
    restore_msi = dev.k.pci.restore_msi_state
    if restore_msi is not None:
        restore_msi(dev)
    dev.state_saved = False


def pci_reset_secondary_bus(dev: pci_dev) -> None:
    _, ctrl = pci_read_config_word(dev, PCI_BRIDGE_CONTROL)
    pci_write_config_word(dev, PCI_BRIDGE_CONTROL, ctrl | PCI_BRIDGE_CTL_BUS_RESET)
    # Linux waits 2 ms with reset asserted, then for the link and devices: no time here.
    pci_write_config_word(dev, PCI_BRIDGE_CONTROL, ctrl)


def pci_bridge_secondary_bus_reset(dev: pci_dev) -> int:
    pci_reset_secondary_bus(dev)
    return 0


def _bus_devices(bus: pci_bus) -> list[pci_dev]:
    out = []
    for dev in bus.devices:
        out.append(dev)
        if dev.subordinate is not None:
            out.extend(_bus_devices(dev.subordinate))
    return out


def pci_reset_bus(dev: pci_dev) -> int:
    """Secondary bus reset of the bridge above ``dev``, saving and restoring the state of
    every device below it."""
    bridge = dev.bus.self
    if bridge is None:
        return -ENOTTY  # a root bus cannot be reset this way
    devs = _bus_devices(dev.bus)
    for d in devs:
        # pci_dev_save_and_disable: save, then clear the command register except
        # INTx Disable, so no decode, no DMA and no MSI until the state is restored.
        pci_save_state(d)
        pci_write_config_word(d, PCI_COMMAND, PCI_COMMAND_INTX_DISABLE)
    pci_bridge_secondary_bus_reset(bridge)
    for d in devs:
        pci_restore_state(d)
    return 0


def pci_update_current_state(dev: pci_dev, state: int) -> None:
    if dev.current_state == PCI_UNKNOWN:
        dev.current_state = state
