"""A second PCI domain with its own pci_ops and sysdata, the way the VMD driver makes one.

The ops here go through the VMD's CFGBAR (``pci_generic_config_read`` over
``map_bus``); the windows are MEMBAR1 and MEMBAR2 past the MSI-X table, as
``vmd_enable_domain`` sets them up. This exercises the core's side of that
contract (the VMD driver itself is tested elsewhere).
"""

from __future__ import annotations

import pytest
from pci_testbed import (
    DOMAIN,
    NVME_VS,
    REG_VS,
    TestEndpoint,
    machine,
    make_domain_or_none,
    new_kernel,
    root_port,
)

from vmdsim.hw.fabric import RootComplex
from vmdsim.hw.firmware import bios_assign_resources
from vmdsim.hw.vmd import Vmd
from vmdsim.kernel.boot import boot
from vmdsim.kernel.io import readl
from vmdsim.kernel.pci import (
    PCI_DEVFN,
    PciError,
    pci_bus_read_config_dword,
    pci_create_root_bus,
    pci_enable_device,
    pci_iomap,
    pci_name,
    pci_ops,
    pci_read_config_dword,
    pci_real_dma_dev,
    pci_remove_root_bus,
    pci_resource_start,
    pci_stop_root_bus,
    pci_sysdata,
)


def make_domain(k, vmd_dev):
    got = make_domain_or_none(k, vmd_dev)
    assert got is not None
    return got


def test_a_vmd_domain_scans_through_its_own_ops_and_dma_comes_from_the_vmd():
    rc = RootComplex()
    vmd = rc.root_bus.attach(Vmd("vmd0", aborts=rc.aborts, cfgbar_size=4 << 20,
                                 membar2_size=4 << 20), 0x0E)
    for slot in range(2):
        vmd.hidden_bus.attach(root_port(rc, f"vrp{slot}"), slot).secondary.attach(
            TestEndpoint(f"vnvme{slot}"))
    bios_assign_resources(rc)
    k = new_kernel()
    boot(k, machine(rc))
    assert [pci_name(d) for d in k.pci.lspci()] == ["0000:00:0e.0"]  # the domain is hidden
    vmd_dev = k.pci.devices[0]
    before = {id(o) for o in k.mem.leaks(owner="pci")}

    bus, cfgbar = make_domain(k, vmd_dev)
    assert k.pci.domains() == [0, DOMAIN]
    names = [pci_name(d) for d in k.pci.lspci(DOMAIN)]
    assert names == ["10000:00:00.0", "10000:00:01.0", "10000:01:00.0", "10000:02:00.0"]
    assert bus.busn_res.end == 3  # 4 MiB of CFGBAR: buses 0-3
    child = k.pci.pci_get_domain_bus_and_slot(DOMAIN, 1, PCI_DEVFN(0, 0))
    assert pci_real_dma_dev(child) is vmd_dev
    assert pci_real_dma_dev(vmd_dev) is vmd_dev
    # config space reached through CFGBAR: the same dword the hardware holds
    assert pci_read_config_dword(child, 0) == (0, 0x56781234)
    assert readl(cfgbar + ((1 << 20) | 0)) == 0x56781234
    # the drive's BAR sits in MEMBAR1 (non-prefetchable, as the NVMe BARs of a real VMD
    # domain do), and MMIO reaches it through the VMD
    mb1 = vmd_dev.resource[2]
    start = pci_resource_start(child, 0)
    assert mb1.start <= start and start + 0x3FFF <= mb1.end
    assert pci_enable_device(child) == 0
    assert readl(pci_iomap(child, 0) + REG_VS) == NVME_VS

    pci_stop_root_bus(bus)
    pci_remove_root_bus(bus)
    assert k.pci.domains() == [0]
    assert {id(o) for o in k.mem.leaks(owner="pci")} == before


def test_a_domain_whose_buses_start_at_224_numbers_its_buses_inside_its_range():
    """A VMD with bus restriction 2: the domain's buses are e0-ff (32 MiB of CFGBAR)."""
    rc = RootComplex()
    vmd = rc.root_bus.attach(Vmd("vmd0", aborts=rc.aborts, device_id=0x28C0,
                                 bus_restriction=2, cfgbar_size=32 << 20), 0x0E)
    for slot in range(2):
        vmd.hidden_bus.attach(root_port(rc, f"vrp{slot}"), slot).secondary.attach(
            TestEndpoint(f"vnvme{slot}"))
    bios_assign_resources(rc)
    k = new_kernel()
    boot(k, machine(rc))
    bus, _ = make_domain_or_none(k, k.pci.devices[0], busn_start=0xE0)
    assert [pci_name(d) for d in k.pci.lspci(DOMAIN)] == [
        "10000:e0:00.0", "10000:e0:01.0", "10000:e1:00.0", "10000:e2:00.0"]
    assert (bus.number, bus.busn_res.start, bus.busn_res.end) == (0xE0, 0xE0, 0xFF)
    assert [(c.busn_res.start, c.busn_res.end) for c in bus.children] == [(0xE1, 0xE1),
                                                                           (0xE2, 0xE2)]
    assert k.pci.pci_find_bus(DOMAIN, 0xE2).devices[0].vendor == 0x1234


def test_a_broken_pci_ops_is_named_with_the_access_it_failed():
    k = new_kernel()
    boot(k, machine(RootComplex()))
    before = k.mem.leaks(owner="pci")
    with pytest.raises(PciError, match="needs a pci_ops"):
        pci_create_root_bus(k, None, 0, None, pci_sysdata(domain=DOMAIN), [])
    sloppy = pci_ops(lambda bus, devfn, where, size: 0xFFFF, lambda *a: 0, name="sloppy")
    bus = pci_create_root_bus(k, None, 0, sloppy, pci_sysdata(domain=DOMAIN), [])
    with pytest.raises(PciError, match=r"config read of 4 byte\(s\) at 10000:00:03\.1 "
                                       r"offset 0x10 through <pci_ops sloppy>"):
        pci_bus_read_config_dword(bus, PCI_DEVFN(3, 1), 0x10)
    pci_remove_root_bus(bus)
    assert k.mem.leaks(owner="pci") == before
