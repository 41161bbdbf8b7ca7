"""ASPM on a link, as a driver asks for it (the VMD's BIOS power-management quirk)."""

from __future__ import annotations

from pci_testbed import TestEndpoint, machine, new_kernel, root_port

from vmdsim.hw.fabric import RootComplex
from vmdsim.hw.regs import PCI_EXP_LNKCTL
from vmdsim.kernel.boot import boot
from vmdsim.kernel.errno import EINVAL
from vmdsim.kernel.pci import pcie_capability_read_word
from vmdsim.kernel.pci.aspm import (
    PCIE_LINK_STATE_ALL,
    PCIE_LINK_STATE_L1,
    pci_enable_link_state,
    pci_enable_link_state_locked,
)


def aspmc(dev):
    return pcie_capability_read_word(dev, PCI_EXP_LNKCTL)[1] & 0x3


def booted(ep_l0s=True):
    rc = RootComplex()
    rc.root_bus.attach(root_port(rc, "rp"), 0x1C).secondary.attach(
        TestEndpoint("nvme", aspm_l0s=ep_l0s))
    k = new_kernel()
    boot(k, machine(rc))
    return k.pci.pci_get_domain_bus_and_slot(0, 0, 0x1C << 3), \
        k.pci.pci_get_domain_bus_and_slot(0, 1, 0)


def test_enabling_all_states_on_a_drive_sets_both_ends_of_its_link():
    rp, nvme = booted()
    assert aspmc(rp) == aspmc(nvme) == 0  # firmware left ASPM off
    assert pci_enable_link_state_locked(nvme, PCIE_LINK_STATE_ALL) == 0
    assert aspmc(rp) == aspmc(nvme) == 0x3  # L0s and L1, both directions
    assert pci_enable_link_state(nvme, PCIE_LINK_STATE_L1) == 0  # the new default: L1 only
    assert aspmc(rp) == aspmc(nvme) == 0x2


def test_only_what_both_ends_support_is_enabled():
    rp, nvme = booted(ep_l0s=False)
    assert pci_enable_link_state_locked(nvme, PCIE_LINK_STATE_ALL) == 0
    assert aspmc(rp) == aspmc(nvme) == 0x2


def test_a_root_port_on_the_root_bus_has_no_link_above_it():
    rp, nvme = booted()
    assert pci_enable_link_state_locked(rp, PCIE_LINK_STATE_ALL) == -EINVAL
    assert aspmc(rp) == aspmc(nvme) == 0
