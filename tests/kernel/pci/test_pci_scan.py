"""Scanning: config accessors, functions, headers, BAR sizing, capabilities, bus numbers."""

from __future__ import annotations

from pci_testbed import TestEndpoint, firmware, machine, new_kernel, root_port

from vmdsim.hw.bridge import PciBridge
from vmdsim.hw.fabric import RootComplex, ecam_offset
from vmdsim.hw.function import Bar
from vmdsim.hw.regs import (
    PCI_CAP_ID_EXP,
    PCI_CAP_ID_MSIX,
    PCI_COMMAND,
    PCI_EXP_SLTSTA,
    PCI_EXP_SLTSTA_PDS,
    PCI_EXT_CAP_ID_ERR,
    PCI_HEADER_TYPE,
    PCI_HEADER_TYPE_MFD,
    PCI_PRIMARY_BUS,
    PCI_VENDOR_ID,
)
from vmdsim.kernel.boot import boot
from vmdsim.kernel.io import IoSpace
from vmdsim.kernel.pci import (
    IORESOURCE_BUS,
    IORESOURCE_MEM,
    IORESOURCE_MEM_64,
    IORESOURCE_PREFETCH,
    PCIBIOS_BAD_REGISTER_NUMBER,
    PCIBIOS_SUCCESSFUL,
    pci_add_resource,
    pci_bus_read_config_dword,
    pci_find_capability,
    pci_find_ext_capability,
    pci_name,
    pci_read_config_dword,
    pci_read_config_word,
    pci_resource_flags,
    pci_resource_len,
    pci_resource_start,
    pci_root_ops,
    pci_scan_root_bus,
    pci_sysdata,
    pci_write_config_word,
    pcie_capability_read_word,
)
from vmdsim.kernel.pci.resource import resource
from vmdsim.kernel.pci.x86 import pci_mmconfig_add


def boot_rc(rc: RootComplex):
    k = new_kernel()
    root = boot(k, machine(rc))
    return k, root


def dev_at(k, bus: int, slot: int, fn: int = 0):
    return k.pci.pci_get_domain_bus_and_slot(0, bus, (slot << 3) | fn)


def test_config_accessors_reach_the_device_through_ecam():
    rc = RootComplex()
    ep = rc.root_bus.attach(TestEndpoint("ep"), 3)
    k, root = boot_rc(rc)
    dev = dev_at(k, 0, 3)
    assert pci_name(dev) == "0000:00:03.0"
    assert pci_read_config_dword(dev, PCI_VENDOR_ID) == (PCIBIOS_SUCCESSFUL, 0x56781234)
    # a misaligned access never becomes a bus cycle and reads as an error
    assert pci_read_config_word(dev, 1) == (PCIBIOS_BAD_REGISTER_NUMBER, 0xFFFF)
    # a write lands in the device and reads back through ECAM
    _, cmd = pci_read_config_word(dev, PCI_COMMAND)
    assert pci_write_config_word(dev, PCI_COMMAND, cmd | 0x0400) == PCIBIOS_SUCCESSFUL
    ecam = rc.mmconfig_base + ecam_offset(0, 3 << 3, PCI_COMMAND)
    assert rc.mem_read(ecam, 2) & 0x0400
    # an empty slot is a master abort: all-ones
    aborts = rc.aborts.count
    assert pci_bus_read_config_dword(root, 4 << 3, PCI_VENDOR_ID) == (0, 0xFFFFFFFF)
    assert rc.aborts.count == aborts + 1
    # capabilities, standard and extended, and the fields filled from them
    assert pci_find_capability(dev, PCI_CAP_ID_MSIX) == ep.msix.pos == dev.msix_cap
    assert dev.msi_cap == 0 and dev.pcie_cap == pci_find_capability(dev, PCI_CAP_ID_EXP)
    assert pci_find_ext_capability(dev, PCI_EXT_CAP_ID_ERR) == 0x100 == dev.aer_cap
    assert not dev.msix_enabled and dev.irq == 0 and dev.pin == 1
    assert pcie_capability_read_word(dev, PCI_EXP_SLTSTA) == (0, 0)  # no slot on an endpoint


def test_downstream_port_without_slot_reports_presence():
    rc = RootComplex()
    rc.root_bus.attach(root_port(rc, "rp"), 0x1C)
    k, _ = boot_rc(rc)
    rp = dev_at(k, 0, 0x1C)
    assert pcie_capability_read_word(rp, PCI_EXP_SLTSTA) == (0, PCI_EXP_SLTSTA_PDS)
    assert not rp.is_hotplug_bridge


def test_functions_1_to_7_are_scanned_only_on_a_multifunction_device():
    rc = RootComplex()
    rc.root_bus.attach(TestEndpoint("f0"), 5, 0)
    rc.root_bus.attach(TestEndpoint("f3"), 5, 3)  # sets the MFD bit of function 0
    single = rc.root_bus.attach(TestEndpoint("g0"), 6, 0)
    rc.root_bus.attach(TestEndpoint("g2"), 6, 2)
    single.cfg.hw_clear(PCI_HEADER_TYPE, 1, PCI_HEADER_TYPE_MFD)  # g0 says: single function
    k, _ = boot_rc(rc)
    found = [pci_name(d) for d in k.pci.lspci()]
    assert "0000:00:05.0" in found and "0000:00:05.3" in found
    assert dev_at(k, 0, 5).multifunction and dev_at(k, 0, 5, 3).multifunction
    assert "0000:00:06.0" in found and "0000:00:06.2" not in found


def test_bars_are_sized_with_decode_off_and_typed():
    rc = RootComplex()
    ep = TestEndpoint("ep", bars=(Bar(0, 1 << 20, is64=True, prefetchable=True),
                                  Bar(2, 0x1000, is64=False), Bar(4, 0x4000, is64=True)))
    rc.root_bus.attach(ep, 2)
    firmware(rc)  # firmware placed the BARs and turned decode on
    k, _ = boot_rc(rc)
    dev = dev_at(k, 0, 2)
    assert ep.sized_while_decoding == 0
    assert ep.memory_enabled  # decode restored after sizing
    assert pci_resource_len(dev, 0) == 1 << 20
    assert pci_resource_flags(dev, 0) & (IORESOURCE_MEM | IORESOURCE_MEM_64
                                         | IORESOURCE_PREFETCH) == (
        IORESOURCE_MEM | IORESOURCE_MEM_64 | IORESOURCE_PREFETCH)
    assert dev.resource[1].flags == 0  # upper half of the 64-bit BAR0
    assert pci_resource_len(dev, 2) == 0x1000
    assert not pci_resource_flags(dev, 2) & (IORESOURCE_MEM_64 | IORESOURCE_PREFETCH)
    assert pci_resource_len(dev, 4) == 0x4000 and pci_resource_flags(dev, 4) & IORESOURCE_MEM_64
    # firmware's addresses were kept, and they are what the BARs hold
    for i in (0, 2, 4):
        assert pci_resource_start(dev, i) == ep.bar_address(i)
        assert dev.resource[i].parent is not None


def test_bus_numbers_depth_first_below_bridges():
    rc = RootComplex()
    rp0 = rc.root_bus.attach(root_port(rc, "rp0"), 0x1C)
    sw = rp0.secondary.attach(PciBridge("bridge", 0x10B5, 0x8747, aborts=rc.aborts))
    sw.secondary.attach(TestEndpoint("deep"))
    rp1 = rc.root_bus.attach(root_port(rc, "rp1"), 0x1D)
    rp1.secondary.attach(TestEndpoint("ep1"))
    k, _ = boot_rc(rc)

    def buses(slot_bus, devfn):
        _, v = pci_bus_read_config_dword(k.pci.pci_find_bus(0, slot_bus), devfn, PCI_PRIMARY_BUS)
        return v & 0xFF, (v >> 8) & 0xFF, (v >> 16) & 0xFF

    assert buses(0, 0x1C << 3) == (0, 1, 2)
    assert buses(1, 0) == (1, 2, 2)
    assert buses(0, 0x1D << 3) == (0, 3, 3)
    assert dev_at(k, 2, 0).vendor == 0x1234 and dev_at(k, 3, 0).vendor == 0x1234
    assert rp0.secondary_bus == 1 and rp0.subordinate_bus == 2


def test_firmware_bus_numbers_are_kept():
    rc = RootComplex()
    rp0 = rc.root_bus.attach(root_port(rc, "rp0"), 0x1C)
    rp0.secondary.attach(TestEndpoint("ep0"))
    rc.root_bus.attach(root_port(rc, "rp1"), 0x1D).secondary.attach(TestEndpoint("ep1"))
    # firmware numbered rp0: primary 0, secondary 5, subordinate 6
    rc.mem_write(rc.mmconfig_base + ecam_offset(0, 0x1C << 3, PCI_PRIMARY_BUS), 4, 0x060500)
    k, _ = boot_rc(rc)
    assert (rp0.secondary_bus, rp0.subordinate_bus) == (5, 6)
    assert pci_name(dev_at(k, 5, 0)) == "0000:05:00.0"
    assert dev_at(k, 7, 0) is not None  # rp1 got the next free number after 6


def test_bus_numbers_stay_inside_the_root_bus_range():
    rc = RootComplex()
    rps = []
    for slot in (0x1C, 0x1D):
        rp = rc.root_bus.attach(root_port(rc, f"rp{slot:x}"), slot)
        rp.secondary.attach(TestEndpoint(f"ep{slot:x}"))
        rps.append(rp)
    k = new_kernel()
    k.attach_machine(IoSpace(k, rc), None)
    sub = k.pci
    pci_mmconfig_add(k, 0, 0, 0xFF, rc.mmconfig_base)
    busn = resource("PCI Bus 0000:00", 0, 1, IORESOURCE_BUS)  # firmware: buses 00-01 only
    resources = []
    pci_add_resource(resources, busn)
    root = pci_scan_root_bus(k, None, 0, pci_root_ops, pci_sysdata(domain=0), resources)
    assert resources == []  # the list moved to the host bridge
    assert (rps[0].secondary_bus, rps[0].subordinate_bus) == (1, 1)
    assert rps[1].secondary_bus == 0  # no bus number left for it
    assert [pci_name(d) for d in sub.lspci()] == ["0000:00:1c.0", "0000:00:1d.0",
                                                  "0000:01:00.0"]
    assert any("can't allocate child bus 01" in line for line in k.log.lines())
    assert root.busn_res.start == 0 and root.busn_res.end == 1
