"""Resources: firmware claims, bridge window sizing, assignment, decode, MMIO."""

from __future__ import annotations

from pci_testbed import NVME_VS, REG_VS, TestEndpoint, machine, new_kernel, root_port

from vmdsim.hw.fabric import HOST_WINDOW_32, HOST_WINDOW_64, RootComplex, ecam_offset
from vmdsim.hw.function import Bar
from vmdsim.hw.regs import (
    PCI_BASE_ADDRESS_0,
    PCI_COMMAND,
    PCI_COMMAND_MASTER,
    PCI_COMMAND_MEMORY,
    PCI_MEMORY_BASE,
    PCI_PREF_BASE_UPPER32,
    PCI_PREF_MEMORY_BASE,
)
from vmdsim.kernel.boot import boot
from vmdsim.kernel.errno import EBUSY, EINVAL
from vmdsim.kernel.io import readl
from vmdsim.kernel.pci import (
    IORESOURCE_BUSY,
    IORESOURCE_UNSET,
    PCI_BRIDGE_MEM_WINDOW,
    PCI_BRIDGE_PREF_MEM_WINDOW,
    pci_disable_device,
    pci_enable_device,
    pci_iomap,
    pci_iounmap,
    pci_read_config_dword,
    pci_read_config_word,
    pci_release_mem_regions,
    pci_request_mem_regions,
    pci_resource_len,
    pci_resource_start,
    pci_set_master,
)
from vmdsim.kernel.pci.resource import children

SZ_1M = 1 << 20


def boot_rc(rc):
    k = new_kernel()
    boot(k, machine(rc))
    return k


def dev_at(k, bus, slot, fn=0):
    return k.pci.pci_get_domain_bus_and_slot(0, bus, (slot << 3) | fn)


def mem_window(dev):
    """(base, limit) of a bridge's memory window as its registers say, None when closed."""
    _, v = pci_read_config_dword(dev, PCI_MEMORY_BASE)
    base, limit = (v & 0xFFF0) << 16, (v & 0xFFF00000) | 0xFFFFF
    return (base, limit) if base <= limit else None


def pref_window(dev):
    _, v = pci_read_config_dword(dev, PCI_PREF_MEMORY_BASE)
    _, hi = pci_read_config_dword(dev, PCI_PREF_BASE_UPPER32)
    _, hi_l = pci_read_config_dword(dev, PCI_PREF_BASE_UPPER32 + 4)
    base = ((v & 0xFFF0) << 16) | (hi << 32)
    limit = (v & 0xFFF00000) | 0xFFFFF | (hi_l << 32)
    return (base, limit) if base <= limit else None


def bar64(dev, i):
    _, lo = pci_read_config_dword(dev, PCI_BASE_ADDRESS_0 + 4 * i)
    _, hi = pci_read_config_dword(dev, PCI_BASE_ADDRESS_0 + 4 * i + 4)
    return (lo & ~0xF) | (hi << 32)


def test_root_ports_get_windows_and_drives_get_bars_inside_them():
    rc = RootComplex()
    for slot in (0x1C, 0x1D):
        rc.root_bus.attach(root_port(rc, f"rp{slot:x}"), slot).secondary.attach(
            TestEndpoint(f"nvme{slot:x}"))
    k = boot_rc(rc)
    lo, hi = HOST_WINDOW_32
    windows = []
    for n, slot in ((1, 0x1C), (2, 0x1D)):
        rp, nvme = dev_at(k, 0, slot), dev_at(k, n, 0)
        win = mem_window(rp)
        assert win is not None and lo <= win[0] and win[1] <= hi
        assert win[0] % SZ_1M == 0 and (win[1] + 1 - win[0]) == SZ_1M
        assert pref_window(rp) is None  # nothing prefetchable below: closed
        addr = bar64(nvme, 0)
        assert win[0] <= addr and addr + 0x4000 - 1 <= win[1]
        assert addr == pci_resource_start(nvme, 0)
        assert nvme.resource[0].parent is rp.resource[PCI_BRIDGE_MEM_WINDOW]
        windows.append(win)
    assert windows[0][1] < windows[1][0]  # no overlap


def test_enable_turns_on_decode_up_the_path_and_mmio_reaches_the_register():
    rc = RootComplex()
    rp_hw = rc.root_bus.attach(root_port(rc, "rp"), 0x1C)
    ep = rp_hw.secondary.attach(TestEndpoint("nvme"))
    k = boot_rc(rc)
    rp, nvme = dev_at(k, 0, 0x1C), dev_at(k, 1, 0)
    assert not ep.memory_enabled and not rp_hw.memory_enabled  # nobody enabled them yet
    assert pci_enable_device(nvme) == 0
    assert pci_read_config_word(nvme, PCI_COMMAND)[1] & PCI_COMMAND_MEMORY
    _, rp_cmd = pci_read_config_word(rp, PCI_COMMAND)
    assert rp_cmd & PCI_COMMAND_MEMORY and rp_cmd & PCI_COMMAND_MASTER  # pci_enable_bridge
    regs = pci_iomap(nvme, 0)
    assert readl(regs + REG_VS) == NVME_VS
    pci_set_master(nvme)
    assert ep.bus_master_enabled
    pci_disable_device(nvme)
    assert not ep.bus_master_enabled and ep.memory_enabled  # Linux leaves decode on
    pci_iounmap(nvme, regs)


def test_64bit_prefetchable_bar_goes_in_the_prefetchable_window_above_4g():
    rc = RootComplex()
    rp_hw = rc.root_bus.attach(root_port(rc, "rp"), 0x1C)
    rp_hw.secondary.attach(TestEndpoint("gpu", class_code=0x030000, bars=(
        Bar(0, 0x4000), Bar(2, 2 * SZ_1M, is64=True, prefetchable=True))))
    k = boot_rc(rc)
    rp, ep = dev_at(k, 0, 0x1C), dev_at(k, 1, 0)
    pref = pref_window(rp)
    assert pref is not None and HOST_WINDOW_64[0] <= pref[0] <= pref[1] <= HOST_WINDOW_64[1]
    assert pref[0] <= bar64(ep, 2) and bar64(ep, 2) + 2 * SZ_1M - 1 <= pref[1]
    assert ep.resource[2].parent is rp.resource[PCI_BRIDGE_PREF_MEM_WINDOW]
    win = mem_window(rp)
    assert win[0] <= bar64(ep, 0) <= win[1]  # the non-prefetchable BAR stays below 4 GiB


def test_empty_hotplug_slot_gets_room_for_a_future_card():
    rc = RootComplex()
    rc.root_bus.attach(root_port(rc, "hp", hotplug=True), 0x1C)
    k = boot_rc(rc)
    rp = dev_at(k, 0, 0x1C)
    assert rp.is_hotplug_bridge
    win, pref = mem_window(rp), pref_window(rp)
    assert win is not None and win[1] + 1 - win[0] == k.pci.pci_hotplug_mmio_size
    assert pref is not None and pref[1] + 1 - pref[0] == k.pci.pci_hotplug_mmio_pref_size


def test_conflicting_firmware_bar_is_moved():
    rc = RootComplex()
    a = rc.root_bus.attach(TestEndpoint("a"), 2)
    b = rc.root_bus.attach(TestEndpoint("b"), 3)
    for fn in (a, b):  # firmware put both at the same address and enabled decode
        base = rc.mmconfig_base + ecam_offset(0, fn.devfn, 0)
        rc.mem_write(base + PCI_BASE_ADDRESS_0, 4, 0xC0000000)
        rc.mem_write(base + PCI_BASE_ADDRESS_0 + 4, 4, 0)
        rc.mem_write(base + PCI_COMMAND, 2, PCI_COMMAND_MEMORY)
    k = boot_rc(rc)
    da, db = dev_at(k, 0, 2), dev_at(k, 0, 3)
    assert pci_resource_start(da, 0) == 0xC0000000 == a.bar_address(0)
    assert pci_resource_start(db, 0) != 0xC0000000
    assert bar64(db, 0) == pci_resource_start(db, 0) == b.bar_address(0)
    assert db.resource[0].parent is not None
    assert any("address conflict" in line for line in k.log.lines())


def test_bar_that_does_not_fit_stays_unassigned_and_enable_fails():
    rc = RootComplex()
    rc.root_bus.attach(root_port(rc, "rp"), 0x1C).secondary.attach(
        TestEndpoint("huge", bars=(Bar(0, 1 << 30, is64=False),)))  # 1 GiB, 32-bit only
    k = boot_rc(rc)
    dev = dev_at(k, 1, 0)
    assert dev.resource[0].flags & IORESOURCE_UNSET and dev.resource[0].parent is None
    assert pci_enable_device(dev) == -EINVAL
    assert dev.enable_cnt == 0


def test_mem_regions_are_marked_busy_in_the_iomem_tree():
    rc = RootComplex()
    rc.root_bus.attach(root_port(rc, "rp"), 0x1C).secondary.attach(TestEndpoint("nvme"))
    k = boot_rc(rc)
    dev = dev_at(k, 1, 0)
    assert pci_request_mem_regions(dev, "nvme") == 0
    busy = list(children(dev.resource[0]))
    assert len(busy) == 1 and busy[0].name == "nvme" and busy[0].flags & IORESOURCE_BUSY
    assert (busy[0].start, busy[0].end) == (dev.resource[0].start, dev.resource[0].end)
    assert pci_request_mem_regions(dev, "other") == -EBUSY
    pci_release_mem_regions(dev)
    assert dev.resource[0].child is None
    assert pci_resource_len(dev, 0) == 0x4000


def test_window_alignment_is_relaxed_when_the_bars_still_pack():
    """4M + 1M + 16K below a port: a 6 MiB window aligned to 2 MiB holds them all
    (calculate_mem_align), even when it does not start on a 4 MiB boundary."""
    rc = RootComplex()
    rc.root_bus.attach(TestEndpoint("first", bars=(Bar(0, 2 * SZ_1M, is64=False),)), 2)
    rc.root_bus.attach(root_port(rc, "rp"), 0x1C).secondary.attach(TestEndpoint(
        "mixed", bars=(Bar(0, 0x4000), Bar(2, 4 * SZ_1M), Bar(4, SZ_1M))))
    k = boot_rc(rc)
    rp, ep = dev_at(k, 0, 0x1C), dev_at(k, 1, 0)
    base, limit = mem_window(rp)
    assert (base, limit + 1 - base) == (HOST_WINDOW_32[0] + 2 * SZ_1M, 6 * SZ_1M)
    for i, size in ((0, 0x4000), (2, 4 * SZ_1M), (4, SZ_1M)):
        addr = bar64(ep, i)
        assert addr % size == 0 and base <= addr and addr + size - 1 <= limit
