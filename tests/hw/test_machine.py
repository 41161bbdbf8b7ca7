"""Whole machines built from topologies, driven through ECAM, CFGBAR, MMIO and MSI writes."""

import pytest
from hwrig import (
    NVME_REG_DBS,
    NVME_REG_VS,
    VMD_CFGBAR,
    VMD_MEMBAR1,
    VMD_MEMBAR2,
    Board,
    vmd_msi,
    x86_msi,
)

from vmdsim.errors import TopologyError
from vmdsim.hw.describe import describe_machine
from vmdsim.hw.fabric import HOST_WINDOW_32
from vmdsim.hw.machine import Machine
from vmdsim.hw.regs import (
    PCI_CAP_ID_EXP,
    PCI_CLASS_REVISION,
    PCI_COMMAND,
    PCI_COMMAND_MEMORY,
    PCI_EXP_SLTCTL,
    PCI_EXP_SLTCTL_HPIE,
    PCI_EXP_SLTCTL_PDCE,
    PCI_EXP_SLTSTA,
)
from vmdsim.topology import parse


def test_default_machine_has_a_host_bridge_and_a_vmd_with_firmware_bars():
    b = Board.default()
    assert b.ecam(0, 0).read(0) == 0x20208086
    vmd = b.vmd_cfg()
    assert vmd.read(0) == 0x201D8086 and vmd.read(PCI_CLASS_REVISION) >> 8 == 0x010400
    assert vmd.read(PCI_COMMAND, 2) & PCI_COMMAND_MEMORY
    lo, hi = HOST_WINDOW_32
    for i, size in ((VMD_CFGBAR, 32 << 20), (VMD_MEMBAR1, 32 << 20), (VMD_MEMBAR2, 1 << 20)):
        base = vmd.bar(i)
        assert lo <= base and base + size - 1 <= hi and base % size == 0
    for slot in range(1, 0x20):
        assert b.ecam(0, slot).read(0) == 0xFFFFFFFF or slot == 0x0E  # the domain is hidden


def test_default_hidden_domain_four_root_ports_each_with_a_drive():
    b = Board.default()
    m = b.m
    assert (len(m.vmds), len(m.root_ports), len(m.nvmes)) == (1, 4, 4)
    for slot in range(4):
        rp, drive, bar0 = b.bring_up_port(slot)
        assert rp.read(0) == 0x20308086
        assert drive.read(PCI_CLASS_REVISION) >> 8 == 0x010802
        assert b.read(bar0 + NVME_REG_VS) == 0x00010400  # MMIO through MEMBAR1 and the port
    assert b.hidden(0, 4).read(0) == 0xFFFFFFFF
    assert [n.nr_io_queues for n in m.nvmes] == [8] * 4


def test_child_msix_write_with_remapping_on_raises_exactly_one_vmd_vector():
    b = Board.default()
    b.bring_up_vmd()
    _, drive, bar0 = b.bring_up_port(2)
    b.enable_nvme(bar0)
    for q in range(9):
        b.msix_entry(drive, q, vmd_msi(7), 0)  # every queue of this drive -> VMD vector 7
    b.msix_enable(drive)
    nvme = b.m.by_name["vmd0.rp2.nvme"]
    assert nvme.complete(3)
    assert b.irqs == [(7 % 4, 0x37)]  # VMD vector 7's own message, and nothing else
    vmd = b.m.vmds[0]
    assert vmd.remapped[7] == 1 and sum(vmd.remapped) == 1
    assert b.rc.apic.delivered == 1 and b.rc.apic.errors == 0
    assert b.read(bar0 + NVME_REG_DBS + 8 * 3 + 4) == 1  # the handler finds queue 3's work


def test_root_port_hot_plug_msi_is_remapped_by_the_vmd_too():
    b = Board.default()
    b.bring_up_vmd()
    rp, _, _ = b.bring_up_port(1)
    b.msi_enable(rp, vmd_msi(1), 0)
    pos = rp.cap(PCI_CAP_ID_EXP)
    rp.write(pos + PCI_EXP_SLTCTL, 2, PCI_EXP_SLTCTL_HPIE | PCI_EXP_SLTCTL_PDCE)
    rp.write(pos + PCI_EXP_SLTSTA, 2, 0xFFFF)
    b.m.by_name["vmd0.rp1"].unpopulate()  # a person pulls the drive
    assert b.irqs == [(1, 0x31)]
    assert b.hidden(2, 0).read(0) == 0xFFFFFFFF


def test_empty_slots_and_primary_domain_ports():
    m = Machine.build(parse("""
[[vmd]]
device = 0x9A0B
msix_vectors = 16
bus_restriction = 2
[[vmd.root_port]]
slot = 0
[[vmd.root_port]]
slot = 2
nvme = { queues = 2 }
[[root_port]]
slot = "1c.4"
"""))
    b = Board(m)
    assert m.vmds[0].bus_start == 224
    assert b.hidden(0, 0).read(0) == 0x20308086  # CFGBAR offset 0 is bus 224
    assert b.hidden(0, 1).read(0) == 0xFFFFFFFF
    assert [rp.card is None for rp in m.root_ports] == [True, False, True]
    assert b.ecam(0, 0x1C, 4).read(0) == 0x20308086


def test_firmware_that_cannot_fit_the_bars_is_a_topology_error():
    with pytest.raises(TopologyError, match=r"<string>:4: vmd\[0\].membar1: .*BAR2 .*not fit"):
        Machine.build(parse('\n[[vmd]]\ndevice = 0x201D\nmembar1 = "1G"\n'))


def test_describe_shows_both_domains_and_empty_slots():
    m = Machine.build(parse("""
[[vmd]]
device = 0x28C0
[[vmd.root_port]]
slot = 0
slot_number = 9
nvme = { queues = 3 }
[[vmd.root_port]]
slot = 1
slot_number = 10
"""))
    text = describe_machine(m)
    assert "0000:00  primary domain" in text
    assert "\\-0e.0  8086:28c0  RAID bus controller" in text
    assert "vmd0  hidden domain behind 0000:00:0e.0" in text
    assert "CFGBAR 32M at 0xc0000000 (buses 00-1f)" in text
    assert "+-00.0-[--]  8086:2030  PCI bridge" in text
    assert "vmd0.rp0.nvme  NVMe, 3 I/O queues, 4 MSI-X vectors" in text
    assert "\\- (empty slot 10)" in text


def test_describe_shows_programmed_bus_numbers():
    b = Board.default()
    b.bring_up_port(0)
    assert "+-00.0-[01-01]" in describe_machine(b.m)


def test_msi_straight_to_the_apic_from_a_primary_domain_drive():
    b = Board.from_toml('[[root_port]]\nslot = "1c.0"\nnvme = { queues = 1 }\n')
    _, drive = b.bring_up_primary_port(0x1C, 1, 0xD0000000)
    b.enable_nvme(0xD0000000)
    b.msix_entry(drive, 1, x86_msi(3), 0x77)
    b.msix_enable(drive)
    b.m.nvmes[0].complete(1)
    assert b.irqs == [(3, 0x77)]
