"""What the driver knows of each VMD part before it reads a register: the ID table.

Linux's ``vmd_ids[]`` carries each part's features in ``driver_data``; the
probe reads them from the matched entry. The register offsets and bits are
the ones ``drivers/pci/controller/vmd.c`` defines for itself (the VMD's
vendor registers are not in ``pci_regs.h``).
"""

from __future__ import annotations

from enum import IntFlag

from vmdsim.kernel.pci import PCI_DEVICE, pci_device_id

PCI_VENDOR_ID_INTEL = 0x8086

# BARs
VMD_CFGBAR = 0
VMD_MEMBAR1 = 2
VMD_MEMBAR2 = 4

# The VMD's vendor registers in its own config space
PCI_REG_VMCAP = 0x40
PCI_REG_VMCONFIG = 0x44
VMCONFIG_MSI_REMAP = 0x2  # set: MSI remapping *disabled* (bypass)
PCI_REG_VMLOCK = 0x70

# MEMBAR2 layout: MSI-X table and PBA in the first 0x2000 bytes, then (on parts that have
# them) the host-physical MEMBAR1/MEMBAR2 shadow registers.
MB2_SHADOW_OFFSET = 0x2000
MB2_SHADOW_SIZE = 16
MB2_CHILD_OFFSET = 0x2000

# The hypervisor-emulated vendor capability holding the same addresses
VMD_SHADOW_SIGNATURE = 0x53484457  # "SHDW", the dword at +4
VMD_SHADOW_MEMBAR1 = 8  # low dword; high at +12
VMD_SHADOW_MEMBAR2 = 16  # low dword; high at +20

# Bus restriction (VMCONFIG bits 9:8) -> first bus of the domain; 3 is invalid
VMD_BUS_START = {0: 0, 1: 128, 2: 224}

VMD_BIOS_PM_QUIRK_LTR = 0x1003  # 3145728 ns, max snoop and max no-snoop
CFGBAR_MIN_SIZE = 1 << 20  # one bus


def BUS_RESTRICT_CAP(vmcap: int) -> int:  # noqa: N802 - Linux's macro
    return vmcap & 0x1


def BUS_RESTRICT_CFG(vmcfg: int) -> int:  # noqa: N802
    return (vmcfg >> 8) & 0x3


def MB2_SHADOW_EN(vmlock: int) -> int:  # noqa: N802
    return vmlock & 0x2


class vmd_features(IntFlag):  # noqa: N801 - Linux's enum name
    """``enum vmd_features`` with Linux's bit values."""

    VMD_FEAT_HAS_MEMBAR_SHADOW = 1 << 0  # MEMBAR2 shadow registers (VMLOCK bit 1 enables)
    VMD_FEAT_HAS_BUS_RESTRICTIONS = 1 << 1  # VMCAP bit 0; VMCONFIG bits 9:8 pick bus start
    VMD_FEAT_HAS_MEMBAR_SHADOW_VSCAP = 1 << 2  # shadow addresses in the SHDW capability
    VMD_FEAT_OFFSET_FIRST_VECTOR = 1 << 3  # vector 0 is for software; children from 1
    VMD_FEAT_CAN_BYPASS_MSI_REMAP = 1 << 4  # VMCONFIG bit 1 may turn remapping off
    VMD_FEAT_BIOS_PM_QUIRK = 1 << 5  # enable ASPM and a default LTR firmware forgot


VMD_FEAT_HAS_MEMBAR_SHADOW = vmd_features.VMD_FEAT_HAS_MEMBAR_SHADOW
VMD_FEAT_HAS_BUS_RESTRICTIONS = vmd_features.VMD_FEAT_HAS_BUS_RESTRICTIONS
VMD_FEAT_HAS_MEMBAR_SHADOW_VSCAP = vmd_features.VMD_FEAT_HAS_MEMBAR_SHADOW_VSCAP
VMD_FEAT_OFFSET_FIRST_VECTOR = vmd_features.VMD_FEAT_OFFSET_FIRST_VECTOR
VMD_FEAT_CAN_BYPASS_MSI_REMAP = vmd_features.VMD_FEAT_CAN_BYPASS_MSI_REMAP
VMD_FEAT_BIOS_PM_QUIRK = vmd_features.VMD_FEAT_BIOS_PM_QUIRK

VMD_FEATS_CLIENT = (VMD_FEAT_HAS_MEMBAR_SHADOW_VSCAP | VMD_FEAT_HAS_BUS_RESTRICTIONS
                    | VMD_FEAT_OFFSET_FIRST_VECTOR | VMD_FEAT_BIOS_PM_QUIRK)

PCI_DEVICE_ID_INTEL_VMD_201D = 0x201D
PCI_DEVICE_ID_INTEL_VMD_28C0 = 0x28C0
PCI_DEVICE_ID_INTEL_VMD_9A0B = 0x9A0B

# Device ID -> features, in the order of Linux's vmd_ids[].
VMD_FEATURES: dict[int, vmd_features] = {
    PCI_DEVICE_ID_INTEL_VMD_201D: VMD_FEAT_HAS_MEMBAR_SHADOW_VSCAP,
    PCI_DEVICE_ID_INTEL_VMD_28C0: (VMD_FEAT_HAS_MEMBAR_SHADOW | VMD_FEAT_HAS_BUS_RESTRICTIONS
                                   | VMD_FEAT_CAN_BYPASS_MSI_REMAP),
    0x467F: VMD_FEATS_CLIENT,
    0x4C3D: VMD_FEATS_CLIENT,
    0xA77F: VMD_FEATS_CLIENT,
    0x7D0B: VMD_FEATS_CLIENT,
    0xAD0B: VMD_FEATS_CLIENT,
    PCI_DEVICE_ID_INTEL_VMD_9A0B: VMD_FEATS_CLIENT,
    # The newest client parts (one patch added B60B and B06F, a later one B07F); kernels
    # before them leave these parts unbound.
    0xB60B: VMD_FEATS_CLIENT,
    0xB06F: VMD_FEATS_CLIENT,
    0xB07F: VMD_FEATS_CLIENT,
}

vmd_ids: list[pci_device_id] = [
    PCI_DEVICE(PCI_VENDOR_ID_INTEL, device, driver_data=feats)
    for device, feats in VMD_FEATURES.items()
]
