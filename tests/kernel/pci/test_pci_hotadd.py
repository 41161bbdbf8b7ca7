"""After boot: a card appears below a hot-plug port; a secondary bus reset; walking a bus."""

from __future__ import annotations

from pci_testbed import NVME_VS, REG_VS, TestEndpoint, machine, new_kernel, root_port

from vmdsim.hw.bridge import PciBridge
from vmdsim.hw.fabric import RootComplex
from vmdsim.hw.regs import (
    PCI_COMMAND,
    PCI_INTERRUPT_LINE,
    PCI_MEMORY_BASE,
    PCI_MSIX_FLAGS,
    PCI_MSIX_FLAGS_ENABLE,
)
from vmdsim.kernel.boot import boot
from vmdsim.kernel.io import readl
from vmdsim.kernel.pci import (
    PCI_DEVICE,
    for_each_pci_bridge,
    pci_assign_unassigned_bridge_resources,
    pci_bus_add_devices,
    pci_driver,
    pci_enable_device,
    pci_hp_add_bridge,
    pci_iomap,
    pci_lock_rescan_remove,
    pci_name,
    pci_read_config_byte,
    pci_read_config_dword,
    pci_read_config_word,
    pci_register_driver,
    pci_reset_bus,
    pci_resource_start,
    pci_scan_slot,
    pci_set_master,
    pci_unlock_rescan_remove,
    pci_walk_bus,
    pci_write_config_byte,
    pci_write_config_word,
    pcim_enable_device,
)


def test_a_card_added_after_boot_fits_the_window_reserved_for_the_slot():
    rc = RootComplex()
    hp = rc.root_bus.attach(root_port(rc, "hp", hotplug=True), 0x1C)
    k = new_kernel()
    boot(k, machine(rc))
    seen = []

    def probe(dev, id):
        assert pcim_enable_device(dev) == 0
        seen.append((pci_name(dev), readl(pci_iomap(dev, 0) + REG_VS)))
        return 0

    pci_register_driver(k, pci_driver("nvme", [PCI_DEVICE(0x1234, 0x5678)], probe=probe))
    port = k.pci.pci_get_domain_bus_and_slot(0, 0, 0x1C << 3)
    _, before = pci_read_config_dword(port, PCI_MEMORY_BASE)
    hp.secondary.attach(TestEndpoint("hot"))  # the card goes in (a hardware act)
    # what pciehp_configure_device does
    assert pci_scan_slot(port.subordinate, 0) == 1
    pci_assign_unassigned_bridge_resources(port)
    pci_bus_add_devices(port.subordinate)
    assert seen == [("0000:01:00.0", NVME_VS)]
    dev = port.subordinate.devices[0]
    win = port.resource[8]
    assert win.start <= pci_resource_start(dev, 0) <= win.end
    _, after = pci_read_config_dword(port, PCI_MEMORY_BASE)
    assert after == before  # the window firmware/boot reserved was big enough: not moved


def test_secondary_bus_reset_restores_the_saved_config_of_devices_below():
    rc = RootComplex()
    rp = rc.root_bus.attach(root_port(rc, "rp"), 0x1C)
    ep = rp.secondary.attach(TestEndpoint("ep"))
    k = new_kernel()
    boot(k, machine(rc))
    dev = k.pci.pci_get_domain_bus_and_slot(0, 1, 0)
    assert pci_enable_device(dev) == 0
    pci_set_master(dev)
    _, cmd = pci_read_config_word(dev, PCI_COMMAND)
    pci_write_config_byte(dev, PCI_INTERRUPT_LINE, 0x5A)
    bar = ep.bar_address(0)
    flags = dev.msix_cap + PCI_MSIX_FLAGS
    pci_write_config_word(dev, flags, PCI_MSIX_FLAGS_ENABLE)  # not part of the saved header
    assert pci_reset_bus(dev) == 0
    assert not pci_read_config_word(dev, flags)[1] & PCI_MSIX_FLAGS_ENABLE  # really reset
    assert pci_read_config_byte(dev, PCI_INTERRUPT_LINE) == (0, 0x5A)
    assert ep.bar_address(0) == bar == pci_resource_start(dev, 0)
    assert pci_read_config_word(dev, PCI_COMMAND) == (0, cmd)  # decode and mastering back
    assert ep.memory_enabled and ep.bus_master_enabled


def test_walk_bus_visits_a_bridge_before_its_children_and_can_stop():
    rc = RootComplex()
    for slot in (0x1C, 0x1D):
        rc.root_bus.attach(root_port(rc, f"rp{slot:x}"), slot).secondary.attach(
            TestEndpoint(f"ep{slot:x}"))
    k = new_kernel()
    root = boot(k, machine(rc))
    seen = []
    pci_walk_bus(root, lambda dev, acc: acc.append(pci_name(dev)), seen)
    assert seen == ["0000:00:1c.0", "0000:01:00.0", "0000:00:1d.0", "0000:02:00.0"]
    first = []
    pci_walk_bus(root, lambda dev, acc: acc.append(pci_name(dev)) or len(acc) == 2, first)
    assert first == seen[:2]


def hot_add_switch(hpbussize):
    rc = RootComplex()
    hp = rc.root_bus.attach(root_port(rc, "hp", hotplug=True), 0x1C)
    k = new_kernel()
    k.pci.pci_hotplug_bus_size = hpbussize  # pci=hpbussize=
    boot(k, machine(rc))
    seen = []

    def probe(dev, id):
        assert pcim_enable_device(dev) == 0
        seen.append((pci_name(dev), readl(pci_iomap(dev, 0) + REG_VS)))
        return 0

    pci_register_driver(k, pci_driver("nvme", [PCI_DEVICE(0x1234, 0x5678)], probe=probe))
    port = k.pci.pci_get_domain_bus_and_slot(0, 0, 0x1C << 3)
    sw = hp.secondary.attach(PciBridge("sw", 0x10B5, 0x8747, aborts=rc.aborts))
    sw.secondary.attach(TestEndpoint("hot"))
    # what pciehp_configure_device does
    pci_lock_rescan_remove(k)
    assert pci_scan_slot(port.subordinate, 0) == 1
    rets = [pci_hp_add_bridge(b) for b in for_each_pci_bridge(port.subordinate)]
    pci_assign_unassigned_bridge_resources(port)
    pci_bus_add_devices(port.subordinate)
    pci_unlock_rescan_remove(k)
    return k, port, sw, rets, seen


def test_a_hot_added_switch_gets_the_spare_bus_numbers_of_its_slot():
    k, port, sw, rets, seen = hot_add_switch(2)
    assert port.subordinate.busn_res.start == 1 and port.subordinate.busn_res.end == 2
    assert rets == [0] and (sw.secondary_bus, sw.subordinate_bus) == (2, 2)
    assert seen == [("0000:02:00.0", NVME_VS)]


def test_a_hot_added_switch_finds_no_bus_number_when_the_slot_has_none_spare():
    k, port, sw, rets, seen = hot_add_switch(1)  # the default: one bus per hot-plug port
    assert rets == [-1] and seen == []
    assert "pci 0000:01:00.0: No bus number available for hot-added bridge" in k.log.lines()
