"""Link power management a driver can ask for (``drivers/pci/pcie/aspm.c``).

A PCI Express link joins a downstream port (root port or switch downstream
port) to the functions on its secondary bus. Active State Power Management
lets the link drop to L0s (each direction on its own) or L1 when idle; a
state may be enabled only if both ends support it (Link Capabilities ASPM
Support), and it is enabled by writing ASPM Control in Link Control of the
port and of every function below it: L1 on the upstream end first when
enabling, last when disabling; L0s "upstream" is the downstream component's
transmitter, L0s "downstream" the port's.

``pci_enable_link_state[_locked](pdev, state)`` does what the VMD driver's
BIOS power-management quirk needs: it takes ``state`` (``PCIE_LINK_STATE_*``)
as the link's new default and enables what both ends support, on the link
above ``pdev``; a device with no PCIe link above it (a root port on a root
bus) gets -EINVAL, as in Linux.

Simplifications: Linux keeps a ``pcie_link_state`` per link from scan time
on, with a policy (``pcie_aspm=``, sysfs) and exit-latency checks; the model
works the link out from config space when asked, with the default policy
(keep what firmware set until a driver asks) and no latency limits. No L1
PM substates and no clock PM (no device model has them), no ``aspm_lock``
(callers are probes, serialised already; ``pci_bus_sem`` is taken as in Linux),
and no -EPERM for platforms that deny the OS ASPM control.
"""

from __future__ import annotations

from typing import cast

from vmdsim.hw.regs import (
    PCI_EXP_LNKCAP,
    PCI_EXP_LNKCAP_ASPM_L0S,
    PCI_EXP_LNKCAP_ASPM_L1,
    PCI_EXP_LNKCTL,
    PCI_EXP_LNKCTL_ASPM_L0S,
    PCI_EXP_LNKCTL_ASPM_L1,
    PCI_EXP_LNKCTL_ASPMC,
)
from vmdsim.kernel.errno import EINVAL
from vmdsim.kernel.pci.access import (
    pcie_capability_clear_and_set_word,
    pcie_capability_read_dword,
    pcie_capability_read_word,
)
from vmdsim.kernel.pci.pci_h import (
    pci_bus,
    pci_dev,
    pci_is_pcie,
    pci_upstream_bridge,
    pcie_downstream_port,
)
from vmdsim.kernel.rwsem import down_read, up_read

# include/linux/pci.h
PCIE_LINK_STATE_L0S_UP = 1 << 0  # the downstream component's transmitter
PCIE_LINK_STATE_L0S_DW = 1 << 1  # the port's transmitter
PCIE_LINK_STATE_L0S = PCIE_LINK_STATE_L0S_UP | PCIE_LINK_STATE_L0S_DW
PCIE_LINK_STATE_L1 = 1 << 2
PCIE_LINK_STATE_L1_1 = 1 << 3
PCIE_LINK_STATE_L1_2 = 1 << 4
PCIE_LINK_STATE_L1_1_PCIPM = 1 << 5
PCIE_LINK_STATE_L1_2_PCIPM = 1 << 6
PCIE_LINK_STATE_L1SS = (PCIE_LINK_STATE_L1_1 | PCIE_LINK_STATE_L1_2
                        | PCIE_LINK_STATE_L1_1_PCIPM | PCIE_LINK_STATE_L1_2_PCIPM)
PCIE_LINK_STATE_ASPM_ALL = PCIE_LINK_STATE_L0S | PCIE_LINK_STATE_L1 | PCIE_LINK_STATE_L1SS
PCIE_LINK_STATE_CLKPM = 1 << 7
PCIE_LINK_STATE_ALL = PCIE_LINK_STATE_ASPM_ALL | PCIE_LINK_STATE_CLKPM


def pcie_aspm_get_link(pdev: pci_dev) -> pci_dev | None:
    """The downstream port whose link ``pdev`` sits on; None if there is no such link."""
    if not pci_is_pcie(pdev):
        return None
    port = pci_upstream_bridge(pdev)
    if port is None or not pci_is_pcie(port) or not pcie_downstream_port(port):
        return None
    if port.subordinate is None or not port.subordinate.devices:
        return None
    return port


def pcie_aspm_support(port: pci_dev) -> int:
    """The ASPM states both ends of ``port``'s link support (``pcie_aspm_cap_init``: the
    port and function 0 below it)."""
    child = cast(pci_bus, port.subordinate).devices[0]
    _, parent_cap = pcie_capability_read_dword(port, PCI_EXP_LNKCAP)
    _, child_cap = pcie_capability_read_dword(child, PCI_EXP_LNKCAP)
    support = 0
    if parent_cap & child_cap & PCI_EXP_LNKCAP_ASPM_L0S:
        support |= PCIE_LINK_STATE_L0S
    if parent_cap & child_cap & PCI_EXP_LNKCAP_ASPM_L1:
        support |= PCIE_LINK_STATE_L1
    return support


def pcie_aspm_enabled_state(port: pci_dev) -> int:
    """What Link Control says is enabled on ``port``'s link."""
    child = cast(pci_bus, port.subordinate).devices[0]
    _, parent_ctl = pcie_capability_read_word(port, PCI_EXP_LNKCTL)
    _, child_ctl = pcie_capability_read_word(child, PCI_EXP_LNKCTL)
    state = 0
    if child_ctl & PCI_EXP_LNKCTL_ASPM_L0S:
        state |= PCIE_LINK_STATE_L0S_UP
    if parent_ctl & PCI_EXP_LNKCTL_ASPM_L0S:
        state |= PCIE_LINK_STATE_L0S_DW
    if parent_ctl & child_ctl & PCI_EXP_LNKCTL_ASPM_L1:
        state |= PCIE_LINK_STATE_L1
    return state


def pcie_config_aspm_dev(pdev: pci_dev, val: int) -> None:
    pcie_capability_clear_and_set_word(pdev, PCI_EXP_LNKCTL, PCI_EXP_LNKCTL_ASPMC, val)


def pcie_config_aspm_link(port: pci_dev, state: int) -> None:
    """Enable exactly ``state`` (limited to what both ends support) on ``port``'s link."""
    state &= pcie_aspm_support(port)
    if pcie_aspm_enabled_state(port) == state:
        return
    upstream = dwstream = 0
    if state & PCIE_LINK_STATE_L0S_UP:
        dwstream |= PCI_EXP_LNKCTL_ASPM_L0S
    if state & PCIE_LINK_STATE_L0S_DW:
        upstream |= PCI_EXP_LNKCTL_ASPM_L0S
    if state & PCIE_LINK_STATE_L1:
        upstream |= PCI_EXP_LNKCTL_ASPM_L1
        dwstream |= PCI_EXP_LNKCTL_ASPM_L1
    # L1: the upstream component first when enabling, last when disabling, as the spec
    # asks (it says nothing about L0s).
    if state & PCIE_LINK_STATE_L1:
        pcie_config_aspm_dev(port, upstream)
    for child in list(cast(pci_bus, port.subordinate).devices):
        pcie_config_aspm_dev(child, dwstream)
    if not state & PCIE_LINK_STATE_L1:
        pcie_config_aspm_dev(port, upstream)


def pci_calc_aspm_enable_mask(state: int) -> int:
    """L1 PM substates need L1; the model keeps only L0s and L1."""
    if state & PCIE_LINK_STATE_L1SS:
        state |= PCIE_LINK_STATE_L1
    return state & (PCIE_LINK_STATE_L0S | PCIE_LINK_STATE_L1)


def __pci_enable_link_state(pdev: pci_dev, state: int, locked: bool) -> int:
    port = pcie_aspm_get_link(pdev)
    if port is None:
        return -EINVAL
    sem = pdev.k.pci.pci_bus_sem
    if not locked:
        down_read(sem)
    try:
        pcie_config_aspm_link(port, pci_calc_aspm_enable_mask(state))
    finally:
        if not locked:
            up_read(sem)
    return 0


def pci_enable_link_state(pdev: pci_dev, state: int) -> int:
    """Enable the ``PCIE_LINK_STATE_*`` states in ``state`` on the link above ``pdev``
    (those both ends support); 0, or -EINVAL when there is no such link. Takes
    ``pci_bus_sem`` for reading."""
    return __pci_enable_link_state(pdev, state, False)


def pci_enable_link_state_locked(pdev: pci_dev, state: int) -> int:
    """``pci_enable_link_state`` for a caller that holds ``pci_bus_sem`` already (a
    ``pci_walk_bus`` callback: taking it again could deadlock behind a waiting writer)."""
    return __pci_enable_link_state(pdev, state, True)
