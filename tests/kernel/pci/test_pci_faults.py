"""Allocation failure at every point: boot, a driver's probe, a new root bus in its own
domain. Each walk makes the 1st, 2nd, ... allocation fail (``k.mem.fail_nth``) until a
run no longer reaches the armed allocation; every run must end cleanly (no crash, no
unexpected exception) and leave nothing allocated that its owner no longer reaches."""

from __future__ import annotations

from collections.abc import Callable

from pci_testbed import (
    DOMAIN,
    TestEndpoint,
    driver_priv,
    machine,
    make_domain_or_none,
    new_kernel,
    root_port,
)

from vmdsim.hw.bridge import PciBridge
from vmdsim.hw.fabric import RootComplex
from vmdsim.hw.firmware import bios_assign_resources
from vmdsim.hw.vmd import Vmd
from vmdsim.kernel.boot import BootError, boot
from vmdsim.kernel.errno import ENOMEM
from vmdsim.kernel.pci import (
    PCI_DEVICE,
    devm_kzalloc,
    for_each_pci_bridge,
    pci_assign_unassigned_bridge_resources,
    pci_bus_add_devices,
    pci_driver,
    pci_hp_add_bridge,
    pci_is_enabled,
    pci_lock_rescan_remove,
    pci_register_driver,
    pci_release_mem_regions,
    pci_remove_root_bus,
    pci_request_mem_regions,
    pci_scan_slot,
    pci_stop_and_remove_bus_device_locked,
    pci_stop_root_bus,
    pci_unlock_rescan_remove,
    pci_unregister_driver,
    pcim_enable_device,
    pcim_iomap,
)
from vmdsim.kernel.pci.resource import IORESOURCE_BUSY, walk

MAX_RUNS = 2000


def walk_failures(run: Callable[[int], bool]) -> int:
    """Call ``run(n)`` for n = 1, 2, ... until it reports that no allocation failed."""
    for n in range(1, MAX_RUNS):
        if not run(n):
            return n - 1
    raise AssertionError(f"still failing allocations after {MAX_RUNS} runs")


def busy_regions(k):
    return [r for _, r in walk(k.pci.iomem_resource) if r.flags & IORESOURCE_BUSY
            and not r.name.startswith("PCI MMCONFIG")]


def switch_machine() -> RootComplex:
    """A hot-plug port with a drive, a port with a two-level switch, an endpoint on bus 0."""
    rc = RootComplex()
    rc.root_bus.attach(TestEndpoint("audio", vendor=0x8086, device=0x1111,
                                    class_code=0x040300), 0x1F)
    rc.root_bus.attach(root_port(rc, "hp", hotplug=True), 0x1C).secondary.attach(
        TestEndpoint("nvme0"))
    rp = rc.root_bus.attach(root_port(rc, "rp"), 0x1D)
    sw = rp.secondary.attach(PciBridge("sw", 0x10B5, 0x8747, aborts=rc.aborts))
    sw.secondary.attach(TestEndpoint("nvme1"))
    return rc


def test_boot_survives_allocation_failure_anywhere_and_leaks_nothing():
    outcomes = set()

    def run(n: int) -> bool:
        k = new_kernel()
        k.mem.fail_nth(n)
        try:
            root = boot(k, machine(switch_machine()))
        except BootError as e:
            assert "out of memory" in str(e)
            assert k.mem.leaks() == [] and not k.booted  # undone entirely
            outcomes.add("no domain 0")
            return True
        k.mem.fail_nth(None)
        if not k.mem.failed:
            return False
        outcomes.add(f"{len(k.pci.devices)} devices")
        pci_stop_root_bus(root)
        pci_remove_root_bus(root)
        assert k.mem.leaks(owner="pci") == [], n
        return True

    runs = walk_failures(run)
    assert runs > 50
    # Early failures lose domain 0; later ones a device (with what is below it) or a
    # bridge's bus (what is below it). Only the scan allocates: no run keeps all six.
    assert outcomes == {"no domain 0", "3 devices", "4 devices", "5 devices"}


def test_a_probe_failing_at_any_allocation_leaves_nothing_behind():
    def probe(dev, id):
        priv = devm_kzalloc(dev.dev, driver_priv, owner="driver")
        if priv is None:
            return -ENOMEM
        ret = pcim_enable_device(dev)
        if ret:
            return ret
        regs = pcim_iomap(dev, 0)
        if regs is None:
            return -ENOMEM
        ret = pci_request_mem_regions(dev, "nvme")
        if ret:
            return ret
        return 0

    def remove(dev):
        pci_release_mem_regions(dev)

    def run(n: int) -> bool:
        k = new_kernel()
        boot(k, machine(switch_machine()))
        mapped = len(k.mem.leaks(owner="ioremap"))
        drv = pci_driver("nvme", [PCI_DEVICE(0x1234, 0x5678)], probe=probe, remove=remove)
        k.mem.fail_nth(n)
        assert pci_register_driver(k, drv) == 0
        k.mem.fail_nth(None)
        if not k.mem.failed:
            assert len(drv.devices) == 2
            return False
        assert len(drv.devices) == 1  # one of the two probes met the failure
        failed = next(d for d in k.pci.devices if d.vendor == 0x1234 and d.driver is None)
        assert not pci_is_enabled(failed)
        assert len(busy_regions(k)) == 1  # the bound drive's only
        pci_unregister_driver(k, drv)
        assert k.mem.leaks(owner="driver") == []
        assert len(k.mem.leaks(owner="ioremap")) == mapped
        assert busy_regions(k) == []
        return True

    # Six allocations per probe: priv and its devres node, the pcim_enable_device node,
    # the pcim_iomap node and mapping, the busy region; two drives.
    assert walk_failures(run) == 2 * 6


def vmd_machine() -> RootComplex:
    rc = RootComplex()
    vmd = rc.root_bus.attach(Vmd("vmd0", aborts=rc.aborts, cfgbar_size=4 << 20,
                                 membar2_size=4 << 20), 0x0E)
    vmd.hidden_bus.attach(root_port(rc, "vrp0", hotplug=True), 0).secondary.attach(
        TestEndpoint("vnvme0"))
    vmd.hidden_bus.attach(root_port(rc, "vrp1"), 1).secondary.attach(TestEndpoint("vnvme1"))
    bios_assign_resources(rc)
    return rc


def test_a_new_root_bus_in_its_own_domain_fails_cleanly_at_any_allocation():
    outcomes = set()

    def run(n: int) -> bool:
        k = new_kernel()
        boot(k, machine(vmd_machine()))
        vmd_dev = k.pci.devices[0]
        before = {id(o) for o in k.mem.leaks(owner="pci")}
        mapped = len(k.mem.leaks(owner="ioremap"))
        k.mem.fail_nth(n)
        got = make_domain_or_none(k, vmd_dev)
        k.mem.fail_nth(None)
        if not k.mem.failed:
            return False
        if got is None:
            outcomes.add("no domain")
        else:
            bus, cfgbar = got
            outcomes.add(f"{len(k.pci.lspci(DOMAIN))} devices")
            pci_stop_root_bus(bus)
            pci_remove_root_bus(bus)
            k.io.iounmap(cfgbar)
        assert k.pci.domains() == [0]
        assert {id(o) for o in k.mem.leaks(owner="pci")} == before, n
        assert len(k.mem.leaks(owner="ioremap")) == mapped
        return True

    assert walk_failures(run) > 20
    # Only creating and scanning the bus allocates: a failure loses the domain, a port
    # (with its drive) or a drive, never nothing.
    assert outcomes == {"no domain", "2 devices", "3 devices"}


def test_a_hot_added_card_meets_allocation_failure_anywhere_cleanly():
    """What pciehp does when a card with a switch on it appears: scan the slot, number
    and scan the bridges found, assign, add; then remove it again."""

    def run(n: int) -> bool:
        rc = RootComplex()
        hp = rc.root_bus.attach(root_port(rc, "hp", hotplug=True), 0x1C)
        k = new_kernel()
        k.pci.pci_hotplug_bus_size = 2  # pci=hpbussize=2: room for the switch
        boot(k, machine(rc))
        port = k.pci.pci_get_domain_bus_and_slot(0, 0, 0x1C << 3)
        before = {id(o) for o in k.mem.leaks(owner="pci")}
        sw = hp.secondary.attach(PciBridge("sw", 0x10B5, 0x8747, aborts=rc.aborts))
        sw.secondary.attach(TestEndpoint("hot"))
        k.mem.fail_nth(n)
        pci_lock_rescan_remove(k)
        found = pci_scan_slot(port.subordinate, 0)
        for bridge in for_each_pci_bridge(port.subordinate):
            pci_hp_add_bridge(bridge)
        pci_assign_unassigned_bridge_resources(port)
        pci_bus_add_devices(port.subordinate)
        pci_unlock_rescan_remove(k)
        k.mem.fail_nth(None)
        if not k.mem.failed:
            assert found == 1 and len(k.pci.devices) == 3
            return False
        for dev in list(port.subordinate.devices):
            pci_stop_and_remove_bus_device_locked(dev)
        assert {id(o) for o in k.mem.leaks(owner="pci")} == before, n
        return True

    assert walk_failures(run) > 20
