"""The VMD as an MSI parent (v6.17+, ``drivers/vmd/msi_parent.py``): each child on a device
domain of its own over the VMD's domain, against the legacy domain of v4.5-v6.16."""

from __future__ import annotations

import vmdsim
from vmdsim.check.scenarios.worlds import small_topology
from vmdsim.drivers.nvme import nvme_core_of
from vmdsim.drivers.vmd import vmd_devices
from vmdsim.drivers.vmd.msi_parent import vmd_msi_controller
from vmdsim.kernel.irq.msi_parent import MSI_DEFAULT_DOMAIN, msi_get_device_domain
from vmdsim.kernel.pci import device_release_driver
from vmdsim.kernel.pci.msi import pci_irq_vector
from vmdsim.kernel.rculist import list_entries
from vmdsim.sim.release import release_settings
from vmdsim.sim.workload import Load, run_load

ONE_VECTOR = small_topology(vectors=1, queues=2)  # a 201D with one vector, 2 CPUs


def test_a_child_irq_has_its_device_level_over_the_vmd_level():
    s = vmdsim.boot()
    k = s.k
    vmd = vmd_devices(k)[0]
    dev = nvme_core_of(k).devices[0]
    own = msi_get_device_domain(dev.pdev.dev, MSI_DEFAULT_DOMAIN)
    assert own.name == f"VMD-PCI-MSIX-{dev.pdev.dev.init_name}" and own.parent is vmd.irq_domain
    assert vmd.irq_domain.name == "VMD-MSI-65536" and vmd.irq_domain.parent is None
    mine = [pci_irq_vector(dev.pdev, j) for j in range(5)]
    for child in (c for c in vmd.children if c.virq in mine):
        top = k.irq.irq_get_irq_data(child.virq)
        assert top.domain is own and top.chip_data is None
        assert top.chip.irq_startup is not None and top.chip.irq_enable is not None
        low = top.parent_data
        assert low.domain is vmd.irq_domain and low.chip_data is child
        assert low.chip.name == vmd_msi_controller.name and low.parent_data is None
        assert low.hwirq == child.irq.virq  # the VMD vector's IRQ, as vmd_msi_alloc sets it
        assert child in list_entries(child.irq.irq_list)  # started: on its vector's list
        assert k.irq.irq_to_desc(child.virq).handle_irq.__name__ == "handle_untracked_irq"


def test_free_irq_takes_a_child_off_its_list_and_unbinding_leaves_nothing():
    s = vmdsim.boot()
    k = s.k
    vmd = vmd_devices(k)[0]
    dev = nvme_core_of(k).devices[0]
    mine = [c for c in vmd.children if c.virq in
            [pci_irq_vector(dev.pdev, j) for j in range(5)]]
    lists = {id(c.irq): c.irq for c in mine}
    pdev = dev.pdev
    k.run_on(0, device_release_driver, pdev)
    assert msi_get_device_domain(pdev.dev, MSI_DEFAULT_DOMAIN) is None
    for irqs in lists.values():
        assert not any(c in mine for c in list_entries(irqs.irq_list))
    live = k.mem.leaks("vmd") + k.mem.leaks("irq")
    assert not any(o is c for o in live for c in mine)  # every vmd_irq freed
    assert not any(getattr(o, "dev", None) is pdev.dev for o in live)  # its domain too
    out = run_load(s, Load(rate=500.0, duration_ms=2.0))  # the other drives carry on
    assert out.lost == 0


def test_since_v6_17_the_vmd_no_longer_cuts_a_childs_vector_count():
    with release_settings(msi_domain="legacy"):
        legacy = vmdsim.boot(vmdsim.topology.parse(ONE_VECTOR, "one.toml"))
    today = vmdsim.boot(vmdsim.topology.parse(ONE_VECTOR, "one.toml"))
    for s, n in ((legacy, 1), (today, 3)):  # vmd_msi_prepare returned msix_count (1)
        dev = nvme_core_of(s.k).devices[0]
        assert len([c for c in vmd_devices(s.k)[0].children
                    if c.virq in [pci_irq_vector(dev.pdev, j) for j in range(3)]]) == n
        assert run_load(s, Load(rate=500.0, duration_ms=2.0)).lost == 0
