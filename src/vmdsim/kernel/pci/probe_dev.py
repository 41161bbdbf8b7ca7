"""The per-function half of ``drivers/pci/probe.c``: reading a new function's header
and configuring it before it joins its bus.

``pci_setup_device`` reads the identity, class and header type, finds the
PCI Express capability, sizes the BARs (all-ones written with memory and I/O
decode turned off, as ``pci_read_bases`` does, so a half-sized BAR never
decodes) and, for a bridge, which windows it implements.
``pci_read_bridge_bases`` reads a bridge's windows into the resources of the
bus behind it (x86 ``pcibios_fixup_bus``).

``pci_device_add`` then configures Max Payload Size against the upstream
bridge and enables LTR where the path supports it (``pci_configure_device``),
finds the MSI/MSI-X capabilities (turning off an enable bit left set, as
``pci_msi_init``/``pci_msix_init`` do), the power-management and AER
capabilities, inherits the bus's MSI domain, and puts the device on its bus
and the device list (drivers see it only after ``pci_bus_add_device``).

Simplifications: no Enhanced Allocation, ROMs, SR-IOV, ARI, ATS/PRI/PASID,
ACS, PTM or DPC; a PCI Express function's config space is 4 KiB (when its
extended space answers), others 256 bytes.
"""

from __future__ import annotations

from typing import cast

from vmdsim.hw.regs import (
    PCI_BASE_ADDRESS_IO_MASK,
    PCI_BASE_ADDRESS_MEM_MASK,
    PCI_BASE_ADDRESS_MEM_PREFETCH,
    PCI_BASE_ADDRESS_MEM_TYPE_1M,
    PCI_BASE_ADDRESS_MEM_TYPE_64,
    PCI_BASE_ADDRESS_MEM_TYPE_MASK,
    PCI_BASE_ADDRESS_SPACE,
    PCI_BASE_ADDRESS_SPACE_IO,
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
    PCI_EXT_CAP_ID_ERR,
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
    PCI_MSI_FLAGS_64BIT,
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
    PCI_ROM_ADDRESS,
    PCI_ROM_ADDRESS1,
    PCI_STD_NUM_BARS,
    PCI_SUBSYSTEM_ID,
    PCI_SUBSYSTEM_VENDOR_ID,
)
from vmdsim.kernel.base.core import dev_get_msi_domain, dev_set_msi_domain
from vmdsim.kernel.errno import EIO
from vmdsim.kernel.pci.access import (
    PCI_POSSIBLE_ERROR,
    pci_read_config_byte,
    pci_read_config_dword,
    pci_read_config_word,
    pci_write_config_dword,
    pci_write_config_word,
    pcie_capability_read_dword,
    pcie_capability_set_word,
)
from vmdsim.kernel.pci.bus import (
    pci_bus_remove_resources,
    pcibios_bus_to_resource,
    pcibios_resource_to_bus,
)
from vmdsim.kernel.pci.driver import device_add
from vmdsim.kernel.pci.pci import (
    PCI_COMMAND_DECODE_ENABLE,
    pci_find_capability,
    pci_find_ext_capability,
    pcie_get_mps,
    pcie_set_mps,
)
from vmdsim.kernel.pci.pci_h import (
    PCI_BRIDGE_RESOURCE_NUM,
    PCI_BRIDGE_RESOURCES,
    PCI_CLASS_BRIDGE_PCI,
    PCI_CLASS_NOT_DEFINED,
    PCI_UNKNOWN,
    pci_bus,
    pci_dev,
    pci_find_host_bridge,
    pci_is_pcie,
    pci_is_root_bus,
    pci_name,
    pci_pcie_type,
    pci_upstream_bridge,
)
from vmdsim.kernel.pci.resource import (
    IORESOURCE_IO,
    IORESOURCE_MEM,
    IORESOURCE_MEM_64,
    IORESOURCE_PREFETCH,
    IORESOURCE_SIZEALIGN,
    IORESOURCE_UNSET,
    format_resource,
    resource,
)
from vmdsim.kernel.pci.subsys import PCIE_BUS_DEFAULT, PCIE_BUS_TUNE_OFF, pci_info
from vmdsim.kernel.rwsem import down_write, up_write


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
    assert dev is not None  # not a root bus: it was made for the bridge above it
    pci_info(dev, f"PCI bridge to {format_resource(child.busn_res)}")
    pci_bus_remove_resources(child)
    for i in range(PCI_BRIDGE_RESOURCE_NUM):
        child.resource[i] = dev.resource[PCI_BRIDGE_RESOURCES + i]
    pci_read_bridge_mmio(dev, cast(resource, child.resource[1]))  # set just above
    pci_read_bridge_mmio_pref(dev, cast(resource, child.resource[2]))


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


def pci_msi_init(dev: pci_dev) -> None:
    """Find MSI; turn off an enable bit firmware left set; note a 32-bit-only message."""
    dev.msi_cap = pci_find_capability(dev, PCI_CAP_ID_MSI)
    if not dev.msi_cap:
        return
    _, ctrl = pci_read_config_word(dev, dev.msi_cap + PCI_MSI_FLAGS)
    if ctrl & PCI_MSI_FLAGS_ENABLE:
        pci_write_config_word(dev, dev.msi_cap + PCI_MSI_FLAGS, ctrl & ~PCI_MSI_FLAGS_ENABLE)
    if not ctrl & PCI_MSI_FLAGS_64BIT:
        dev.no_64bit_msi = True


def pci_msix_init(dev: pci_dev) -> None:
    """Find MSI-X; turn off an enable bit firmware left set."""
    dev.msix_cap = pci_find_capability(dev, PCI_CAP_ID_MSIX)
    if not dev.msix_cap:
        return
    _, ctrl = pci_read_config_word(dev, dev.msix_cap + PCI_MSIX_FLAGS)
    if ctrl & PCI_MSIX_FLAGS_ENABLE:
        pci_write_config_word(dev, dev.msix_cap + PCI_MSIX_FLAGS, ctrl & ~PCI_MSIX_FLAGS_ENABLE)


def pci_aer_init(dev: pci_dev) -> None:
    """Where the AER extended capability is (the statistics Linux allocates are not kept)."""
    dev.aer_cap = pci_find_ext_capability(dev, PCI_EXT_CAP_ID_ERR)


def pci_init_capabilities(dev: pci_dev) -> None:
    """The capabilities the model knows: MSI, MSI-X, power management (found, no D-state
    handshake) and AER, in Linux's order."""
    pci_msi_init(dev)
    pci_msix_init(dev)
    dev.pm_cap = pci_find_capability(dev, PCI_CAP_ID_PM)
    pci_aer_init(dev)


def pci_set_msi_domain(dev: pci_dev) -> None:
    dev_set_msi_domain(dev.dev, dev_get_msi_domain(dev.bus.dev))


def pci_device_add(dev: pci_dev, bus: pci_bus) -> None:
    """Configure a newly found device and put it on its bus and the device list (not yet
    visible to drivers: ``pci_bus_add_device`` does that)."""
    pci_configure_device(dev)
    dev.dev.dma_mask = 0xFFFFFFFF
    dev.state_saved = False
    pci_init_capabilities(dev)
    sem = dev.k.pci.pci_bus_sem
    down_write(sem)
    bus.devices.append(dev)
    up_write(sem)
    pci_set_msi_domain(dev)
    dev.match_driver = False
    device_add(dev)

