"""Per-device MSI domains on an MSI parent (v6.2+, ``kernel/irq/msi_parent.py``) against
x86's global PCI-MSI domain of v4.x-v6.1, on a machine without a VMD."""

from __future__ import annotations

import pytest
from irq_testbed import msix_machine, release_devres

from vmdsim.kernel.irq.msi_parent import (
    MSI_DEFAULT_DOMAIN,
    irq_domain_is_msi_device,
    irq_domain_is_msi_parent,
    msi_get_device_domain,
)
from vmdsim.kernel.pci.msi import (
    PCI_IRQ_MSI,
    PCI_IRQ_MSIX,
    pci_alloc_irq_vectors,
    pci_free_irq_vectors,
    pci_irq_vector,
)


def _alloc(w, n, flags=PCI_IRQ_MSIX):
    return w.k.run_on(0, pci_alloc_irq_vectors, w.dev, 1, n, flags)


def test_a_device_gets_its_own_domain_named_after_it_on_the_vector_domain():
    w = msix_machine(ncpus=2)
    k = w.k
    assert irq_domain_is_msi_parent(k.irq.x86_vector_domain)
    assert k.irq.x86_pci_msi_default_domain is k.irq.x86_vector_domain
    assert _alloc(w, 4) == 4
    own = msi_get_device_domain(w.dev.dev, MSI_DEFAULT_DOMAIN)
    assert irq_domain_is_msi_device(own) and own.parent is k.irq.x86_vector_domain
    assert own.name == "PCI-MSIX-0000:00:03.0" and own.dev is w.dev.dev
    for i in range(4):
        d = k.irq.irq_get_irq_data(pci_irq_vector(w.dev, i))
        assert d.domain is own and d.hwirq == i  # the vector's index, not a global id
        assert d.chip.name == "PCI-MSIX-0000:00:03.0"
        assert d.chip.irq_startup is not None  # v6.18's template (54f45a30c0d0)
        assert d.parent_data.domain is k.irq.x86_vector_domain
    assert "PCI-MSIX-0000:00:03.0" in [dm.name for dm in k.irq.irq_domain_list]


def test_the_domain_outlives_free_and_goes_with_the_devices_devres():
    w = msix_machine(ncpus=2)
    k = w.k
    _alloc(w, 2)
    own = msi_get_device_domain(w.dev.dev, MSI_DEFAULT_DOMAIN)
    k.run_on(0, pci_free_irq_vectors, w.dev)
    assert msi_get_device_domain(w.dev.dev, MSI_DEFAULT_DOMAIN) is own and own.mapcount == 0
    _alloc(w, 2)  # allocated again from the same domain
    assert msi_get_device_domain(w.dev.dev, MSI_DEFAULT_DOMAIN) is own
    k.run_on(0, pci_free_irq_vectors, w.dev)
    release_devres(w)
    assert msi_get_device_domain(w.dev.dev, MSI_DEFAULT_DOMAIN) is None
    assert own not in k.irq.irq_domain_list
    assert k.mem.leaks("irq") == [] and k.irq.msi_dev_data == {}


def test_a_plain_msi_device_gets_a_pci_msi_device_domain():
    w = msix_machine(ncpus=2, msi=True)
    k = w.k
    assert _alloc(w, 1, PCI_IRQ_MSI) == 1
    own = msi_get_device_domain(w.dev.dev, MSI_DEFAULT_DOMAIN)
    assert own.name == "PCI-MSI-0000:00:03.0"
    k.run_on(0, pci_free_irq_vectors, w.dev)
    release_devres(w)
    assert k.mem.leaks("irq") == []


@pytest.mark.parametrize(("mode", "startup"), [("per-device", False),
                                               ("per-device-startup", True)])
def test_the_templates_have_irq_startup_from_v6_18_on(mode, startup):
    w = msix_machine(ncpus=2)
    w.k.irq.pci_msi_domains = mode  # before anything allocates: what the release built
    _alloc(w, 1)
    d = w.k.irq.irq_get_irq_data(pci_irq_vector(w.dev, 0))
    assert (d.chip.irq_startup is not None) is startup


def test_before_v6_2_every_device_shares_the_global_pci_msi_domain():
    w = msix_machine(ncpus=2)
    k = w.k
    k.irq.pci_msi_domains = "global"
    assert not irq_domain_is_msi_parent(k.irq.x86_vector_domain)
    glob = k.irq.x86_pci_msi_default_domain
    assert glob.name == "PCI-MSI" and glob.parent is k.irq.x86_vector_domain
    _alloc(w, 2)
    assert msi_get_device_domain(w.dev.dev, MSI_DEFAULT_DOMAIN) is None
    d = k.irq.irq_get_irq_data(pci_irq_vector(w.dev, 1))
    # pci_msi_domain_calc_hwirq: index | bus:devfn << 11 | domain << 27
    assert d.domain is glob and d.hwirq == 1 | (3 << 3) << 11
    assert d.chip.name == "PCI-MSI"
    k.run_on(0, pci_free_irq_vectors, w.dev)
    assert k.mem.leaks("irq") == [] and k.irq.msi_dev_data == {}


def test_the_scheme_cannot_change_once_a_device_has_vectors():
    w = msix_machine(ncpus=2)
    _alloc(w, 1)
    with pytest.raises(ValueError, match="before any device allocates vectors"):
        w.k.irq.pci_msi_domains = "global"
    with pytest.raises(ValueError, match="one of per-device-startup, per-device, global"):
        w.k.irq.pci_msi_domains = "v6.1"
