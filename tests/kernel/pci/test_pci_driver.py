"""The driver model: matching, binding order, probe failure, unbinding, managed resources."""

from __future__ import annotations

import pytest
from pci_testbed import (
    NVME_VS,
    REG_VS,
    TestEndpoint,
    driver_priv,
    machine,
    new_kernel,
    root_port,
)

from vmdsim.hw.fabric import RootComplex
from vmdsim.kernel.boot import boot
from vmdsim.kernel.errno import EBUSY, EIO, ENOMEM
from vmdsim.kernel.io import readl
from vmdsim.kernel.mem import UseAfterFree
from vmdsim.kernel.pci import (
    PCI_DEVICE,
    PCI_DEVICE_CLASS,
    PciError,
    devm_add_action,
    devm_add_action_or_reset,
    devm_kzalloc,
    pci_device_id,
    pci_driver,
    pci_get_drvdata,
    pci_is_enabled,
    pci_name,
    pci_register_driver,
    pci_set_drvdata,
    pci_set_master,
    pci_unregister_driver,
    pcim_enable_device,
    pcim_iomap,
    pcim_iounmap,
)


def build_rc():
    """Two root ports with drives (class NVMe), and one non-NVMe endpoint on bus 0."""
    rc = RootComplex()
    rc.root_bus.attach(TestEndpoint("audio", vendor=0x8086, device=0x1111,
                                    class_code=0x040300, subsystem=(0x17AA, 0x2233)), 0x1F)
    for slot in (0x1C, 0x1D):
        rc.root_bus.attach(root_port(rc, f"rp{slot:x}"), slot).secondary.attach(
            TestEndpoint(f"nvme{slot:x}"))
    return rc


class Record:
    def __init__(self):
        self.calls = []

    def driver(self, name, ids, rc=0, **kw):
        def probe(dev, id):
            self.calls.append(("probe", name, pci_name(dev), id))
            return rc if not callable(rc) else rc(dev, id)

        def remove(dev):
            self.calls.append(("remove", name, pci_name(dev), pci_get_drvdata(dev)))

        return pci_driver(name, ids, probe=probe, remove=remove, **kw)

    def probes(self, name=None):
        return [c[2] for c in self.calls if c[0] == "probe" and (name is None or c[1] == name)]


def test_driver_registered_before_boot_binds_by_id_in_scan_order():
    rec = Record()
    k = new_kernel()
    ids = [PCI_DEVICE(0x1234, 0x5678, driver_data=7)]
    drv = rec.driver("nvme-by-id", ids)
    assert pci_register_driver(k, drv) == 0
    assert rec.calls == []  # nothing scanned yet
    boot(k, machine(build_rc()))
    assert rec.probes() == ["0000:01:00.0", "0000:02:00.0"]
    assert rec.calls[0][3].driver_data == 7
    for name in rec.probes():
        dev = next(d for d in k.pci.devices if pci_name(d) == name)
        assert dev.driver is drv
    audio = k.pci.pci_get_domain_bus_and_slot(0, 0, 0x1F << 3)
    assert audio.driver is None
    assert drv.devices == [d for d in k.pci.devices if d.driver is drv]


def test_driver_registered_after_boot_binds_by_class_and_by_subsystem():
    rec = Record()
    k = new_kernel()
    boot(k, machine(build_rc()))
    by_class = rec.driver("nvme-class", [PCI_DEVICE_CLASS(0x010802, 0xFFFFFF)])
    by_subsys = rec.driver("audio", [pci_device_id(vendor=0x8086, subvendor=0x17AA,
                                                   subdevice=0x2233)])
    wrong_subsys = rec.driver("other", [pci_device_id(vendor=0x8086, subvendor=0x17AA,
                                                      subdevice=0x9999)])
    for d in (wrong_subsys, by_class, by_subsys):
        assert pci_register_driver(k, d) == 0
    assert rec.probes("nvme-class") == ["0000:01:00.0", "0000:02:00.0"]
    assert rec.probes("audio") == ["0000:00:1f.0"]
    assert rec.probes("other") == []
    assert pci_register_driver(k, by_class) == -EBUSY


def test_failed_probe_leaves_the_device_unbound_and_releases_managed_resources():
    k = new_kernel()
    boot(k, machine(build_rc()))
    released = []
    seen = {}

    def failing_probe(dev, id):
        seen["priv"] = devm_kzalloc(dev.dev, driver_priv, owner="driver")
        assert pcim_enable_device(dev) == 0
        regs = pcim_iomap(dev, 0)
        seen["vs"] = readl(regs + REG_VS)
        pci_set_master(dev)
        devm_add_action(dev.dev, released.append, "action")
        pci_set_drvdata(dev, seen["priv"])
        return -EIO

    mapped_before = len(k.mem.leaks(owner="ioremap"))
    bad = pci_driver("bad", [PCI_DEVICE_CLASS(0x010802, 0xFFFFFF)], probe=failing_probe)
    good_rec = Record()
    good = good_rec.driver("good", [PCI_DEVICE(0x1234, 0x5678)])
    pci_register_driver(k, bad)
    dev = k.pci.pci_get_domain_bus_and_slot(0, 1, 0)
    assert seen["vs"] == NVME_VS
    assert dev.driver is None and pci_get_drvdata(dev) is None
    assert not pci_is_enabled(dev) and released == ["action", "action"]
    assert k.mem.leaks(owner="driver") == []
    assert len(k.mem.leaks(owner="ioremap")) == mapped_before
    assert bad.devices == []
    assert any("probe with driver bad failed with error -5" in line for line in k.log.lines())
    # the next matching driver gets its turn
    pci_register_driver(k, good)
    assert good_rec.probes() == ["0000:01:00.0", "0000:02:00.0"]
    assert dev.driver is good


def test_unregister_calls_remove_before_releasing_managed_state():
    k = new_kernel()
    boot(k, machine(build_rc()))
    order = []

    def probe(dev, id):
        priv = devm_kzalloc(dev.dev, driver_priv, owner="driver")
        priv.name = pci_name(dev)
        pci_set_drvdata(dev, priv)
        devm_add_action(dev.dev, lambda p: order.append(("devres", p.name)), priv)
        assert pcim_enable_device(dev) == 0
        return 0

    def remove(dev):
        order.append(("remove", pci_get_drvdata(dev).name))  # still alive here

    drv = pci_driver("nvme", [PCI_DEVICE(0x1234, 0x5678)], probe=probe, remove=remove)
    pci_register_driver(k, drv)
    devs = list(drv.devices)
    assert all(pci_is_enabled(d) for d in devs)
    pci_unregister_driver(k, drv)
    assert order == [("remove", "0000:02:00.0"), ("devres", "0000:02:00.0"),
                     ("remove", "0000:01:00.0"), ("devres", "0000:01:00.0")]
    assert all(d.driver is None and not pci_is_enabled(d) for d in devs)
    assert k.mem.leaks(owner="driver") == []
    with pytest.raises(PciError, match="not registered"):
        pci_unregister_driver(k, drv)


def test_probe_must_return_an_errno():
    k = new_kernel()
    boot(k, machine(build_rc()))
    drv = pci_driver("sloppy", [PCI_DEVICE(0x1234, 0x5678)], probe=lambda dev, id: None)
    with pytest.raises(PciError, match="returned None"):
        pci_register_driver(k, drv)


def test_managed_resources_are_allocated_and_can_fail_like_devres_alloc():
    k = new_kernel()
    boot(k, machine(build_rc()))
    dev = k.pci.pci_get_domain_bus_and_slot(0, 1, 0)
    ran = []
    k.mem.fail_nth(1)  # the devres node
    assert devm_add_action_or_reset(dev.dev, ran.append, "undo") == -ENOMEM
    assert ran == ["undo"] and dev.dev.devres_head == []
    k.mem.fail_nth(1)
    assert pcim_enable_device(dev) == -ENOMEM and not pci_is_enabled(dev)
    assert pcim_enable_device(dev) == 0
    regs = pcim_iomap(dev, 0)
    assert len(k.mem.leaks(owner="devres")) == 2
    pcim_iounmap(dev, regs)  # finds its node although each k.io.iounmap is a new method
    assert len(k.mem.leaks(owner="devres")) == 1
    with pytest.raises(UseAfterFree):
        readl(regs)
