"""The VMD endpoint, driven as an OS drives it: ECAM for the VMD, CFGBAR and MMIO below it."""

import pytest

from vmdsim.errors import MmioAccessError
from vmdsim.hw.bridge import PciBridge
from vmdsim.hw.fabric import MMCONFIG_BASE, RootComplex, ecam_offset
from vmdsim.hw.function import Bar, PciFunction
from vmdsim.hw.msix import MsixCapability
from vmdsim.hw.regs import (
    PCI_BASE_ADDRESS_0,
    PCI_CAP_ID_EXP,
    PCI_CAP_ID_MSIX,
    PCI_CAP_ID_VNDR,
    PCI_CLASS_REVISION,
    PCI_COMMAND,
    PCI_COMMAND_MASTER,
    PCI_COMMAND_MEMORY,
    PCI_EXP_FLAGS,
    PCI_HEADER_TYPE,
    PCI_MEMORY_BASE,
    PCI_MSIX_FLAGS,
    PCI_MSIX_FLAGS_ENABLE,
    PCI_MSIX_PBA,
    PCI_MSIX_TABLE,
    PCI_PREF_BASE_UPPER32,
    PCI_PREF_LIMIT_UPPER32,
    PCI_PREF_MEMORY_BASE,
    PCI_PRIMARY_BUS,
    PCI_SECONDARY_BUS,
    PCI_SUBORDINATE_BUS,
    pci_devfn,
)
from vmdsim.hw.vmd import VMD_FEATURES, Vmd, VmdFeatures

VMD_SLOT = 0x0E
CFGBAR = 0x40_0000_0000
MEMBAR1 = 0x40_1000_0000
MEMBAR2 = 0xC000_0000
CHILD_BAR0 = 0x4000  # offset of the child's BAR0 in MEMBAR2 (above the VMD's own part)
CHILD_BAR2 = 0x0  # offset of the child's prefetchable BAR2 in MEMBAR1
RAM_TARGET = 0x10_0000
MEM_EN = PCI_COMMAND_MEMORY | PCI_COMMAND_MASTER


class ChildEndpoint(PciFunction):
    """Test-only device below the VMD: BAR0 (16 KiB, MSI-X at 0x2000, PBA 0x3000), BAR2 pref."""

    def __init__(self, name="child", nvec=4):
        super().__init__(name, 0x1234, 0x5678, 0x018000,
                         bars=(Bar(0, 0x4000), Bar(2, 0x4000, prefetchable=True)))
        self.add_pcie_capability(0)
        self.msix = MsixCapability(self, nvec, 0, 0x2000, 0, 0x3000)
        self.scratch = {}
        self.finalize()

    def mmio_read(self, bar, off, size):
        if self.msix.claims(bar, off):
            return self.msix.mmio_read(bar, off, size)
        return self.scratch.get((bar, off), 0)

    def mmio_write(self, bar, off, size, value):
        if self.msix.claims(bar, off):
            self.msix.mmio_write(bar, off, size, value)
        else:
            self.scratch[(bar, off)] = value

    # the device's own events
    def queue_completed(self, vector):
        return self.msix.fire(vector)

    def dma_write(self, addr, value):
        return self.bus_master_write(addr, 4, value)

    def dma_read(self, addr):
        return self.bus_master_read(addr, 4)


class Rig:
    """A root complex with one VMD at 00:0e.0, a root port and a child in its hidden domain."""

    def __init__(self, device_id=0x201D, *, child=True, cfgbar_size=32 << 20, **kw):
        self.rc = RootComplex(ncpus=4)
        self.irqs = []
        self.rc.apic.attach(lambda cpu, vec: self.irqs.append((cpu, vec)))
        self.vmd = Vmd("vmd0", device_id=device_id, aborts=self.rc.aborts,
                       cfgbar_size=cfgbar_size, **kw)
        self.rc.root_bus.attach(self.vmd, VMD_SLOT)
        self.rp = PciBridge("rp0", 0x8086, 0x2030, aborts=self.rc.aborts)
        self.rp.finalize()  # a stand-in root port: its power-on image is the bare bridge
        self.vmd.hidden_bus.attach(self.rp, 0)
        self.child = None
        if child:
            self.child = ChildEndpoint()
            self.rp.secondary.attach(self.child, 0)
        host_phys = kw.get("host_phys")
        # Addresses the hidden domain decodes ("bus" addresses): host-physical.
        self.mb1_bus, self.mb2_bus = host_phys if host_phys else (MEMBAR1, MEMBAR2)

    # -- the VMD's own config space, through ECAM ---------------------------------
    def cfg_addr(self, reg):
        return MMCONFIG_BASE + ecam_offset(0, pci_devfn(VMD_SLOT, 0), reg)

    def cfg_read(self, reg, size=4):
        return self.rc.mem_read(self.cfg_addr(reg), size)

    def cfg_write(self, reg, size, value):
        self.rc.mem_write(self.cfg_addr(reg), size, value)

    def find_cap(self, cap_id):
        pos = self.cfg_read(0x34, 1)
        while pos:
            if self.cfg_read(pos, 1) == cap_id:
                return pos
            pos = self.cfg_read(pos + 1, 1)
        return None

    def program_vmd(self):
        """What firmware and the driver do: place the BARs, enable memory and bus mastering."""
        for bar, base in ((0, CFGBAR), (2, MEMBAR1), (4, MEMBAR2)):
            off = PCI_BASE_ADDRESS_0 + 4 * bar
            self.cfg_write(off, 4, base & 0xFFFFFFFF)
            self.cfg_write(off + 4, 4, base >> 32)
        self.cfg_write(PCI_COMMAND, 2, MEM_EN)

    # -- the hidden domain, through CFGBAR ----------------------------------------
    def hcfg_addr(self, bus, slot, reg, fn=0):
        return CFGBAR + ecam_offset(bus - (self.vmd.bus_start or 0), pci_devfn(slot, fn), reg)

    def hcfg_read(self, bus, slot, reg, size=4):
        return self.rc.mem_read(self.hcfg_addr(bus, slot, reg), size)

    def hcfg_write(self, bus, slot, reg, size, value):
        self.rc.mem_write(self.hcfg_addr(bus, slot, reg), size, value)

    def hfind_cap(self, bus, slot, cap_id):
        pos = self.hcfg_read(bus, slot, 0x34, 1)
        while pos:
            if self.hcfg_read(bus, slot, pos, 1) == cap_id:
                return pos
            pos = self.hcfg_read(bus, slot, pos + 1, 1)
        return None

    def program_hidden(self):
        """Bus numbers, windows and BARs below the VMD, in bus addresses, as the driver would."""
        bs = self.vmd.bus_start
        self.hcfg_write(bs, 0, PCI_PRIMARY_BUS, 1, bs)
        self.hcfg_write(bs, 0, PCI_SECONDARY_BUS, 1, bs + 1)
        self.hcfg_write(bs, 0, PCI_SUBORDINATE_BUS, 1, bs + 1)
        lo, hi = self.mb2_bus, self.mb2_bus + (1 << 20) - 1
        self.hcfg_write(bs, 0, PCI_MEMORY_BASE, 4,
                        ((lo >> 16) & 0xFFF0) | (((hi >> 16) & 0xFFF0) << 16))
        lo, hi = self.mb1_bus, self.mb1_bus + (32 << 20) - 1
        self.hcfg_write(bs, 0, PCI_PREF_MEMORY_BASE, 4,
                        ((lo >> 16) & 0xFFF0) | (((hi >> 16) & 0xFFF0) << 16))
        self.hcfg_write(bs, 0, PCI_PREF_BASE_UPPER32, 4, lo >> 32)
        self.hcfg_write(bs, 0, PCI_PREF_LIMIT_UPPER32, 4, hi >> 32)
        self.hcfg_write(bs, 0, PCI_COMMAND, 2, MEM_EN)
        for bar, base in ((0, self.mb2_bus + CHILD_BAR0), (2, self.mb1_bus + CHILD_BAR2)):
            off = PCI_BASE_ADDRESS_0 + 4 * bar
            self.hcfg_write(bs + 1, 0, off, 4, base & 0xFFFFFFFF)
            self.hcfg_write(bs + 1, 0, off + 4, 4, base >> 32)
        self.hcfg_write(bs + 1, 0, PCI_COMMAND, 2, MEM_EN)

    # -- MSI-X, programmed through MMIO ------------------------------------------
    def vmd_vector(self, n, cpu, vector, masked=False):
        entry = MEMBAR2 + 16 * n
        self.rc.mem_write(entry, 4, 0xFEE00000 | (cpu << 12))
        self.rc.mem_write(entry + 4, 4, 0)
        self.rc.mem_write(entry + 8, 4, vector)
        self.rc.mem_write(entry + 12, 4, int(masked))

    def enable_vmd_msix(self):
        pos = self.find_cap(PCI_CAP_ID_MSIX)
        self.cfg_write(pos + PCI_MSIX_FLAGS, 2, PCI_MSIX_FLAGS_ENABLE)

    def child_vector(self, n, addr, data):
        entry = MEMBAR2 + CHILD_BAR0 + 0x2000 + 16 * n
        self.rc.mem_write(entry, 4, addr)
        self.rc.mem_write(entry + 4, 4, 0)
        self.rc.mem_write(entry + 8, 4, data)
        self.rc.mem_write(entry + 12, 4, 0)

    def enable_child_msix(self):
        bus = self.vmd.bus_start + 1
        pos = self.hfind_cap(bus, 0, PCI_CAP_ID_MSIX)
        self.hcfg_write(bus, 0, pos + PCI_MSIX_FLAGS, 2, PCI_MSIX_FLAGS_ENABLE)

    def up(self):
        """Everything programmed: VMD vectors 0..n-1 go to CPU n % 4, APIC vector 0x30 + n."""
        self.program_vmd()
        self.program_hidden()
        for n in range(self.vmd.msix.nvec):
            self.vmd_vector(n, n % 4, 0x30 + n)
        self.enable_vmd_msix()
        self.enable_child_msix()
        return self


def vmd_msi_addr(index):
    """The message the VMD driver composes for a child: x86 MSI base, index in bits 19:12."""
    return 0xFEE00000 | (index << 12)


# -- identity, BARs, capabilities -----------------------------------------------------
def test_ids_class_header_and_capabilities():
    rig = Rig(0x201D, msix_vectors=32)
    assert rig.cfg_read(0) == 0x201D8086
    assert rig.cfg_read(PCI_CLASS_REVISION) >> 8 == 0x010400
    assert rig.cfg_read(PCI_HEADER_TYPE, 1) == 0
    exp = rig.find_cap(PCI_CAP_ID_EXP)
    assert (rig.cfg_read(exp + PCI_EXP_FLAGS, 2) >> 4) & 0xF == 0x9  # RC integrated endpoint
    msix = rig.find_cap(PCI_CAP_ID_MSIX)
    assert rig.cfg_read(msix + PCI_MSIX_FLAGS, 2) & 0x7FF == 31
    assert rig.cfg_read(msix + PCI_MSIX_TABLE) == 0x0 | 4  # MEMBAR2 + 0
    assert rig.cfg_read(msix + PCI_MSIX_PBA) == 0x1000 | 4  # MEMBAR2 + 0x1000
    # No standard capability overlaps VMCAP/VMCONFIG (0x40-0x47) or VMLOCK (0x70-0x73).
    caps = rig.vmd.cfg.capabilities()
    assert {cid for cid, _ in caps} == {PCI_CAP_ID_MSIX, PCI_CAP_ID_EXP, PCI_CAP_ID_VNDR}
    assert all(pos >= 0x74 for _, pos in caps)
    assert Rig(0x28C0).find_cap(PCI_CAP_ID_VNDR) is None  # 0x28C0 has shadow registers instead


@pytest.mark.parametrize("device_id", sorted(VMD_FEATURES))
def test_shdw_capability_exists_exactly_on_vscap_parts(device_id):
    rig = Rig(device_id)
    has = bool(VMD_FEATURES[device_id] & VmdFeatures.HAS_MEMBAR_SHADOW_VSCAP)
    assert (rig.find_cap(PCI_CAP_ID_VNDR) is not None) == has
    assert rig.cfg_read(0, 2) == 0x8086 and rig.cfg_read(2, 2) == device_id


def test_bar_sizing_and_readback_for_cfgbar_membar1_membar2():
    rig = Rig(0x201D, cfgbar_size=64 << 20, membar1_size=32 << 20, membar2_size=1 << 20)
    assert rig.cfg_read(0x10) == 0xC  # 64-bit prefetchable, unassigned
    assert rig.cfg_read(0x18) == 0x4  # MEMBAR1: 64-bit non-prefetchable
    assert rig.cfg_read(0x20) == 0x4  # 64-bit non-prefetchable
    for reg in range(0x10, 0x28, 4):
        rig.cfg_write(reg, 4, 0xFFFFFFFF)
    assert [rig.cfg_read(reg) for reg in range(0x10, 0x28, 4)] == [
        0xFC00000C, 0xFFFFFFFF,  # CFGBAR: 64 MiB
        0xFE000004, 0xFFFFFFFF,  # MEMBAR1: 32 MiB
        0xFFF00004, 0xFFFFFFFF,  # MEMBAR2: 1 MiB
    ]
    rig.program_vmd()
    assert [rig.cfg_read(reg) for reg in range(0x10, 0x28, 4)] == [
        (CFGBAR & 0xFFFFFFFF) | 0xC, CFGBAR >> 32,
        (MEMBAR1 & 0xFFFFFFFF) | 0x4, MEMBAR1 >> 32,
        MEMBAR2 | 0x4, 0,
    ]


# -- VMCAP / VMCONFIG / VMLOCK ----------------------------------------------------------
@pytest.mark.parametrize("device_id, kw, vmcap, vmconfig, vmlock, bypass_writable", [
    (0x201D, {}, 0, 0x000, 0, False),
    (0x28C0, {}, 1, 0x000, 0, True),
    (0x28C0, {"bus_restriction": 1, "vmlock": 0x2}, 1, 0x100, 0x2, True),
    (0x467F, {"bus_restriction": 2}, 1, 0x200, 0, False),
    (0x9A0B, {}, 1, 0x000, 0, False),
    (0xB07F, {}, 1, 0x000, 0, False),
])
def test_vendor_registers_per_device_id(device_id, kw, vmcap, vmconfig, vmlock, bypass_writable):
    rig = Rig(device_id, **kw)
    assert rig.cfg_read(0x40, 2) == vmcap
    assert rig.cfg_read(0x44, 2) == vmconfig
    assert rig.cfg_read(0x70) == vmlock
    # The driver's read-modify-write of the remap-disable bit (vmd_set_msi_remapping).
    rig.cfg_write(0x44, 2, rig.cfg_read(0x44, 2) | 0x2)
    assert rig.cfg_read(0x44, 2) == vmconfig | (0x2 if bypass_writable else 0)
    assert rig.vmd.remapping_enabled is not bypass_writable
    # Firmware-set fields are read-only to software.
    rig.cfg_write(0x44, 2, 0x0300)
    rig.cfg_write(0x70, 4, 0xFFFFFFFF)
    rig.cfg_write(0x40, 4, 0xFFFFFFFF)
    assert rig.cfg_read(0x44, 2) & 0x300 == vmconfig
    assert rig.cfg_read(0x70) == vmlock
    assert rig.cfg_read(0x40, 2) == vmcap


def test_bad_construction_is_rejected_with_a_clear_message():
    from vmdsim.hw.bus import MasterAbortLog

    aborts = MasterAbortLog()
    with pytest.raises(ValueError, match=r"unknown VMD device ID 0x1234 \(known: 0x201d, "):
        Vmd("vmd0", device_id=0x1234, aborts=aborts)
    with pytest.raises(ValueError, match=r"vmd0: device 0x201d has no bus restriction.*VMCONFIG"):
        Vmd("vmd0", device_id=0x201D, aborts=aborts, bus_restriction=1)
    with pytest.raises(ValueError, match=r"VMLOCK \(0x70\) bit 1"):
        Vmd("vmd0", device_id=0x201D, aborts=aborts, vmlock=0x2)
    with pytest.raises(ValueError, match="not a 2-bit value"):
        Vmd("vmd0", device_id=0x28C0, aborts=aborts, bus_restriction=4)
    with pytest.raises(ValueError, match="MSI-X table size 257"):
        Vmd("vmd0", aborts=aborts, msix_vectors=257)
    with pytest.raises(ValueError, match="MEMBAR2 base 0x1000 is not"):
        Vmd("vmd0", aborts=aborts, host_phys=(0, 0x1000))
    with pytest.raises(ValueError, match="MEMBAR2 of 0x2000 bytes"):
        Vmd("vmd0", aborts=aborts, membar2_size=0x2000)


# -- CFGBAR: the hidden domain's ECAM -------------------------------------------------
@pytest.mark.parametrize("restriction, start", [(0, 0), (1, 128), (2, 224)])
def test_cfgbar_offset_zero_reaches_bus_start(restriction, start):
    rig = Rig(0x28C0, bus_restriction=restriction)
    assert rig.vmd.bus_start == start
    assert rig.cfg_read(0x44, 2) >> 8 & 3 == restriction  # what the driver reads
    rig.program_vmd()
    assert rig.rc.mem_read(CFGBAR, 4) == 0x20308086  # offset 0: the root port on bus_start
    assert rig.rc.mem_read(CFGBAR + (1 << 20), 4) == 0xFFFFFFFF  # bus_start + 1: no bridge yet
    rig.program_hidden()
    assert rig.rc.mem_read(CFGBAR + (1 << 20), 4) == 0x56781234  # the child, behind the port
    assert rig.child.bdf == f"{start + 1:02x}:00.0"


def test_invalid_bus_restriction_leaves_the_hidden_domain_unreachable():
    rig = Rig(0x28C0, bus_restriction=3)
    assert rig.vmd.bus_start is None
    assert rig.cfg_read(0x44, 2) == 0x300  # the hardware reports what firmware set
    rig.program_vmd()
    before = rig.rc.aborts.count
    assert rig.rc.mem_read(CFGBAR, 4) == 0xFFFFFFFF
    rig.rc.mem_write(CFGBAR + PCI_COMMAND, 2, MEM_EN)
    assert rig.rc.mem_read(MEMBAR1, 4) == 0xFFFFFFFF
    assert rig.rc.aborts.count == before + 3
    assert rig.rp.cfg.data[PCI_COMMAND] == 0  # the config write went nowhere


def test_cfgbar_offsets_past_the_bar_are_not_decoded_by_the_vmd():
    rig = Rig(0x201D, cfgbar_size=2 << 20)
    rig.up()
    assert rig.rc.mem_read(CFGBAR + (1 << 20), 4) == 0x56781234  # bus 1, inside the 2 MiB
    before = rig.rc.aborts.count
    assert rig.rc.mem_read(CFGBAR + (2 << 20), 4) == 0xFFFFFFFF  # bus 2 would be past it
    assert rig.rc.aborts.count == before + 1
    assert rig.rc.aborts.recent[-1] == ("mem-read", CFGBAR + (2 << 20))  # the host saw no taker


def test_cfgbar_buses_past_255_read_all_ones():
    rig = Rig(0x28C0, bus_restriction=2, cfgbar_size=64 << 20)  # buses 224..287
    rig.program_vmd()
    assert rig.rc.mem_read(CFGBAR, 4) == 0x20308086
    before = rig.rc.aborts.count
    assert rig.rc.mem_read(CFGBAR + (32 << 20), 4) == 0xFFFFFFFF  # bus 256
    assert rig.rc.mem_read(CFGBAR + (40 << 20) + 2, 2) == 0xFFFF  # bus 264
    assert rig.rc.aborts.count == before + 2


def test_cfgbar_access_of_bad_size_names_the_register():
    rig = Rig(0x201D)
    rig.program_vmd()
    with pytest.raises(MmioAccessError, match=r"vmd0: CFGBAR config read .* offset 0x0 \(size 8"):
        rig.rc.mem_read(CFGBAR, 8)
    with pytest.raises(MmioAccessError, match=r"CFGBAR config write .* offset 0x2 \(size 4"):
        rig.rc.mem_write(CFGBAR + 2, 4, 0)


# -- interrupts: remapping, masking, bypass --------------------------------------------
def test_child_msi_raises_exactly_one_vmd_vector():
    rig = Rig(0x201D, msix_vectors=8).up()
    rig.child_vector(2, vmd_msi_addr(5), 0)
    assert rig.child.queue_completed(2)
    assert rig.irqs == [(5 % 4, 0x35)]  # VMD vector 5's message, and nothing else
    assert rig.rc.apic.errors == 0 and rig.rc.apic.delivered == 1
    assert rig.vmd.remapped == [0, 0, 0, 0, 0, 1, 0, 0]


def test_out_of_range_vector_index_is_dropped_and_counted():
    rig = Rig(0x201D, msix_vectors=8).up()
    rig.child_vector(0, vmd_msi_addr(8), 0)
    rig.child_vector(1, vmd_msi_addr(255), 0)
    assert not rig.child.queue_completed(0)
    assert not rig.child.queue_completed(1)
    assert rig.vmd.remap_dropped == 2
    assert rig.irqs == [] and rig.rc.apic.delivered == 0 and rig.rc.apic.errors == 0
    assert sum(rig.vmd.remapped) == 0


def test_masked_vmd_vector_sets_its_pba_bit_and_fires_on_unmask():
    rig = Rig(0x201D, msix_vectors=8).up()
    rig.vmd_vector(3, 2, 0x44, masked=True)
    rig.child_vector(0, vmd_msi_addr(3), 0)
    rig.child.queue_completed(0)
    assert rig.irqs == []
    assert rig.rc.mem_read(MEMBAR2 + 0x1000, 8) == 1 << 3  # the VMD's PBA
    rig.rc.mem_write(MEMBAR2 + 16 * 3 + 12, 4, 0)  # unmask
    assert rig.irqs == [(2, 0x44)]
    assert rig.rc.mem_read(MEMBAR2 + 0x1000, 8) == 0


def test_bypass_on_28c0_sends_child_messages_straight_to_the_apic():
    rig = Rig(0x28C0, msix_vectors=8).up()
    rig.cfg_write(0x44, 2, rig.cfg_read(0x44, 2) | 0x2)  # remapping off
    assert not rig.vmd.remapping_enabled
    rig.child_vector(0, 0xFEE01000, 0x41)  # a normal x86 message: CPU 1, vector 0x41
    rig.child.queue_completed(0)
    assert rig.irqs == [(1, 0x41)]
    assert sum(rig.vmd.remapped) == 0 and rig.vmd.msix.sent == 0
    rig.cfg_write(0x44, 2, rig.cfg_read(0x44, 2) & ~0x2)  # remapping back on
    rig.child.queue_completed(0)  # index 1 now selects VMD vector 1
    assert rig.irqs == [(1, 0x41), (1, 0x31)]


def test_remap_disable_bit_is_read_only_on_201d():
    rig = Rig(0x201D, msix_vectors=8).up()
    rig.cfg_write(0x44, 2, 0x2)
    assert rig.cfg_read(0x44, 2) == 0 and rig.vmd.remapping_enabled
    rig.child_vector(0, 0xFEE01000, 0x41)
    rig.child.queue_completed(0)
    assert rig.irqs == [(1, 0x31)]  # still remapped onto VMD vector 1


def test_remapped_message_needs_the_vmds_msix_enabled():
    rig = Rig(0x201D, msix_vectors=8).up()
    pos = rig.find_cap(PCI_CAP_ID_MSIX)
    rig.cfg_write(pos + PCI_MSIX_FLAGS, 2, 0)
    rig.child_vector(0, vmd_msi_addr(1), 0)
    rig.child.queue_completed(0)
    assert rig.irqs == [] and rig.vmd.msix.dropped == 1 and rig.vmd.remapped[1] == 1


# -- MEMBAR forwarding and shadow addresses ------------------------------------------
def test_membar_forwarding_reaches_child_bars():
    rig = Rig(0x201D).up()
    rig.rc.mem_write(MEMBAR2 + CHILD_BAR0 + 0x100, 4, 0xCAFEF00D)
    assert rig.child.scratch[(0, 0x100)] == 0xCAFEF00D
    assert rig.rc.mem_read(MEMBAR2 + CHILD_BAR0 + 0x100, 4) == 0xCAFEF00D
    rig.rc.mem_write(MEMBAR1 + CHILD_BAR2 + 0x40, 8, 0x1122334455667788)
    assert rig.rc.mem_read(MEMBAR1 + CHILD_BAR2 + 0x40, 8) == 0x1122334455667788
    # The child's MSI-X table is reachable the same way.
    rig.child_vector(3, vmd_msi_addr(7), 0)
    assert rig.rc.mem_read(MEMBAR2 + CHILD_BAR0 + 0x2000 + 48, 4) == vmd_msi_addr(7)


def test_unclaimed_membar_access_is_a_counted_master_abort():
    rig = Rig(0x201D).up()
    before = rig.rc.aborts.count
    far = MEMBAR1 + (16 << 20)  # inside MEMBAR1 and the port's window, no BAR there
    assert rig.rc.mem_read(far, 4) == 0xFFFFFFFF
    rig.rc.mem_write(far, 4, 1)
    assert rig.rc.aborts.count == before + 2


def test_shadow_registers_on_28c0_report_the_membars_bare_metal():
    rig = Rig(0x28C0, vmlock=0x2).up()
    assert rig.rc.mem_read(MEMBAR2 + 0x2000, 8) == MEMBAR1 | 0x4  # BAR image: 64-bit non-pref
    assert rig.rc.mem_read(MEMBAR2 + 0x2008, 8) == MEMBAR2 | 0x4
    assert rig.rc.mem_read(MEMBAR2 + 0x2004, 4) == MEMBAR1 >> 32
    before = rig.rc.aborts.count
    rig.rc.mem_write(MEMBAR2 + 0x2000, 8, 0)  # read-only; nothing forwarded
    assert rig.rc.mem_read(MEMBAR2 + 0x2000, 8) & ~0xF == MEMBAR1
    assert rig.rc.aborts.count == before
    with pytest.raises(MmioAccessError, match="MEMBAR2 shadow registers"):
        rig.rc.mem_read(MEMBAR2 + 0x2002, 2)


def test_without_vmlock_bit_1_the_shadow_space_forwards():
    rig = Rig(0x28C0, vmlock=0).up()
    before = rig.rc.aborts.count
    assert rig.rc.mem_read(MEMBAR2 + 0x2000, 8) == 0xFFFFFFFFFFFFFFFF  # forwarded, no taker
    assert rig.rc.aborts.count == before + 1
    assert Rig(0x201D).up().rc.mem_read(MEMBAR2 + 0x2008, 8) == 0xFFFFFFFFFFFFFFFF  # no feature


def test_shadow_registers_in_pass_through_report_host_physical_and_translate():
    host1, host2 = 0x80_0000_0000, 0x9000_0000
    rig = Rig(0x28C0, vmlock=0x2, host_phys=(host1, host2)).up()
    assert rig.rc.mem_read(MEMBAR2 + 0x2000, 8) & ~0xF == host1
    assert rig.rc.mem_read(MEMBAR2 + 0x2008, 8) & ~0xF == host2
    # Bridge windows and child BARs hold host-physical addresses; the guest uses its BARs.
    assert rig.child.bar_address(0) == host2 + CHILD_BAR0
    rig.rc.mem_write(MEMBAR2 + CHILD_BAR0 + 8, 4, 0xA5A5)
    assert rig.child.scratch[(0, 8)] == 0xA5A5
    rig.rc.mem_write(MEMBAR1 + CHILD_BAR2 + 16, 4, 0x5A5A)
    assert rig.child.scratch[(2, 16)] == 0x5A5A


def read_shdw(rig):
    pos = rig.find_cap(PCI_CAP_ID_VNDR)
    mb1 = rig.cfg_read(pos + 8) | rig.cfg_read(pos + 12) << 32
    mb2 = rig.cfg_read(pos + 16) | rig.cfg_read(pos + 20) << 32
    return rig.cfg_read(pos + 4), mb1, mb2


def test_shdw_capability_on_201d_reports_the_membars_bare_metal():
    rig = Rig(0x201D)
    pos = rig.find_cap(PCI_CAP_ID_VNDR)
    assert rig.cfg_read(pos + 2, 1) == 24
    rig.program_vmd()
    sig, mb1, mb2 = read_shdw(rig)
    assert sig == 0x53484457  # "SHDW"
    assert (mb1 & ~0xF, mb2 & ~0xF) == (MEMBAR1, MEMBAR2)
    rig.cfg_write(pos + 8, 4, 0)  # read-only
    assert read_shdw(rig)[1] & ~0xF == MEMBAR1


def test_shdw_capability_in_pass_through_reports_host_physical_and_translates():
    host1, host2 = 0x80_0000_0000, 0x9000_0000
    rig = Rig(0x201D, host_phys=(host1, host2)).up()
    sig, mb1, mb2 = read_shdw(rig)
    assert sig == 0x53484457 and (mb1 & ~0xF, mb2 & ~0xF) == (host1, host2)
    rig.rc.mem_write(MEMBAR2 + CHILD_BAR0 + 0x20, 4, 0x77)
    assert rig.child.scratch[(0, 0x20)] == 0x77
    assert rig.rc.mem_read(MEMBAR2 + CHILD_BAR0 + 0x20, 4) == 0x77


# -- DMA ----------------------------------------------------------------------------
def test_child_dma_reaches_ram_with_the_vmds_requester_id():
    rig = Rig(0x201D).up()
    assert rig.child.dma_write(RAM_TARGET, 0xDEADBEEF)
    assert rig.rc.mem_read(RAM_TARGET, 4) == 0xDEADBEEF
    assert rig.child.dma_read(RAM_TARGET) == 0xDEADBEEF
    assert dict(rig.rc.iommu_requesters) == {rig.vmd.rid: 2}
    assert rig.vmd.rid == VMD_SLOT << 3 and rig.child.rid != rig.vmd.rid


def test_child_dma_needs_the_vmds_bus_master():
    rig = Rig(0x201D).up()
    rig.cfg_write(PCI_COMMAND, 2, PCI_COMMAND_MEMORY)
    assert not rig.child.dma_write(RAM_TARGET, 1)
    assert rig.rc.mem_read(RAM_TARGET, 4) == 0
    assert rig.vmd.master_aborted_writes == 1 and not rig.rc.iommu_requesters


# -- reset --------------------------------------------------------------------------
def test_reset_restores_remapping_and_resets_the_hidden_domain():
    rig = Rig(0x28C0, bus_restriction=1).up()
    rig.cfg_write(0x44, 2, rig.cfg_read(0x44, 2) | 0x2)
    assert rig.cfg_read(0x44, 2) == 0x102
    rig.vmd.reset()  # the VMD's reset input
    assert rig.cfg_read(0x44, 2) == 0x100 and rig.vmd.remapping_enabled
    pos = rig.find_cap(PCI_CAP_ID_MSIX)
    assert rig.cfg_read(pos + PCI_MSIX_FLAGS, 2) & PCI_MSIX_FLAGS_ENABLE == 0
    rig.program_vmd()
    assert rig.hcfg_read(128, 0, PCI_COMMAND, 2) == 0  # the root port, back at power-on
    assert rig.hcfg_read(128, 0, PCI_SECONDARY_BUS, 1) == 0
    assert rig.child.cfg.data[PCI_COMMAND] == 0  # and the child behind it
