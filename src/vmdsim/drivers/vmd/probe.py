"""Binding a VMD: ``vmd_probe`` and ``vmd_enable_domain``; unbinding: ``vmd_remove`` and
``vmd_shutdown``. The order is Linux's (``drivers/pci/controller/vmd.c``), step by step
as VMD-FACTS.md walks it.

Probe: refuse a CFGBAR under 1 MiB (-ENOMEM); take an instance number
(``vmd0``, ``vmd1``, ...); enable the device, map CFGBAR, bus mastering, a
64-bit DMA mask; ``first_vec = 1`` on client parts; then
:func:`vmd_enable_domain`:

1. shadow offsets: MEMBAR2 shadow registers (``VMLOCK`` bit 1) or the SHDW
   vendor capability give the host-physical MEMBAR bases; the resource offset
   is guest BAR minus host physical (0 on bare metal);
2. bus restriction: ``VMCONFIG`` bits 9:8 give the first bus (0, 128, 224;
   3 fails the probe with -ENODEV);
3. the root bus resources: the bus range CFGBAR covers, MEMBAR1, and MEMBAR2
   past the VMD's MSI-X table and PBA (+0x2000) and, on parts with shadow
   registers, past those too (+0x2010);
4. a PCI domain one above the highest in use, never below 0x10000;
5. MSI: unless the part can bypass remapping (and is not a guest with shadow
   offsets), allocate the VMD's own vectors with one list, one SRCU and one
   handler each, turn remapping on and create the VMD MSI domain with no
   parent; otherwise set the remap-disable bit, and children use the
   ordinary PCI/MSI domain;
6. create the root bus with ``vmd_ops``, copy the host bridge's native
   hotplug/AER/PME/LTR/DPC grants, attach the resources under the VMD's BARs,
   set the bus's MSI domain, add the ``domain`` sysfs link;
7. scan, clear the root ports' bridge windows firmware left
   (``vmd_domain_reset``), reset the secondary bus through the first child,
   assign resources, apply the BIOS PM quirk, MPS/MRRS, add devices (child
   drivers bind here).

A probe that fails at any step undoes everything it did: managed resources
(devres) are released by the driver core, the instance number is freed, an
MSI domain is removed, and the remap bit is put back as probe found it. (Linux
leaves the remap bit and the SRCU structures behind on some error paths; the
model does not.)

Where the model simplifies: no ACPI companion lookup (``vmd_acpi_begin/end``);
no NUMA node; the device's name is not a separate allocation.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from vmdsim.drivers.vmd.cfg import PCIE_ECAM_OFFSET, vmd_ops
from vmdsim.drivers.vmd.dev import (
    vmd_attach_resources,
    vmd_detach_resources,
    vmd_dev,
    vmd_module_of_driver,
    vmd_release_instance,
)
from vmdsim.drivers.vmd.features import (
    BUS_RESTRICT_CAP,
    BUS_RESTRICT_CFG,
    CFGBAR_MIN_SIZE,
    MB2_CHILD_OFFSET,
    MB2_SHADOW_EN,
    MB2_SHADOW_OFFSET,
    MB2_SHADOW_SIZE,
    PCI_REG_VMCAP,
    PCI_REG_VMCONFIG,
    PCI_REG_VMLOCK,
    VMD_BIOS_PM_QUIRK_LTR,
    VMD_BUS_START,
    VMD_CFGBAR,
    VMD_FEAT_BIOS_PM_QUIRK,
    VMD_FEAT_CAN_BYPASS_MSI_REMAP,
    VMD_FEAT_HAS_BUS_RESTRICTIONS,
    VMD_FEAT_HAS_MEMBAR_SHADOW,
    VMD_FEAT_HAS_MEMBAR_SHADOW_VSCAP,
    VMD_FEAT_OFFSET_FIRST_VECTOR,
    VMD_MEMBAR1,
    VMD_MEMBAR2,
    VMD_SHADOW_MEMBAR1,
    VMD_SHADOW_MEMBAR2,
    VMD_SHADOW_SIGNATURE,
)
from vmdsim.drivers.vmd.msi import (
    vmd_alloc_irqs,
    vmd_create_irq_domain,
    vmd_remove_irq_domain,
    vmd_restore_msi_remapping,
    vmd_set_msi_remapping,
)
from vmdsim.drivers.vmd.msi_parent import (
    vmd_create_irq_domain as vmd_create_msi_parent_domain,  # v6.17+
)
from vmdsim.hw.regs import (
    PCI_BASE_ADDRESS_MEM_MASK,
    PCI_CAP_ID_VNDR,
    PCI_CLASS_DEVICE,
    PCI_EXT_CAP_ID_LTR,
    PCI_HEADER_TYPE,
    PCI_HEADER_TYPE_BRIDGE,
    PCI_HEADER_TYPE_MASK,
    PCI_HEADER_TYPE_MFD,
    PCI_IO_BASE,
    PCI_IO_BASE_UPPER16,
    PCI_LTR_MAX_SNOOP_LAT,
    PCI_LTR_SCALE_MASK,
    PCI_LTR_VALUE_MASK,
    PCI_MEMORY_BASE,
    PCI_PREF_BASE_UPPER32,
    PCI_PREF_LIMIT_UPPER32,
    PCI_PREF_MEMORY_BASE,
)
from vmdsim.kernel.base.core import dev_get_msi_domain, dev_set_msi_domain
from vmdsim.kernel.errno import ENODEV, ENOMEM
from vmdsim.kernel.idr import ida_alloc, ida_free
from vmdsim.kernel.io import readb, readq, readw, writel, writew
from vmdsim.kernel.pci import (
    DMA_BIT_MASK,
    IORESOURCE_BUS,
    IORESOURCE_MEM_64,
    IORESOURCE_PCI_FIXED,
    PCI_CLASS_BRIDGE_PCI,
    PCI_D0,
    PCI_DEVFN,
    PCI_POSSIBLE_ERROR,
    PCIE_LINK_STATE_ALL,
    devm_kzalloc,
    dma_set_mask_and_coherent,
    pci_add_resource,
    pci_add_resource_offset,
    pci_assign_unassigned_bus_resources,
    pci_bus_add_devices,
    pci_create_root_bus,
    pci_dev,
    pci_device_id,
    pci_enable_link_state_locked,
    pci_find_capability,
    pci_find_ext_capability,
    pci_find_host_bridge,
    pci_free_resource_list,
    pci_get_drvdata,
    pci_iomap,
    pci_iounmap,
    pci_read_config_dword,
    pci_read_config_word,
    pci_remove_root_bus,
    pci_reset_bus,
    pci_scan_child_bus,
    pci_set_drvdata,
    pci_set_master,
    pci_set_power_state_locked,
    pci_stop_root_bus,
    pci_walk_bus,
    pci_write_config_dword,
    pcie_bus_configure_settings,
    pcim_enable_device,
    pcim_iomap,
    resource_size,
    sysfs_create_link,
    sysfs_remove_link,
    to_pci_host_bridge,
)
from vmdsim.kernel.pci.resource import IORESOURCE_SIZEALIGN
from vmdsim.kernel.pci.subsys import pci_err, pci_info, pci_warn

if TYPE_CHECKING:
    from vmdsim.kernel.core import Kernel

DOMAIN_MIN = 0x10000  # VMD domains start above the 16-bit ACPI _SEG numbers


# -- what the part tells about itself ----------------------------------------------------
def vmd_get_phys_offsets(vmd: vmd_dev, native_hint: bool) -> tuple[int, tuple[int, int]]:
    """(0 or -errno, (MEMBAR1 offset, MEMBAR2 offset)): guest BAR minus host physical.

    ``native_hint``: read the MEMBAR2 shadow registers (only while VMLOCK bit 1 is
    set); else the SHDW vendor capability, if present and signed."""
    dev = vmd.dev
    if native_hint:
        ret, vmlock = pci_read_config_dword(dev, PCI_REG_VMLOCK)
        if ret or PCI_POSSIBLE_ERROR(vmlock):
            return -ENODEV, (0, 0)
        if not MB2_SHADOW_EN(vmlock):
            return 0, (0, 0)
        membar2 = pci_iomap(dev, VMD_MEMBAR2, 0)
        if membar2 is None:
            return -ENOMEM, (0, 0)
        phys1 = readq(membar2 + MB2_SHADOW_OFFSET)
        phys2 = readq(membar2 + MB2_SHADOW_OFFSET + 8)
        pci_iounmap(dev, membar2)
    else:
        pos = pci_find_capability(dev, PCI_CAP_ID_VNDR)
        _, reg = pci_read_config_dword(dev, pos + 4)
        if not pos or reg != VMD_SHADOW_SIGNATURE:
            return 0, (0, 0)
        _, lo = pci_read_config_dword(dev, pos + VMD_SHADOW_MEMBAR1)
        _, hi = pci_read_config_dword(dev, pos + VMD_SHADOW_MEMBAR1 + 4)
        phys1 = hi << 32 | lo
        _, lo = pci_read_config_dword(dev, pos + VMD_SHADOW_MEMBAR2)
        _, hi = pci_read_config_dword(dev, pos + VMD_SHADOW_MEMBAR2 + 4)
        phys2 = hi << 32 | lo
    mask = PCI_BASE_ADDRESS_MEM_MASK | (0xFFFFFFFF << 32)
    return 0, (dev.resource[VMD_MEMBAR1].start - (phys1 & mask),
               dev.resource[VMD_MEMBAR2].start - (phys2 & mask))


def vmd_get_bus_number_start(vmd: vmd_dev) -> int:
    """Set ``busn_start`` from VMCONFIG bits 9:8 if VMCAP says they count; 0 or -ENODEV."""
    dev = vmd.dev
    _, reg = pci_read_config_word(dev, PCI_REG_VMCAP)
    if BUS_RESTRICT_CAP(reg):
        _, reg = pci_read_config_word(dev, PCI_REG_VMCONFIG)
        cfg = BUS_RESTRICT_CFG(reg)
        if cfg not in VMD_BUS_START:
            pci_err(dev, f"Unknown Bus Offset Setting ({cfg})")
            return -ENODEV
        vmd.busn_start = VMD_BUS_START[cfg]
    return 0


def vmd_find_free_domain(k: Kernel) -> int:
    """One above the highest domain of any root bus, and at least 0x10000."""
    domain = DOMAIN_MIN - 1
    bus = k.pci.pci_find_next_bus(None)
    while bus is not None:
        domain = max(domain, bus.domain_nr)
        bus = k.pci.pci_find_next_bus(bus)
    return domain + 1


# -- the domain's hardware, before and after the scan --------------------------------------
def vmd_domain_reset(vmd: vmd_dev) -> None:
    """Clear the bridge windows firmware left in the domain's PCI-to-PCI bridges (I/O,
    memory, prefetchable), through CFGBAR directly, so resource assignment starts clean."""
    base0 = vmd.cfgbar
    max_buses = resource_size(vmd.resources[0])
    for bus in range(max_buses):
        for dev in range(32):
            base = base0 + PCIE_ECAM_OFFSET(bus, PCI_DEVFN(dev, 0), 0)
            hdr_type = readb(base + PCI_HEADER_TYPE)
            functions = 8 if hdr_type & PCI_HEADER_TYPE_MFD else 1
            for fn in range(functions):
                base = base0 + PCIE_ECAM_OFFSET(bus, PCI_DEVFN(dev, fn), 0)
                hdr_type = readb(base + PCI_HEADER_TYPE) & PCI_HEADER_TYPE_MASK
                if hdr_type != PCI_HEADER_TYPE_BRIDGE or \
                        readw(base + PCI_CLASS_DEVICE) != PCI_CLASS_BRIDGE_PCI:
                    continue
                # I/O: limit below base while the upper halves change, then empty
                writel(0x0000FFFF, base + PCI_IO_BASE_UPPER16)
                writew(0x00F0, base + PCI_IO_BASE)
                writel(0, base + PCI_IO_BASE_UPPER16)
                # memory and prefetchable memory: base above limit (closed)
                writel(0x0000FFF0, base + PCI_MEMORY_BASE)
                writel(0, base + PCI_PREF_LIMIT_UPPER32)
                writel(0x0000FFF0, base + PCI_PREF_MEMORY_BASE)
                writel(0xFFFFFFFF, base + PCI_PREF_BASE_UPPER32)


def vmd_copy_host_bridge_flags(root_bridge: Any, vmd_bridge: Any) -> None:
    """The VMD is an aperture to ordinary root ports: grant its domain only what firmware
    granted the OS on the physical bus."""
    vmd_bridge.native_pcie_hotplug = root_bridge.native_pcie_hotplug
    vmd_bridge.native_shpc_hotplug = root_bridge.native_shpc_hotplug
    vmd_bridge.native_aer = root_bridge.native_aer
    vmd_bridge.native_pme = root_bridge.native_pme
    vmd_bridge.native_ltr = root_bridge.native_ltr
    vmd_bridge.native_dpc = root_bridge.native_dpc


def vmd_pm_enable_quirk(pdev: pci_dev, features: int) -> int:
    """Client parts: a default LTR where firmware left max snoop latency 0, and ASPM on
    every link (the laptop SoC needs both for its power states)."""
    if not features & VMD_FEAT_BIOS_PM_QUIRK:
        return 0
    pos = pci_find_ext_capability(pdev, PCI_EXT_CAP_ID_LTR)
    if pos:
        _, ltr_reg = pci_read_config_dword(pdev, pos + PCI_LTR_MAX_SNOOP_LAT)
        if not ltr_reg & (PCI_LTR_VALUE_MASK | PCI_LTR_SCALE_MASK):
            # max snoop in the low word, max no-snoop in the high word
            ltr = VMD_BIOS_PM_QUIRK_LTR
            pci_write_config_dword(pdev, pos + PCI_LTR_MAX_SNOOP_LAT, ltr << 16 | ltr)
            pci_info(pdev, "VMD: Default LTR value set by driver")
    # D0 before L1 PM substates (PCIe r6.0, sec 5.5.4), then every ASPM state the link has
    pci_set_power_state_locked(pdev, PCI_D0)
    pci_enable_link_state_locked(pdev, PCIE_LINK_STATE_ALL)
    return 0


def _membar_resource(vmd: vmd_dev, i: int, bar: int, name: str, skip: int) -> None:
    """Fill ``vmd.resources[i]`` from BAR ``bar``, ``skip`` bytes in; a window below 4 GiB
    loses IORESOURCE_MEM_64 so 32-bit BARs may be placed in it."""
    res = vmd.dev.resource[bar]
    flags = res.flags & ~IORESOURCE_SIZEALIGN
    if not res.end >> 32:
        flags &= ~IORESOURCE_MEM_64
    r = vmd.resources[i]
    r.name, r.start, r.end, r.flags, r.parent = name, res.start + skip, res.end, flags, res
    r.sibling = r.child = None


# -- the domain -------------------------------------------------------------------------------
def vmd_enable_domain(vmd: vmd_dev, features: int) -> int:
    """Everything between a mapped CFGBAR and a populated domain; 0 or -errno, and on
    failure nothing of the domain or the VMD MSI domain is left."""
    k = vmd.dev.k
    sd = vmd.sysdata
    offset = (0, 0)
    membar2_offset = MB2_CHILD_OFFSET
    if features & VMD_FEAT_HAS_MEMBAR_SHADOW:
        membar2_offset = MB2_SHADOW_OFFSET + MB2_SHADOW_SIZE
        ret, offset = vmd_get_phys_offsets(vmd, True)
        if ret:
            return ret
    elif features & VMD_FEAT_HAS_MEMBAR_SHADOW_VSCAP:
        ret, offset = vmd_get_phys_offsets(vmd, False)
        if ret:
            return ret
    if features & VMD_FEAT_HAS_BUS_RESTRICTIONS:
        ret = vmd_get_bus_number_start(vmd)
        if ret:
            return ret

    cfg = vmd.resources[0]
    cfg.name, cfg.start = "VMD CFGBAR", vmd.busn_start
    cfg.end = vmd.busn_start + (resource_size(vmd.dev.resource[VMD_CFGBAR]) >> 20) - 1
    cfg.flags = IORESOURCE_BUS | IORESOURCE_PCI_FIXED
    _membar_resource(vmd, 1, VMD_MEMBAR1, "VMD MEMBAR1", 0)
    _membar_resource(vmd, 2, VMD_MEMBAR2, "VMD MEMBAR2", membar2_offset)

    sd.vmd_dev = vmd.dev
    sd.domain = vmd_find_free_domain(k)
    sd.node = -1

    # A guest keeps remapping on: interrupt remapping of passed-through vectors is missing.
    if not features & VMD_FEAT_CAN_BYPASS_MSI_REMAP or offset[0] or offset[1]:
        ret = vmd_alloc_irqs(vmd)
        if ret:
            return ret
        vmd_set_msi_remapping(vmd, True)
        ret = (vmd_create_msi_parent_domain if vmd.module.msi_domain == "msi-parent"
               else vmd_create_irq_domain)(vmd)
        if ret:
            vmd_restore_msi_remapping(vmd)
            return ret
    else:
        vmd_set_msi_remapping(vmd, False)

    resources: list = []
    pci_add_resource(resources, vmd.resources[0])
    pci_add_resource_offset(resources, vmd.resources[1], offset[0])
    pci_add_resource_offset(resources, vmd.resources[2], offset[1])
    vmd.bus = pci_create_root_bus(k, vmd.dev.dev, vmd.busn_start, vmd_ops, sd, resources)
    if vmd.bus is None:
        pci_free_resource_list(resources)
        vmd_remove_irq_domain(vmd)
        vmd_restore_msi_remapping(vmd)
        return -ENODEV

    vmd_copy_host_bridge_flags(pci_find_host_bridge(vmd.dev.bus),
                               to_pci_host_bridge(vmd.bus.bridge))
    vmd_attach_resources(vmd)
    if vmd.irq_domain is not None:
        dev_set_msi_domain(vmd.bus.dev, vmd.irq_domain)
    else:
        dev_set_msi_domain(vmd.bus.dev, dev_get_msi_domain(vmd.dev.dev))
    if sysfs_create_link(vmd.dev.dev, vmd.bus.dev, "domain"):
        pci_warn(vmd.dev, "Can't create symlink to domain")

    pci_scan_child_bus(vmd.bus)
    vmd_domain_reset(vmd)
    # The root ports are not in MMCONFIG: reset below the first one through its child.
    for child in vmd.bus.children:
        if child.devices:
            first = child.devices[0]
            ret = pci_reset_bus(first)
            if ret:
                pci_warn(first, f"can't reset device: {ret}")
            break
    pci_assign_unassigned_bus_resources(vmd.bus)
    pci_walk_bus(vmd.bus, vmd_pm_enable_quirk, int(features))
    # The VMD root bus is not PCIe, so configure each real root port's hierarchy.
    for child in vmd.bus.children:
        pcie_bus_configure_settings(child)
    pci_bus_add_devices(vmd.bus)
    return 0


# -- the pci_driver callbacks ---------------------------------------------------------------
def vmd_probe(dev: pci_dev, id: pci_device_id) -> int:
    """Bind a VMD; 0 or -errno (and then nothing is left behind)."""
    module = vmd_module_of_driver(dev.driver)
    features = int(id.driver_data)
    if resource_size(dev.resource[VMD_CFGBAR]) < CFGBAR_MIN_SIZE:
        return -ENOMEM
    vmd = devm_kzalloc(dev.dev, vmd_dev, owner="vmd")
    if vmd is None:
        return -ENOMEM
    vmd.dev = dev
    vmd.module = module
    vmd.features = features
    vmd.instance = ida_alloc(module.instance_ida)
    vmd.name = f"vmd{vmd.instance}"
    vmd.protocol = module.protocol_for(vmd.instance)
    vmd.policy = module.policy_for(vmd.instance)

    err = pcim_enable_device(dev)
    if err < 0:
        return _out_release_instance(vmd, err)
    vmd.cfgbar = pcim_iomap(dev, VMD_CFGBAR, 0)
    if vmd.cfgbar is None:
        return _out_release_instance(vmd, -ENOMEM)
    pci_set_master(dev)
    if dma_set_mask_and_coherent(dev.dev, DMA_BIT_MASK(64)) and \
            dma_set_mask_and_coherent(dev.dev, DMA_BIT_MASK(32)):
        return _out_release_instance(vmd, -ENODEV)
    if features & VMD_FEAT_OFFSET_FIRST_VECTOR:
        vmd.first_vec = 1
    pci_set_drvdata(dev, vmd)
    err = vmd_enable_domain(vmd, features)
    if err:
        return _out_release_instance(vmd, err)
    module.devices.append(vmd)
    pci_info(dev, f"Bound to PCI domain {vmd.sysdata.domain:04x}")
    return 0


def _out_release_instance(vmd: vmd_dev, err: int) -> int:
    ida_free(vmd.module.instance_ida, vmd.instance)
    return err


def vmd_remove(dev: pci_dev) -> None:
    """Unbind: children first (their drivers unbind, their IRQs are freed), then the
    domain, the resources, the MSI domain, the instance number. The VMD's own
    handlers, SRCU structures, vector lists and vectors are managed (devres) and are
    released right after, in that order (Linux cleans the SRCU structures here)."""
    vmd = pci_get_drvdata(dev)
    pci_stop_root_bus(vmd.bus)
    sysfs_remove_link(vmd.dev.dev, "domain")
    pci_remove_root_bus(vmd.bus)
    vmd.bus = None
    vmd_detach_resources(vmd)
    vmd_remove_irq_domain(vmd)  # and an RFC parent domain under it (rfc_v3.py)
    vmd_release_instance(vmd)


def vmd_shutdown(dev: pci_dev) -> None:
    """Reboot: remove the MSI domain (and turn remapping back on if it was bypassed), so
    the next kernel finds the VMD as firmware left it."""
    vmd = pci_get_drvdata(dev)
    vmd_remove_irq_domain(vmd)
