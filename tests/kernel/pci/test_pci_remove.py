"""Removal: drivers unbound, resources released, every object freed; rescan."""

from __future__ import annotations

import pytest
from pci_testbed import TestEndpoint, driver_priv, machine, new_kernel, root_port

from vmdsim.hw.fabric import RootComplex
from vmdsim.kernel.boot import boot
from vmdsim.kernel.mem import UseAfterFree
from vmdsim.kernel.pci import (
    PCI_DEVICE,
    devm_kzalloc,
    format_iomem,
    pci_driver,
    pci_lock_rescan_remove,
    pci_name,
    pci_register_driver,
    pci_remove_root_bus,
    pci_rescan_bus,
    pci_stop_and_remove_bus_device,
    pci_stop_and_remove_bus_device_locked,
    pci_stop_root_bus,
    pci_unlock_rescan_remove,
    pcim_enable_device,
    pcim_iomap,
)
from vmdsim.kernel.pci.resource import children


def ids(objs):
    return {id(o) for o in objs}


def setup():
    rc = RootComplex()
    for slot in (0x1C, 0x1D):
        rc.root_bus.attach(root_port(rc, f"rp{slot:x}", hotplug=True), slot).secondary.attach(
            TestEndpoint(f"nvme{slot:x}"))
    k = new_kernel()
    events = []

    def probe(dev, id):
        devm_kzalloc(dev.dev, driver_priv, owner="driver")
        assert pcim_enable_device(dev) == 0
        assert pcim_iomap(dev, 0) is not None
        events.append(("probe", pci_name(dev)))
        return 0

    def remove(dev):
        events.append(("remove", pci_name(dev)))

    drv = pci_driver("nvme", [PCI_DEVICE(0x1234, 0x5678)], probe=probe, remove=remove)
    pci_register_driver(k, drv)
    root = boot(k, machine(rc))
    return k, root, drv, events


def test_removing_a_port_unbinds_and_frees_everything_below_it():
    k, root, drv, events = setup()
    pci_before = ids(k.mem.leaks(owner="pci"))
    rp = k.pci.pci_get_domain_bus_and_slot(0, 0, 0x1C << 3)
    nvme = rp.subordinate.devices[0]
    doomed = [rp, nvme, rp.subordinate, rp.subordinate.busn_res, *rp.resource, *nvme.resource]
    events.clear()
    pci_stop_and_remove_bus_device(rp)
    assert events == [("remove", "0000:01:00.0")]
    assert drv.devices == [k.pci.pci_get_domain_bus_and_slot(0, 2, 0)]
    assert ids(k.mem.leaks(owner="pci")) == pci_before - ids(doomed)
    assert k.mem.leaks(owner="driver") and len(k.mem.leaks(owner="driver")) == 1
    assert "PCI Bus 0000:01" not in format_iomem(k.pci.iomem_resource)
    domain_busn = k.pci.get_pci_domain_busn_res(0)
    assert [c.start for c in children(root.busn_res)] == [2]
    assert list(children(domain_busn)) == [root.busn_res]
    assert [pci_name(d) for d in k.pci.lspci()] == ["0000:00:1d.0", "0000:02:00.0"]
    with pytest.raises(UseAfterFree, match=r"pci_dev#\d+\.vendor"):  # poisoned by kfree
        _ = nvme.vendor


def test_rescan_finds_the_port_again_and_the_driver_rebinds():
    k, root, drv, events = setup()
    rp = k.pci.pci_get_domain_bus_and_slot(0, 0, 0x1C << 3)
    pci_stop_and_remove_bus_device_locked(rp)
    assert k.pci.pci_rescan_remove_lock.owner is None  # taken and released
    events.clear()
    pci_lock_rescan_remove(k)
    pci_rescan_bus(root)
    pci_unlock_rescan_remove(k)
    assert events == [("probe", "0000:01:00.0")]
    assert sorted(pci_name(d) for d in drv.devices) == ["0000:01:00.0", "0000:02:00.0"]


def test_removing_the_root_bus_leaves_nothing_behind():
    k, root, drv, events = setup()
    events.clear()
    pci_stop_root_bus(root)
    assert events == [("remove", "0000:02:00.0"), ("remove", "0000:01:00.0")]
    assert drv.devices == []
    pci_remove_root_bus(root)
    assert k.mem.leaks(owner="pci") == []
    assert k.mem.leaks(owner="driver") == []
    assert k.pci.pci_root_buses == [] and k.pci.devices == []
    # what is left in the iomem tree is the ECAM reservation only
    assert [r.name for r in children(k.pci.iomem_resource)] == ["PCI MMCONFIG 0000 [bus 00-ff]"]
