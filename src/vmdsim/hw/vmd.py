"""The Intel Volume Management Device: an endpoint that is the host bridge of a hidden domain.

What the hardware is (VMD-FACTS.md; Linux ``drivers/pci/controller/vmd.c``):

- A Root Complex Integrated Endpoint on the primary domain's root bus,
  vendor 0x8086, class 0x010400 (RAID). Firmware moves root ports and the
  drives behind them out of the primary domain into the VMD's own domain,
  which the OS reaches only through the VMD's three BARs:

  ======  =========  ==========================================================
  BAR0    CFGBAR     ECAM of the hidden domain: ``((bus - bus_start) << 20) |
                     (devfn << 12) | reg``; 1/2/4-byte accesses become config
                     cycles on the hidden root bus
  BAR2    MEMBAR1    forwarded into the hidden domain; non-prefetchable, so the
                     root ports' memory windows and the drives' BARs fit (Linux
                     places NVMe BARs in MEMBAR1: see /proc/iomem in commit
                     "x86/PCI: VMD: Attach VMD resources to parent domain's
                     resource tree")
  BAR4    MEMBAR2    the VMD's own MSI-X table (+0) and PBA (+0x1000) in the
                     first 0x2000 bytes; the MEMBAR2 shadow registers at
                     +0x2000/+0x2008 on parts that have them (while VMLOCK
                     bit 1 is set); everything above is forwarded
  ======  =========  ==========================================================

- Vendor registers in its own config space: ``VMCAP`` (0x40, bit 0: bus
  number restriction supported), ``VMCONFIG`` (0x44, bits 9:8: the bus
  restriction firmware chose; bit 1: MSI remapping *disabled*), ``VMLOCK``
  (0x70, bit 1: MEMBAR2 shadow registers enabled).
- Interrupts from below: with remapping on, a child's MSI write to
  0xFEE00000 | (index << 12) does not reach the CPUs; the VMD raises vector
  ``index`` of its own MSI-X table instead, honouring that entry's mask and
  pending bit. On client parts (the IDs with ``OFFSET_FIRST_VECTOR``) vector
  0 is for software triggering only: a child message remapped to index 0 is
  not forwarded (f6b7bb847ca8, "vector 0 ... does not forward remapped
  MSIs"), and the driver keeps child IRQs off it. A message that is not
  forwarded, or whose index has no table entry, is counted in
  ``remap_dropped``. With remapping off (bypass, only on parts that can), child
  MSIs go on to the CPUs as the VMD's own bus-master writes.
- Everything else a child masters (DMA) leaves the VMD as the VMD's own
  bus-master transaction: the host, and its IOMMU, see the VMD's requester ID.

Guest pass-through (``host_phys``): the VMD's BARs then hold guest-physical
addresses while the hidden domain decodes host-physical ("bus") addresses,
so an access at guest BAR address A is forwarded at
``A - guest_bar_base + host_phys_base``. The shadow registers and the SHDW
capability report the host-physical bases; the driver adds their difference
to the guest BARs as a resource offset, so it programs bridge windows and
child BARs with the addresses the hidden domain really decodes. Bare metal
(``host_phys=None``) reports the BARs' own addresses and translates nothing.

Where the model simplifies:

- The SHDW vendor capability (at 0xE8, 24 bytes) is, on real systems,
  emulated by the hypervisor (QEMU's vfio VMD quirk) for parts without
  native shadow registers. The model builds it into those parts, so one
  object covers bare metal (it reports the BARs' own addresses) and
  pass-through. Both it and the MEMBAR2 shadow registers report each BAR
  as its register image (address | type bits), as QEMU copies the host's
  BAR registers; the driver masks the type bits off.
- ``VMCONFIG`` bits 9:8 and ``VMLOCK`` are set by firmware and read-only to
  software here; a restriction of 3 (invalid) leaves the hidden domain
  unreachable: CFGBAR and the MEMBARs decode nothing into it.
- Config writes complete at once (real parts post them, hence the driver's
  read-back); the config-access deadlock of some parts is not modelled.
- A child's write to another child's BAR (peer to peer) is not routed
  inside the domain by the VMD: like DMA, it goes up as the VMD's own write.
- No power-management capability, AER or INTx; the PCIe capability is that
  of an RC integrated endpoint (no link registers).
"""

from __future__ import annotations

from enum import IntFlag

from vmdsim.hw.bus import MasterAbortLog, PciBus, all_ones
from vmdsim.hw.function import Bar, PciFunction
from vmdsim.hw.msix import MsixCapability
from vmdsim.hw.regs import (
    MSI_ADDR_BASE,
    MSI_ADDR_END,
    PCI_CAP_EXP_ENDPOINT_SIZEOF_V2,
    PCI_CAP_ID_EXP,
    PCI_CAP_ID_VNDR,
    PCI_CLASS_STORAGE_RAID,
    PCI_EXP_DEVCAP,
    PCI_EXP_DEVCTL,
    PCI_EXP_DEVSTA,
    PCI_EXP_FLAGS,
    PCI_EXP_TYPE_RC_END,
    PCI_VENDOR_ID_INTEL,
    PCI_VNDR_LENGTH,
)

# -- the VMD's own config registers (names as vmd.c spells them) ---------------
PCI_REG_VMCAP = 0x40
VMCAP_BUS_RESTRICT = 0x1  # BUS_RESTRICT_CAP(vmcap)
PCI_REG_VMCONFIG = 0x44
VMCONFIG_MSI_REMAP = 0x2  # set: MSI remapping disabled (bypass)
VMCONFIG_BUS_RESTRICT_SHIFT = 8  # BUS_RESTRICT_CFG(vmcfg): bits 9:8
VMCONFIG_BUS_RESTRICT_MASK = 0x300
PCI_REG_VMLOCK = 0x70
VMLOCK_MB2_SHADOW_EN = 0x2  # MB2_SHADOW_EN(vmlock)

# BAR indices (VMD_CFGBAR, VMD_MEMBAR1, VMD_MEMBAR2)
VMD_CFGBAR = 0
VMD_MEMBAR1 = 2
VMD_MEMBAR2 = 4

# MEMBAR2 layout
VMD_MSIX_TABLE_OFFSET = 0x0000
VMD_MSIX_PBA_OFFSET = 0x1000
VMD_MSIX_MAX_VECTORS = 256  # the table must fit below the PBA; bits 19:12 hold 8 bits
MB2_SHADOW_OFFSET = 0x2000  # MEMBAR1 host-physical at +0, MEMBAR2 at +8
MB2_SHADOW_SIZE = 16
MB2_CHILD_OFFSET = 0x2000  # children's resources start here without shadow registers

# The SHDW vendor capability (where QEMU's vfio quirk places it)
VMD_SHADOW_CAP_POS = 0xE8
VMD_SHADOW_CAP_LEN = 24
VMD_SHADOW_CAP_VER = 1
VMD_SHADOW_SIGNATURE = 0x53484457  # "SHDW", the dword at +4
VMD_SHADOW_MEMBAR1 = 8  # low dword, high at +12
VMD_SHADOW_MEMBAR2 = 16  # low dword, high at +20

# Capability placement, clear of VMCAP/VMCONFIG (0x40-0x47) and VMLOCK (0x70)
VMD_MSIX_CAP_POS = 0x80
VMD_EXP_CAP_POS = 0x90

# Bus restriction (VMCONFIG bits 9:8) -> first bus number of the hidden domain
VMD_BUS_START = {0: 0, 1: 128, 2: 224}

PCI_DEVICE_ID_INTEL_VMD_201D = 0x201D
PCI_DEVICE_ID_INTEL_VMD_28C0 = 0x28C0
PCI_DEVICE_ID_INTEL_VMD_9A0B = 0x9A0B


class VmdFeatures(IntFlag):
    """Per-device-ID features, with the bit values of Linux's ``enum vmd_features``."""

    HAS_MEMBAR_SHADOW = 1 << 0  # MEMBAR2 shadow registers at +0x2000 (VMLOCK bit 1)
    HAS_BUS_RESTRICTIONS = 1 << 1  # VMCAP bit 0; VMCONFIG bits 9:8 pick the first bus
    HAS_MEMBAR_SHADOW_VSCAP = 1 << 2  # shadow addresses in the SHDW vendor capability
    OFFSET_FIRST_VECTOR = 1 << 3  # vector 0 is for software triggering: no remapped MSIs
    CAN_BYPASS_MSI_REMAP = 1 << 4  # VMCONFIG bit 1 is writable
    BIOS_PM_QUIRK = 1 << 5  # the driver enables ASPM/LTR below (driver-side)


VMD_FEATS_CLIENT = (VmdFeatures.HAS_MEMBAR_SHADOW_VSCAP | VmdFeatures.HAS_BUS_RESTRICTIONS
                    | VmdFeatures.OFFSET_FIRST_VECTOR | VmdFeatures.BIOS_PM_QUIRK)

# Device ID -> features: Linux's vmd_ids[] table.
VMD_FEATURES: dict[int, VmdFeatures] = {
    PCI_DEVICE_ID_INTEL_VMD_201D: VmdFeatures.HAS_MEMBAR_SHADOW_VSCAP,
    PCI_DEVICE_ID_INTEL_VMD_28C0: (VmdFeatures.HAS_MEMBAR_SHADOW
                                   | VmdFeatures.HAS_BUS_RESTRICTIONS
                                   | VmdFeatures.CAN_BYPASS_MSI_REMAP),
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

_CFG_SIZES = (1, 2, 4)
_MAX_CFGBAR = 256 << 20  # 256 buses of 1 MiB


def _known_ids() -> str:
    return ", ".join(f"{d:#06x}" for d in sorted(VMD_FEATURES))


class Vmd(PciFunction):
    """One VMD: its own config space and BARs, and the hidden domain behind them.

    ``hidden_bus`` is the hidden domain's root bus; root ports (bridges) are
    attached there. Its upstream port is the VMD itself, so everything the
    hidden domain masters arrives at :meth:`upstream_write`/:meth:`upstream_read`.
    """

    msix: MsixCapability  # the VMD's own vectors, always MSI-X (set in the constructor)

    def __init__(
        self,
        name: str,
        *,
        device_id: int = PCI_DEVICE_ID_INTEL_VMD_201D,
        aborts: MasterAbortLog,
        msix_vectors: int = 32,
        cfgbar_size: int = 32 << 20,
        membar1_size: int = 32 << 20,
        membar2_size: int = 1 << 20,
        bus_restriction: int = 0,
        vmlock: int = 0,
        host_phys: tuple[int, int] | None = None,
    ) -> None:
        features = VMD_FEATURES.get(device_id)
        if features is None:
            raise ValueError(f"{name}: unknown VMD device ID {device_id:#06x} "
                             f"(known: {_known_ids()})")
        if not 1 <= msix_vectors <= VMD_MSIX_MAX_VECTORS:
            raise ValueError(f"{name}: MSI-X table size {msix_vectors} outside "
                             f"1..{VMD_MSIX_MAX_VECTORS} (the table lives in MEMBAR2 "
                             f"below the PBA at {VMD_MSIX_PBA_OFFSET:#x})")
        if cfgbar_size > _MAX_CFGBAR:
            raise ValueError(f"{name}: CFGBAR of {cfgbar_size:#x} bytes is larger than "
                             f"256 buses ({_MAX_CFGBAR:#x})")
        if membar2_size <= MB2_CHILD_OFFSET:
            raise ValueError(f"{name}: MEMBAR2 of {membar2_size:#x} bytes leaves nothing "
                             f"above the MSI-X table and PBA (first {MB2_CHILD_OFFSET:#x} bytes)")
        if bus_restriction not in (0, 1, 2, 3):
            raise ValueError(f"{name}: VMCONFIG ({PCI_REG_VMCONFIG:#x}) bus restriction "
                             f"{bus_restriction} is not a 2-bit value (bits 9:8)")
        if bus_restriction and not features & VmdFeatures.HAS_BUS_RESTRICTIONS:
            raise ValueError(f"{name}: device {device_id:#06x} has no bus restriction "
                             f"(VMCAP {PCI_REG_VMCAP:#x} bit 0 is 0); VMCONFIG "
                             f"({PCI_REG_VMCONFIG:#x}) bits 9:8 must be 0, not {bus_restriction}")
        if not 0 <= vmlock <= 0xFFFFFFFF:
            raise ValueError(f"{name}: VMLOCK ({PCI_REG_VMLOCK:#x}) value {vmlock:#x} "
                             "is not a 32-bit register value")
        if vmlock & VMLOCK_MB2_SHADOW_EN and not features & VmdFeatures.HAS_MEMBAR_SHADOW:
            raise ValueError(f"{name}: VMLOCK ({PCI_REG_VMLOCK:#x}) bit 1 enables MEMBAR2 "
                             f"shadow registers, which device {device_id:#06x} does not have")
        bars = (Bar(VMD_CFGBAR, cfgbar_size, prefetchable=True),
                Bar(VMD_MEMBAR1, membar1_size, prefetchable=False),
                Bar(VMD_MEMBAR2, membar2_size, prefetchable=False))
        if host_phys is not None:
            if len(host_phys) != 2:
                raise ValueError(f"{name}: host_phys must be (MEMBAR1, MEMBAR2) host-physical "
                                 f"bases, got {host_phys!r}")
            for bar, base in zip(bars[1:], host_phys, strict=True):
                what = "MEMBAR1" if bar.index == VMD_MEMBAR1 else "MEMBAR2"
                if not 0 <= base < 1 << 64 or base & (bar.size - 1):
                    raise ValueError(f"{name}: host-physical {what} base {base:#x} is not a "
                                     f"64-bit address aligned to the BAR size {bar.size:#x}")

        super().__init__(name, PCI_VENDOR_ID_INTEL, device_id, PCI_CLASS_STORAGE_RAID,
                         bars=bars)
        self._features = features
        self._host_phys = host_phys
        self._usable = bus_restriction in VMD_BUS_START
        self._bus_start = VMD_BUS_START.get(bus_restriction)
        self._ecam_bus0 = self._bus_start or 0  # bus number at CFGBAR offset 0
        cfg = self.cfg

        # Vendor registers. VMCONFIG bit 1 is writable only on parts that can bypass.
        cfg.init(PCI_REG_VMCAP, 4,
                 VMCAP_BUS_RESTRICT if features & VmdFeatures.HAS_BUS_RESTRICTIONS else 0)
        cfg.init(PCI_REG_VMCONFIG, 4, bus_restriction << VMCONFIG_BUS_RESTRICT_SHIFT,
                 wmask=VMCONFIG_MSI_REMAP if features & VmdFeatures.CAN_BYPASS_MSI_REMAP else 0)
        cfg.init(PCI_REG_VMLOCK, 4, vmlock)
        self._shadow_regs = bool(features & VmdFeatures.HAS_MEMBAR_SHADOW
                                 and vmlock & VMLOCK_MB2_SHADOW_EN)

        # Standard capabilities, clear of the vendor registers.
        self.msix = MsixCapability(self, msix_vectors, VMD_MEMBAR2, VMD_MSIX_TABLE_OFFSET,
                                   VMD_MEMBAR2, VMD_MSIX_PBA_OFFSET, at=VMD_MSIX_CAP_POS)
        self._add_rc_end_capability()
        self.shadow_cap: int | None = None
        if features & VmdFeatures.HAS_MEMBAR_SHADOW_VSCAP:
            pos = cfg.add_capability(PCI_CAP_ID_VNDR, VMD_SHADOW_CAP_LEN, at=VMD_SHADOW_CAP_POS)
            cfg.init(pos + PCI_VNDR_LENGTH, 1, VMD_SHADOW_CAP_LEN)
            cfg.init(pos + PCI_VNDR_LENGTH + 1, 1, VMD_SHADOW_CAP_VER)
            cfg.init(pos + 4, 4, VMD_SHADOW_SIGNATURE)
            self.shadow_cap = pos

        # Where forwarded MEMBAR accesses land in the hidden domain (see _decode_changed).
        self._mb1_bus = 0
        self._mb2_bus = 0
        self._mb2_fwd = MB2_CHILD_OFFSET + (MB2_SHADOW_SIZE if self._shadow_regs else 0)
        self._update_shadow()
        self.finalize()

        self._nvec = msix_vectors
        self.remapped = [0] * msix_vectors  # child MSIs turned into each VMD vector
        self._remap_dropped = 0
        self.hidden_bus = PciBus(self, aborts, root_number=self._ecam_bus0)
        self._aborts = aborts

    def _add_rc_end_capability(self) -> None:
        """PCI Express capability v2 of an RC integrated endpoint: no link, no slot."""
        cfg = self.cfg
        pos = cfg.add_capability(PCI_CAP_ID_EXP, PCI_CAP_EXP_ENDPOINT_SIZEOF_V2,
                                 at=VMD_EXP_CAP_POS)
        cfg.init(pos + PCI_EXP_FLAGS, 2, 0x2 | (PCI_EXP_TYPE_RC_END << 4))
        cfg.init(pos + PCI_EXP_DEVCAP, 4, 1)  # 256-byte max payload
        # Error reporting, relaxed ordering, MPS, ext tag, no-snoop, MRRS (512 B at power-on).
        cfg.init(pos + PCI_EXP_DEVCTL, 2, 0x2810, wmask=0x79FF)
        cfg.init(pos + PCI_EXP_DEVSTA, 2, 0, w1c=0x000F)
        self.pcie_cap = pos

    # -- read-only views ------------------------------------------------------
    @property
    def features(self) -> VmdFeatures:
        return self._features

    @property
    def bus_start(self) -> int | None:
        """First bus number of the hidden domain; None when VMCONFIG bits 9:8 read 3 (invalid)."""
        return self._bus_start

    @property
    def remapping_enabled(self) -> bool:
        """VMCONFIG bit 1 clear: child MSIs are remapped onto the VMD's own vectors."""
        return not self.cfg.data[PCI_REG_VMCONFIG] & VMCONFIG_MSI_REMAP

    @property
    def remap_dropped(self) -> int:
        """Child MSIs not forwarded: their vector index (address bits 19:12) had no VMD
        table entry, or was a client part's vector 0."""
        return self._remap_dropped

    @property
    def shadow_registers_enabled(self) -> bool:
        """MEMBAR2 shadow registers present (feature) and enabled (VMLOCK bit 1)."""
        return self._shadow_regs

    def host_phys_bases(self) -> tuple[int, int]:
        """(MEMBAR1, MEMBAR2) as the hidden domain decodes them: host-physical bases."""
        if self._host_phys is not None:
            return self._host_phys
        return self.bar_address(VMD_MEMBAR1), self.bar_address(VMD_MEMBAR2)

    # -- BAR placement ----------------------------------------------------------
    def _decode_changed(self, off: int, size: int, value: int) -> None:
        super()._decode_changed(off, size, value)
        self._mb1_bus, self._mb2_bus = self.host_phys_bases()
        self._update_shadow()

    def _shadow_values(self) -> tuple[int, int]:
        """MEMBAR1, MEMBAR2 host-physical, as BAR register images (address | type bits)."""
        mb1, mb2 = self.host_phys_bases()
        return mb1 | self.bars[VMD_MEMBAR1].flags, mb2 | self.bars[VMD_MEMBAR2].flags

    def _update_shadow(self) -> None:
        pos = self.shadow_cap
        if pos is None:
            return
        mb1, mb2 = self._shadow_values()
        self.cfg.hw_write(pos + VMD_SHADOW_MEMBAR1, 8, mb1)
        self.cfg.hw_write(pos + VMD_SHADOW_MEMBAR2, 8, mb2)

    # -- memory transactions to the VMD's BARs ----------------------------------
    def mmio_read(self, bar: int, off: int, size: int) -> int:
        if bar == VMD_CFGBAR:
            return self._cfgbar_read(off, size)
        if bar == VMD_MEMBAR1:
            return self._forward_read(self._mb1_bus + off, size)
        if off >= self._mb2_fwd:
            return self._forward_read(self._mb2_bus + off, size)
        if off >= MB2_CHILD_OFFSET:  # the shadow registers
            if size not in (4, 8) or off % size:
                raise self.mmio_error("MEMBAR2 shadow registers", off, size,
                                      "access must be an aligned dword or qword")
            mb1, mb2 = self._shadow_values()
            rel = off - MB2_SHADOW_OFFSET
            value = (mb1 | mb2 << 64) >> (8 * rel)
            return value & all_ones(size)
        if self.msix.claims(bar, off):
            return self.msix.mmio_read(bar, off, size)
        return 0  # reserved space in the VMD's own part of MEMBAR2

    def mmio_write(self, bar: int, off: int, size: int, value: int) -> None:
        if bar == VMD_CFGBAR:
            self._cfgbar_write(off, size, value)
        elif bar == VMD_MEMBAR1:
            self._forward_write(self._mb1_bus + off, size, value)
        elif off >= self._mb2_fwd:
            self._forward_write(self._mb2_bus + off, size, value)
        elif off >= MB2_CHILD_OFFSET:
            if size not in (4, 8) or off % size:
                raise self.mmio_error("MEMBAR2 shadow registers", off, size,
                                      "access must be an aligned dword or qword")
            # read-only: the write is ignored, as the hardware does
        elif self.msix.claims(bar, off):
            self.msix.mmio_write(bar, off, size, value)

    def config_window(self, bus: int, devfn: int) -> int | None:
        """Where the CPU reaches ``bus``/``devfn`` of the hidden domain: its page of CFGBAR
        (as ``_cfg_target`` decodes it); None while CFGBAR does not decode."""
        rel = bus - self._ecam_bus0
        if not self._usable or not self.memory_enabled or not 0 <= rel < 256:
            return None
        base = self.bar_address(VMD_CFGBAR)
        if (rel + 1) << 20 > self.bars[VMD_CFGBAR].size:
            return None
        return base + (rel << 20 | devfn << 12)

    def _cfg_target(self, off: int, size: int, what: str) -> tuple[int, int, int] | None:
        if size not in _CFG_SIZES or off % size:
            raise self.mmio_error("CFGBAR", off, size,
                                  f"config {what} must be an aligned byte, word or dword")
        if not self._usable:
            return None
        bus = self._ecam_bus0 + (off >> 20)
        if bus > 0xFF:
            return None
        return bus, (off >> 12) & 0xFF, off & 0xFFF

    def _cfgbar_read(self, off: int, size: int) -> int:
        target = self._cfg_target(off, size, "read")
        if target is None:
            self._aborts.record("config-read", off)
            return all_ones(size)
        bus, devfn, reg = target
        return self.hidden_bus.config_read(bus, devfn, reg, size)

    def _cfgbar_write(self, off: int, size: int, value: int) -> None:
        target = self._cfg_target(off, size, "write")
        if target is None:
            self._aborts.record("config-write", off)
            return
        bus, devfn, reg = target
        self.hidden_bus.config_write(bus, devfn, reg, size, value)

    def _forward_read(self, addr: int, size: int) -> int:
        value = self.hidden_bus.mem_read(addr, size) if self._usable else None
        if value is None:
            self._aborts.record("mem-read", addr)
            return all_ones(size)
        return value

    def _forward_write(self, addr: int, size: int, value: int) -> None:
        if not (self._usable and self.hidden_bus.mem_write(addr, size, value)):
            self._aborts.record("mem-write", addr)

    # -- transactions mastered in the hidden domain -----------------------------
    def upstream_write(self, addr: int, size: int, value: int, requester: PciFunction) -> bool:
        """A write from below: remap it if it is an MSI, else send it on as our own."""
        if MSI_ADDR_BASE <= addr < MSI_ADDR_END and not (
                self.cfg.hw_read(PCI_REG_VMCONFIG, 1) & VMCONFIG_MSI_REMAP):
            index = (addr >> 12) & 0xFF
            if index < self._nvec and not (
                    index == 0 and self._features & VmdFeatures.OFFSET_FIRST_VECTOR):
                self.remapped[index] += 1
                self.msix.fire(index)  # masked: its Pending Bit is set instead
                return True
            self._remap_dropped += 1
            return False
        return self.bus_master_write(addr, size, value)

    def upstream_read(self, addr: int, size: int, requester: PciFunction) -> int | None:
        """A DMA read from below goes up as the VMD's own read."""
        return self.bus_master_read(addr, size)

    # -- reset ----------------------------------------------------------------
    def reset_state(self) -> None:
        """Remapping back on and every function in the hidden domain reset.

        ``reset()`` has already restored config space (so VMCONFIG) and the MSI-X
        state; the remap bit is cleared here too for a direct call.
        """
        self.cfg.hw_clear(PCI_REG_VMCONFIG, 1, VMCONFIG_MSI_REMAP)
        for fn in list(self.hidden_bus.devices.values()):
            fn.reset()  # a bridge resets everything below it in turn

