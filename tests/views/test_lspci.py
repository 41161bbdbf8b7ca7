"""lspci output from the kernel's view of a booted machine."""

from __future__ import annotations

import vmdsim
from vmdsim.hw.machine import Machine
from vmdsim.hw.regs import PCI_REVISION_ID
from vmdsim.topology import parse
from vmdsim.views.lspci import lspci

PRIMARY = """
[machine]
cpus = 2

[[root_port]]
slot = "1c.0"
slot_number = 1
nvme = { queues = 2 }

[[root_port]]
slot = "1d.0"
slot_number = 2
"""


def booted(text=None):
    return vmdsim.boot(parse(text, "test.toml") if text else None, drivers=[]).k


def test_default_machine_without_a_vmd_driver_shows_the_vmd_and_hides_its_domain():
    out = lspci(booted())
    assert out.splitlines() == [
        "0000:00:00.0 Host bridge: Intel Corporation Sky Lake-E DMI3 Registers",
        "0000:00:0e.0 RAID bus controller: Intel Corporation Volume Management Device NVMe "
        "RAID Controller",
    ]


def test_numeric_tree_and_verbose_on_a_primary_domain_with_ports():
    k = booted(PRIMARY)
    assert lspci(k, numeric=True).splitlines() == [
        "0000:00:00.0 0600: 8086:2020",
        "0000:00:1c.0 0604: 8086:2030",
        "0000:00:1d.0 0604: 8086:2030",
        "0000:01:00.0 0108: 8086:0a54",
    ]
    assert lspci(k, as_tree=True).splitlines() == [
        "-[0000:00]-+-00.0",
        "           +-1c.0-[01]----00.0",
        "           \\-1d.0-[02]--",
    ]
    v = lspci(k, verbose_=True)
    assert "0000:00:1c.0 PCI bridge: Intel Corporation Sky Lake-E PCI Express Root Port A" in v
    assert "\tBus: primary=00, secondary=01, subordinate=01" in v
    assert "\tCapabilities: [" in v and "] MSI-X" in v


def test_a_revision_is_printed_only_when_it_is_not_zero():
    # pciutils' show_device: `if (c = get_conf_byte(d, PCI_REVISION_ID)) printf(" (rev %02x)")`
    m = Machine.build(parse(PRIMARY, "test.toml"))
    m.nvmes[0].cfg.hw_write(PCI_REVISION_ID, 1, 0x02)  # what the part's silicon says
    k = vmdsim.boot(machine=m, drivers=[]).k
    lines = lspci(k, numeric=True).splitlines()
    assert "0000:01:00.0 0108: 8086:0a54 (rev 02)" in lines
    assert "0000:00:1c.0 0604: 8086:2030" in lines
