"""The hardware core, driven only through bus transactions (ECAM config cycles, MMIO, MSI)."""

import pytest

from vmdsim.errors import ConfigAccessError, MmioAccessError
from vmdsim.hw.bridge import PciBridge
from vmdsim.hw.fabric import MMCONFIG_BASE, RootComplex, ecam_offset
from vmdsim.hw.function import Bar, PciFunction
from vmdsim.hw.msi import MsiCapability
from vmdsim.hw.msix import MsixCapability
from vmdsim.hw.regs import (
    PCI_CAP_ID_EXP,
    PCI_CAP_ID_MSI,
    PCI_CAP_ID_MSIX,
    PCI_COMMAND,
    PCI_HEADER_TYPE,
    PCI_STATUS,
    PCI_STATUS_CAP_LIST,
    PCI_STATUS_REC_MASTER_ABORT,
    pci_devfn,
)


class Endpoint(PciFunction):
    """A minimal test endpoint: BAR0 (64-bit 16 KiB) with MSI-X at 0x2000, BAR2 32-bit."""

    def __init__(self, name="ep", nvec=4, msi=False):
        super().__init__(name, 0x1234, 0x5678, 0x018000,
                         bars=(Bar(0, 0x4000), Bar(2, 0x1000, is64=False, prefetchable=True)))
        self.add_pcie_capability(0)
        self.msix = MsixCapability(self, nvec, 0, 0x2000, 0, 0x3000)
        if msi:
            self.msi = MsiCapability(self, log2_vectors=2)
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


class Host:
    """What an OS does with a RootComplex: ECAM config cycles and MMIO."""

    def __init__(self, ncpus=4):
        self.rc = RootComplex(ncpus=ncpus)
        self.irqs = []
        self.rc.apic.attach(lambda cpu, vec: self.irqs.append((cpu, vec)))

    def cfg_addr(self, bus, slot, fn, reg):
        return MMCONFIG_BASE + ecam_offset(bus, pci_devfn(slot, fn), reg)

    def cfg_read(self, bus, slot, fn, reg, size=4):
        return self.rc.mem_read(self.cfg_addr(bus, slot, fn, reg), size)

    def cfg_write(self, bus, slot, fn, reg, size, value):
        self.rc.mem_write(self.cfg_addr(bus, slot, fn, reg), size, value)

    def find_cap(self, bus, slot, fn, cap_id):
        pos = self.cfg_read(bus, slot, fn, 0x34, 1)
        while pos:
            if self.cfg_read(bus, slot, fn, pos, 1) == cap_id:
                return pos
            pos = self.cfg_read(bus, slot, fn, pos + 1, 1)
        return None


@pytest.fixture
def host():
    return Host()


def test_ids_and_absent_functions_read_all_ones(host):
    host.rc.root_bus.attach(Endpoint(), slot=3)
    assert host.cfg_read(0, 3, 0, 0) == 0x56781234
    assert host.cfg_read(0, 3, 1, 0) == 0xFFFFFFFF
    assert host.cfg_read(0, 4, 0, 0, 2) == 0xFFFF
    assert host.cfg_read(7, 0, 0, 0) == 0xFFFFFFFF
    assert host.rc.aborts.count == 3


def test_config_write_masks_ro_rw_rw1c(host):
    ep = host.rc.root_bus.attach(Endpoint(), slot=3)
    host.cfg_write(0, 3, 0, 0, 4, 0)  # vendor/device are read-only
    assert host.cfg_read(0, 3, 0, 0) == 0x56781234
    host.cfg_write(0, 3, 0, PCI_COMMAND, 2, 0xFFFF)
    assert host.cfg_read(0, 3, 0, PCI_COMMAND, 2) == 0x0546  # only implemented bits stick
    ep.cfg.hw_set(PCI_STATUS, 2, PCI_STATUS_REC_MASTER_ABORT)
    status = host.cfg_read(0, 3, 0, PCI_STATUS, 2)
    assert status & PCI_STATUS_REC_MASTER_ABORT and status & PCI_STATUS_CAP_LIST
    host.cfg_write(0, 3, 0, PCI_STATUS, 2, PCI_STATUS_REC_MASTER_ABORT)  # RW1C
    status = host.cfg_read(0, 3, 0, PCI_STATUS, 2)
    assert not status & PCI_STATUS_REC_MASTER_ABORT and status & PCI_STATUS_CAP_LIST


def test_bad_config_access_names_device_and_offset(host):
    ep = Endpoint("nvme-test")
    with pytest.raises(ConfigAccessError,
                       match=r"nvme-test: config misaligned read at offset 0x002"):
        ep.cfg_read(2, 4)
    with pytest.raises(ConfigAccessError, match="outside config space"):
        ep.cfg_write(0x1000, 4, 0)


def test_bar_sizing_64_bit_and_32_bit_prefetchable(host):
    host.rc.root_bus.attach(Endpoint(), slot=3)
    assert host.cfg_read(0, 3, 0, 0x10) == 0x4  # 64-bit, non-prefetchable, address 0
    host.cfg_write(0, 3, 0, 0x10, 4, 0xFFFFFFFF)
    host.cfg_write(0, 3, 0, 0x14, 4, 0xFFFFFFFF)
    assert host.cfg_read(0, 3, 0, 0x10) == 0xFFFFC004
    assert host.cfg_read(0, 3, 0, 0x14) == 0xFFFFFFFF
    host.cfg_write(0, 3, 0, 0x18, 4, 0xFFFFFFFF)
    assert host.cfg_read(0, 3, 0, 0x18) == 0xFFFFF008  # 4 KiB, 32-bit, prefetchable
    host.cfg_write(0, 3, 0, 0x1C, 4, 0xFFFFFFFF)  # BAR3 is unimplemented
    assert host.cfg_read(0, 3, 0, 0x1C) == 0


def test_bar_decodes_only_with_memory_space_enabled(host):
    host.rc.root_bus.attach(Endpoint(), slot=3)
    host.cfg_write(0, 3, 0, 0x10, 4, 0xC0000000)
    host.cfg_write(0, 3, 0, 0x14, 4, 0)
    host.rc.mem_write(0xC0000010, 4, 0xABCD)
    assert host.rc.aborts.count == 1
    host.cfg_write(0, 3, 0, PCI_COMMAND, 2, 0x2)
    host.rc.mem_write(0xC0000010, 4, 0xABCD)
    assert host.rc.mem_read(0xC0000010, 4) == 0xABCD
    assert host.rc.mem_read(0xC0004010, 4) == 0xFFFFFFFF  # past the BAR: master abort
    assert host.rc.aborts.count == 2


def test_capability_list_walk(host):
    host.rc.root_bus.attach(Endpoint(msi=True), slot=3)
    assert host.find_cap(0, 3, 0, PCI_CAP_ID_EXP) == 0x40
    assert host.find_cap(0, 3, 0, PCI_CAP_ID_MSIX) is not None
    assert host.find_cap(0, 3, 0, PCI_CAP_ID_MSI) is not None


def test_multifunction_header_bit():
    host = Host()
    host.rc.root_bus.attach(Endpoint("f0"), slot=5, func=0)
    assert host.cfg_read(0, 5, 0, PCI_HEADER_TYPE, 1) == 0
    host.rc.root_bus.attach(Endpoint("f2"), slot=5, func=2)
    assert host.cfg_read(0, 5, 0, PCI_HEADER_TYPE, 1) == 0x80
    assert host.cfg_read(0, 5, 2, 0, 2) == 0x1234
    assert host.cfg_read(0, 5, 1, 0, 2) == 0xFFFF


def enable_endpoint(host, bus, slot, base=0xC0000000):
    host.cfg_write(bus, slot, 0, 0x10, 4, base)
    host.cfg_write(bus, slot, 0, 0x14, 4, 0)
    host.cfg_write(bus, slot, 0, PCI_COMMAND, 2, 0x6)  # memory + bus master
    return base


def program_msix(host, bar, entry, cpu, vector, masked=False):
    e = bar + 0x2000 + 16 * entry
    host.rc.mem_write(e, 4, 0xFEE00000 | (cpu << 12))
    host.rc.mem_write(e + 4, 4, 0)
    host.rc.mem_write(e + 8, 4, vector)
    host.rc.mem_write(e + 12, 4, 1 if masked else 0)


def test_msix_fire_masking_pending_and_enable(host):
    ep = host.rc.root_bus.attach(Endpoint(), slot=3)
    bar = enable_endpoint(host, 0, 3)
    pos = host.find_cap(0, 3, 0, PCI_CAP_ID_MSIX)
    assert host.cfg_read(0, 3, 0, pos + 2, 2) == 3  # table size N-1
    for i in range(4):  # every entry comes out of reset masked
        assert host.rc.mem_read(bar + 0x2000 + 16 * i + 12, 4) == 1
    program_msix(host, bar, 1, cpu=2, vector=0x41)
    assert ep.msix.fire(1) is False and ep.msix.dropped == 1  # MSI-X not enabled
    host.cfg_write(0, 3, 0, pos + 2, 2, 0x8000)
    assert ep.msix.fire(1) is True
    assert host.irqs == [(2, 0x41)]
    host.rc.mem_write(bar + 0x2000 + 16 + 12, 4, 1)  # mask entry 1
    ep.msix.fire(1)
    assert host.irqs == [(2, 0x41)]
    assert host.rc.mem_read(bar + 0x3000, 8) == 0b10  # PBA: pending bit 1
    host.rc.mem_write(bar + 0x2000 + 16 + 8, 4, 0x42)  # re-target while masked
    host.rc.mem_write(bar + 0x2000 + 16 + 12, 4, 0)  # unmask: pending goes out, new message
    assert host.irqs == [(2, 0x41), (2, 0x42)]
    assert host.rc.mem_read(bar + 0x3000, 8) == 0
    host.cfg_write(0, 3, 0, pos + 2, 2, 0xC000)  # function mask
    ep.msix.fire(1)
    assert len(host.irqs) == 2
    host.cfg_write(0, 3, 0, pos + 2, 2, 0x8000)
    assert host.irqs[-1] == (2, 0x42) and len(host.irqs) == 3


def test_msix_requires_bus_master(host):
    ep = host.rc.root_bus.attach(Endpoint(), slot=3)
    bar = enable_endpoint(host, 0, 3)
    pos = host.find_cap(0, 3, 0, PCI_CAP_ID_MSIX)
    program_msix(host, bar, 0, cpu=0, vector=0x30)
    host.cfg_write(0, 3, 0, pos + 2, 2, 0x8000)
    host.cfg_write(0, 3, 0, PCI_COMMAND, 2, 0x2)  # bus master off
    ep.msix.fire(0)
    assert host.irqs == [] and ep.master_aborted_writes == 1


def test_msix_table_rejects_odd_access(host):
    ep = host.rc.root_bus.attach(Endpoint("ep9"), slot=3)
    bar = enable_endpoint(host, 0, 3)
    with pytest.raises(MmioAccessError, match="ep9: MSI-X table/PBA"):
        host.rc.mem_read(bar + 0x2002, 2)
    assert ep.msix.sent == 0


def test_msi_multiple_vectors_masking(host):
    ep = host.rc.root_bus.attach(Endpoint(msi=True), slot=3)
    enable_endpoint(host, 0, 3)
    pos = host.find_cap(0, 3, 0, PCI_CAP_ID_MSI)
    flags = host.cfg_read(0, 3, 0, pos + 2, 2)
    assert flags & 0x80 and flags & 0x100 and (flags >> 1) & 7 == 2  # 64-bit, PVM, 4 vectors
    host.cfg_write(0, 3, 0, pos + 4, 4, 0xFEE03000)
    host.cfg_write(0, 3, 0, pos + 8, 4, 0)
    host.cfg_write(0, 3, 0, pos + 12, 2, 0x50)
    host.cfg_write(0, 3, 0, pos + 2, 2, 0x1 | (2 << 4))  # enable, 4 vectors
    ep.msi.fire(3)
    assert host.irqs == [(3, 0x53)]
    host.cfg_write(0, 3, 0, pos + 16, 4, 0b0100)
    ep.msi.fire(2)
    assert host.cfg_read(0, 3, 0, pos + 20, 4) == 0b0100
    host.cfg_write(0, 3, 0, pos + 16, 4, 0)
    assert host.irqs == [(3, 0x53), (3, 0x52)]
    assert host.cfg_read(0, 3, 0, pos + 20, 4) == 0


def test_apic_rejects_bad_destination_and_low_vectors(host):
    ep = host.rc.root_bus.attach(Endpoint(), slot=3)
    bar = enable_endpoint(host, 0, 3)
    pos = host.find_cap(0, 3, 0, PCI_CAP_ID_MSIX)
    program_msix(host, bar, 0, cpu=9, vector=0x30)  # only 4 CPUs
    program_msix(host, bar, 1, cpu=0, vector=0x05)  # exception vector
    host.cfg_write(0, 3, 0, pos + 2, 2, 0x8000)
    ep.msix.fire(0)
    ep.msix.fire(1)
    assert host.irqs == [] and host.rc.apic.errors == 2


def make_bridge_tree(host):
    br = host.rc.root_bus.attach(PciBridge("rp", 0x8086, 0x2030, aborts=host.rc.aborts), slot=1)
    ep = Endpoint()
    br.secondary.attach(ep)
    host.cfg_write(0, 1, 0, 0x18, 4, 0x00050500)  # primary 0, secondary 5, subordinate 5
    host.cfg_write(0, 1, 0, 0x20, 4, 0xC010C000)  # window C0000000-C01FFFFF
    host.cfg_write(0, 1, 0, 0x24, 4, 0x0000FFF0)  # close the prefetchable window (base > limit)
    host.cfg_write(0, 1, 0, PCI_COMMAND, 2, 0x6)
    return br, ep


def test_config_routed_by_bus_number_through_bridge(host):
    br, ep = make_bridge_tree(host)
    assert host.cfg_read(5, 0, 0, 0) == 0x56781234
    assert host.cfg_read(5, 1, 0, 0) == 0xFFFFFFFF  # a link carries device 0 only
    assert host.cfg_read(6, 0, 0, 0) == 0xFFFFFFFF  # beyond subordinate
    assert ep.bdf == "05:00.0" and ep.rid == 0x0500
    host.cfg_write(0, 1, 0, 0x18, 4, 0x00060600)  # renumber: the endpoint moves with it
    assert host.cfg_read(6, 0, 0, 0) == 0x56781234 and ep.rid == 0x0600


def test_bridge_window_forwards_memory_and_upstream_needs_bus_master(host):
    br, ep = make_bridge_tree(host)
    enable_endpoint(host, 5, 0, base=0xC0100000)
    host.rc.mem_write(0xC0100020, 4, 77)
    assert host.rc.mem_read(0xC0100020, 4) == 77
    assert host.rc.mem_read(0xC0300000, 4) == 0xFFFFFFFF  # outside the window
    pos = host.find_cap(5, 0, 0, PCI_CAP_ID_MSIX)
    program_msix(host, 0xC0100000, 0, cpu=1, vector=0x60)
    host.cfg_write(5, 0, 0, pos + 2, 2, 0x8000)
    ep.msix.fire(0)
    assert host.irqs == [(1, 0x60)]
    host.cfg_write(0, 1, 0, PCI_COMMAND, 2, 0x2)  # bridge bus master off: blocked at the bridge
    ep.msix.fire(0)
    assert host.irqs == [(1, 0x60)]
    assert ("upstream-write-blocked", 0xFEE01000) in host.rc.aborts.recent


def test_window_closed_when_base_above_limit(host):
    br, ep = make_bridge_tree(host)
    enable_endpoint(host, 5, 0, base=0xC0100000)
    host.cfg_write(0, 1, 0, 0x20, 4, 0x0000FFF0)  # base FFF00000 > limit 000FFFFF
    assert br.memory_window() is None
    assert host.rc.mem_read(0xC0100020, 4) == 0xFFFFFFFF


def test_prefetchable_window_64_bit(host):
    br, ep = make_bridge_tree(host)
    host.cfg_write(0, 1, 0, 0x24, 4, 0x00110001 | 0x00010000)  # 64-bit, base/limit low
    host.cfg_write(0, 1, 0, 0x28, 4, 0x40)
    host.cfg_write(0, 1, 0, 0x2C, 4, 0x40)
    assert host.cfg_read(0, 1, 0, 0x24, 2) & 0xF == 1  # 64-bit capable, read-only
    assert br.prefetch_window() == (0x40_0000_0000, 0x40_001F_FFFF)


def test_secondary_bus_reset_resets_devices_below(host):
    br, ep = make_bridge_tree(host)
    enable_endpoint(host, 5, 0, base=0xC0100000)
    assert host.cfg_read(5, 0, 0, 0x10) == 0xC0000004 | 0x00100000
    host.cfg_write(0, 1, 0, 0x3C, 4, 0x00400000)  # bridge control: SBR
    host.cfg_write(0, 1, 0, 0x3C, 4, 0)
    assert host.cfg_read(5, 0, 0, 0x10) == 0x4
    assert host.cfg_read(5, 0, 0, PCI_COMMAND, 2) == 0


def test_reset_prefetchable_window_is_open_and_claims_low_memory(host):
    # Base 0 / limit 0 decodes 0-0xFFFFF (spec): software must close it, as Linux does.
    br = host.rc.root_bus.attach(PciBridge("rp", 0x8086, 0x2030, aborts=host.rc.aborts), slot=1)
    host.cfg_write(0, 1, 0, 0x18, 4, 0x00050500)
    host.cfg_write(0, 1, 0, PCI_COMMAND, 2, 0x6)
    assert br.prefetch_window() == (0, 0xFFFFF)
    ep = br.secondary.attach(Endpoint())
    enable_endpoint(host, 5, 0, base=0xC0100000)
    assert ep.bus_master_write(0x1000, 4, 1) is False  # routed back down as peer-to-peer
    assert host.rc.ram.read(0x1000, 4) == 0


def test_dma_to_ram_records_requester_id(host):
    br, ep = make_bridge_tree(host)
    enable_endpoint(host, 5, 0, base=0xC0100000)
    assert ep.bus_master_write(0x1000, 8, 0x1122334455667788)
    assert host.rc.ram.read(0x1000, 8) == 0x1122334455667788
    assert host.rc.mem_read(0x1004, 4) == 0x11223344  # the CPU sees the same RAM
    assert host.rc.iommu_requesters == {0x0500: 1}


def test_bar_and_msix_validation():
    with pytest.raises(ValueError, match="power of two"):
        Bar(0, 3000)
    with pytest.raises(ValueError, match="upper half"):
        PciFunction("x", 1, 2, 3, bars=(Bar(0, 0x1000), Bar(1, 0x1000)))
    f = PciFunction("x", 1, 2, 3, bars=(Bar(0, 0x1000),))
    with pytest.raises(ValueError, match="overruns BAR0"):
        MsixCapability(f, 512, 0, 0)
