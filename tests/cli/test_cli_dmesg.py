"""`vmdsim dmesg`: the boot log says why a VMD bound, or did not."""

from __future__ import annotations

from click.testing import CliRunner

from vmdsim.cli import main


def test_dmesg_shows_the_vmd_domain_and_the_drives_binding():
    r = CliRunner().invoke(main, ["dmesg"])
    assert r.exit_code == 0, r.output
    lines = r.output.splitlines()
    # a bound device's lines carry its driver's name, as dev_info prints them
    host = lines.index("vmd 0000:00:0e.0: PCI host bridge to bus 10000:00")
    first_drive = lines.index("nvme nvme0: pci function 10000:01:00.0")
    assert host < first_drive < lines.index("nvme nvme0: 4/0/0 default/read/poll queues")
    assert "pcieport 10000:00:00.0: AER: enabled with IRQ 56" in lines
    assert lines[-1] == "vmd 0000:00:0e.0: Bound to PCI domain 10000"  # the end of its probe
    # nothing Linux logs only at debug level (binding, unbinding) or not at all
    assert not any("bound to driver" in x or "boot complete" in x for x in lines)


def test_dmesg_says_why_a_vmd_with_an_invalid_bus_restriction_did_not_bind(tmp_path):
    p = tmp_path / "bad-restriction.toml"
    p.write_text("[[vmd]]\ndevice = 0x28C0\nbus_restriction = 3\n"
                 "[[vmd.root_port]]\nslot = 0\nnvme = {}\n")
    r = CliRunner().invoke(main, ["dmesg", str(p)])
    assert r.exit_code == 0, r.output
    assert "Bound to PCI domain" not in r.output
    assert "vmd 0000:00:0e.0: Unknown Bus Offset Setting (3)" in r.output  # Linux's words
    assert "rejects match" not in r.output  # -ENODEV: dev_dbg in Linux
