"""Booting whole machines built from topologies (``Machine``), without a VMD driver."""

from __future__ import annotations

from vmdsim.hw.fabric import HOST_WINDOW_32
from vmdsim.hw.machine import Machine
from vmdsim.hw.regs import (
    PCI_BASE_ADDRESS_0,
    PCI_COMMAND,
    PCI_COMMAND_MASTER,
    PCI_COMMAND_MEMORY,
    PCI_MEMORY_BASE,
    PCI_PRIMARY_BUS,
)
from vmdsim.kernel.boot import boot
from vmdsim.kernel.core import Kernel
from vmdsim.kernel.io import readl
from vmdsim.kernel.pci import (
    IORESOURCE_MEM_64,
    IORESOURCE_PREFETCH,
    PCI_DEVICE_CLASS,
    pci_driver,
    pci_iomap,
    pci_name,
    pci_read_config_dword,
    pci_read_config_word,
    pci_register_driver,
    pci_resource_flags,
    pci_resource_len,
    pci_resource_start,
    pci_set_master,
    pcim_enable_device,
)
from vmdsim.kernel.pci.resource import format_iomem
from vmdsim.topology import parse

NVME_REG_VS = 0x08


def boot_machine(m: Machine) -> Kernel:
    k = Kernel(ncpus=m.ncpus)
    boot(k, m)
    return k


def bar(dev, i):
    _, lo = pci_read_config_dword(dev, PCI_BASE_ADDRESS_0 + 4 * i)
    _, hi = pci_read_config_dword(dev, PCI_BASE_ADDRESS_0 + 4 * i + 4)
    return (lo & ~0xF) | (hi << 32)


def test_default_machine_shows_the_vmd_with_firmware_bars_and_hides_its_domain():
    k = boot_machine(Machine.load())
    assert [pci_name(d) for d in k.pci.lspci()] == ["0000:00:00.0", "0000:00:0e.0"]
    assert k.pci.domains() == [0]
    vmd = k.pci.pci_get_domain_bus_and_slot(0, 0, 0x0E << 3)
    assert (vmd.vendor, vmd.device, vmd.class_) == (0x8086, 0x201D, 0x010400)
    assert vmd.driver is None
    lo, hi = HOST_WINDOW_32
    for i, size, pref in ((0, 32 << 20, True), (2, 32 << 20, False), (4, 1 << 20, False)):
        assert pci_resource_len(vmd, i) == size
        start = pci_resource_start(vmd, i)
        assert start == bar(vmd, i)  # what config space holds: firmware's address, kept
        assert lo <= start and start + size - 1 <= hi and start % size == 0
        assert vmd.resource[i].parent is not None  # claimed in the host bridge window
        assert pci_resource_flags(vmd, i) & IORESOURCE_MEM_64
        assert bool(pci_resource_flags(vmd, i) & IORESOURCE_PREFETCH) == pref
    assert vmd.msix_cap and vmd.pcie_cap


PRIMARY = """
[machine]
cpus = 2

[[root_port]]
slot = "1c.0"
slot_number = 1
nvme = { queues = 4 }

[[root_port]]
slot = "1d.0"
slot_number = 2
nvme = { queues = 2 }
"""


def test_primary_domain_drives_get_buses_windows_and_bars_like_linux():
    m = Machine.build(parse(PRIMARY))
    k = boot_machine(m)
    probed = []

    def probe(dev, id):
        assert pcim_enable_device(dev) == 0
        pci_set_master(dev)
        probed.append((pci_name(dev), readl(pci_iomap(dev, 0) + NVME_REG_VS)))
        return 0

    pci_register_driver(k, pci_driver("nvme", [PCI_DEVICE_CLASS(0x010802, 0xFFFFFF)],
                                      probe=probe))
    assert probed == [("0000:01:00.0", 0x00010400), ("0000:02:00.0", 0x00010400)]
    lo, hi = HOST_WINDOW_32
    for n, slot in ((1, 0x1C), (2, 0x1D)):
        rp = k.pci.pci_get_domain_bus_and_slot(0, 0, slot << 3)
        nvme = k.pci.pci_get_domain_bus_and_slot(0, n, 0)
        _, buses = pci_read_config_dword(rp, PCI_PRIMARY_BUS)
        assert buses & 0xFFFFFF == (n << 16) | (n << 8)
        _, w = pci_read_config_dword(rp, PCI_MEMORY_BASE)
        base, limit = (w & 0xFFF0) << 16, (w & 0xFFF00000) | 0xFFFFF
        assert lo <= base < limit <= hi
        assert base <= bar(nvme, 0) and bar(nvme, 0) + pci_resource_len(nvme, 0) - 1 <= limit
        _, cmd = pci_read_config_word(nvme, PCI_COMMAND)
        assert cmd & PCI_COMMAND_MEMORY and cmd & PCI_COMMAND_MASTER
        _, rp_cmd = pci_read_config_word(rp, PCI_COMMAND)
        assert rp_cmd & PCI_COMMAND_MEMORY and rp_cmd & PCI_COMMAND_MASTER
        assert nvme.msix_cap and nvme.aer_cap and rp.is_hotplug_bridge
    # What Linux's /proc/iomem shows for this machine: each hot-plug port's window holds
    # its drive's 16 KiB BAR plus pci=hpmmiosize (2 MiB, 1 MiB aligned, so 2 MiB in all),
    # and an empty 64-bit prefetchable window of hpmmioprefsize above 4 GiB; first fit
    # from the bottom of each host window, in device order.
    assert format_iomem(k.pci.iomem_resource).splitlines() == [
        "c0000000-dfffffff : PCI Bus 0000:00",
        "  c0000000-c01fffff : PCI Bus 0000:01",
        "    c0000000-c0003fff : 0000:01:00.0",
        "  c0200000-c03fffff : PCI Bus 0000:02",
        "    c0200000-c0203fff : 0000:02:00.0",
        "e0000000-efffffff : PCI MMCONFIG 0000 [bus 00-ff]",
        "4000000000-7fffffffff : PCI Bus 0000:00",
        "  4000000000-40001fffff : PCI Bus 0000:01",
        "  4000200000-40003fffff : PCI Bus 0000:02",
    ]
    assert "pci 0000:00:1c.0: bridge window [mem 0x00100000-0x001fffff] to [bus 01-01] " \
           "add_size 0x100000 add_align 0x100000" in k.log.lines()
