"""The kernel log: one ring of records with levels, which dmesg reads."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from vmdsim.cli import main
from vmdsim.kernel.core import Kernel
from vmdsim.kernel.printk import (
    KERN_EMERG,
    KERN_ERR,
    KERN_INFO,
    KERN_WARNING,
    dmesg,
    parse_levels,
    pr_err,
    pr_info,
    printk,
    printk_ringbuffer,
)


def test_every_subsystem_prints_into_one_log_in_order_with_its_level():
    k = Kernel(2)
    pr_info(k, "PCI: first")
    pr_err(k, "irq 5: nobody cared")
    printk(k, KERN_EMERG, "Disabling IRQ #5")
    assert dmesg(k) == ["PCI: first", "irq 5: nobody cared", "Disabling IRQ #5"]
    assert [r.level for r in k.log.records] == [KERN_INFO, KERN_ERR, KERN_EMERG]
    assert [r.seq for r in k.log.records] == [0, 1, 2]
    assert dmesg(k, {KERN_ERR, KERN_EMERG}) == ["irq 5: nobody cared", "Disabling IRQ #5"]


def test_the_ring_drops_the_oldest_and_counts_them():
    log = printk_ringbuffer(size=3)
    for i in range(5):
        log.emit(KERN_INFO, f"line {i}")
    assert log.lines() == ["line 2", "line 3", "line 4"] and log.dropped == 2


def test_a_message_of_several_lines_is_several_records_and_a_bad_level_is_refused():
    log = printk_ringbuffer()
    log.emit(KERN_WARNING, "one\ntwo")
    assert log.lines() == ["one", "two"]
    with pytest.raises(ValueError, match="level 9"):
        log.emit(9, "x")


def test_level_names_are_dmesg_s():
    assert parse_levels("err,warn") == {KERN_ERR, KERN_WARNING}
    with pytest.raises(ValueError, match="unknown level 'warning'"):
        parse_levels("warning")


def test_the_pci_core_logs_at_its_levels_and_dmesg_level_selects_them(tmp_path):
    p = tmp_path / "bad-restriction.toml"
    p.write_text("[[vmd]]\ndevice = 0x28C0\nbus_restriction = 3\n"
                 "[[vmd.root_port]]\nslot = 0\nnvme = {}\n")
    errors = CliRunner().invoke(main, ["dmesg", "--level", "err", str(p)])
    assert errors.exit_code == 0, errors.output
    # pci_err in vmd_get_bus_number_start; the driver core's probe line is a warning
    assert errors.stdout.splitlines() == ["vmd 0000:00:0e.0: Unknown Bus Offset Setting (3)"]
    everything = CliRunner().invoke(main, ["dmesg", str(p)]).stdout.splitlines()
    assert len(everything) > 10 and errors.stdout.splitlines()[0] in everything
    bad = CliRunner().invoke(main, ["dmesg", "--level", "loud"])
    assert bad.exit_code == 2 and "--level loud: unknown level 'loud'" in bad.output
