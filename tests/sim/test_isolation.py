"""A VMD child's ordinary DMA write that lands on the VMD's own BARs — its MSI-X table, the
hidden domain's config space, a peer child's registers — changes nothing: the VMD sends it up
as its own write, and the root complex refuses a device addressing its own BARs (an
Unsupported Request, logged). Interrupts keep arriving on the VMD's own vectors."""

from __future__ import annotations

import vmdsim
from vmdsim.hw.fabric import ecam_offset
from vmdsim.hw.regs import PCI_COMMAND
from vmdsim.hw.vmd import VMD_MSIX_TABLE_OFFSET
from vmdsim.sim.accounting import account, snapshot
from vmdsim.sim.workload import Load, run_load

CFGBAR, MEMBAR1, MEMBAR2 = 0, 2, 4


def booted():
    s = vmdsim.boot()  # the built-in machine: one VMD, four drives
    vmd = s.machine.vmds[0]
    return s, vmd, s.machine.nvmes[0], s.machine.nvmes[1]


def own_bar_aborts(s) -> int:
    return sum(1 for kind, _ in s.machine.rc.aborts.recent if kind.endswith("own-bar"))


def test_a_child_write_to_the_vmds_msix_table_is_refused():
    s, vmd, child, _ = booted()
    table = vmd.bar_address(MEMBAR2) + VMD_MSIX_TABLE_OFFSET
    before = [(vmd.msix.addr[i], vmd.msix.data[i]) for i in range(vmd.msix.nvec)]
    for i in range(vmd.msix.nvec):
        assert not child.bus_master_write(table + 16 * i + 8, 4, 0xEF)  # data: vector 0xEF
    assert [(vmd.msix.addr[i], vmd.msix.data[i]) for i in range(vmd.msix.nvec)] == before
    assert own_bar_aborts(s) == vmd.msix.nvec
    start = snapshot(s)
    out = run_load(s, Load(duration_ms=2))
    assert out.accounting.lost == 0 and out.accounting.delivered == out.posted > 0
    account(s, start)


def test_a_child_write_into_the_cfgbar_is_no_config_write():
    s, vmd, child, peer = booted()
    command = vmd.bar_address(CFGBAR) + ecam_offset(peer.bus.number, peer.devfn, PCI_COMMAND)
    was = peer.cfg.read(PCI_COMMAND, 2)
    assert not child.bus_master_write(command, 2, 0)  # would turn the peer's decoding off
    assert peer.cfg.read(PCI_COMMAND, 2) == was and own_bar_aborts(s) == 1


def test_a_child_write_to_a_peers_msix_table_is_refused():
    s, vmd, child, peer = booted()
    entry = peer.bar_address(0) + 0x2000 + 16 * 1  # the peer's MSI-X entry 1, in MEMBAR1/2
    addr, data = peer.msix.addr[1], peer.msix.data[1]
    assert not child.bus_master_write(entry, 4, 0xFEE00000)
    assert not child.bus_master_write(entry + 8, 4, 0xEF)
    assert (peer.msix.addr[1], peer.msix.data[1]) == (addr, data)
    assert own_bar_aborts(s) == 2
