"""`vmdsim dmesg`: the boot log says why a VMD bound, or did not."""

from __future__ import annotations

from click.testing import CliRunner

from vmdsim.cli import main


def test_dmesg_shows_the_vmd_domain_and_the_drives_binding():
    r = CliRunner().invoke(main, ["dmesg"])
    assert r.exit_code == 0, r.output
    assert "pci 0000:00:0e.0: Bound to PCI domain 10000" in r.output
    assert "pci 10000:01:00.0: bound to driver nvme" in r.output
    assert r.output.rstrip().endswith("PCI: boot complete")


def test_dmesg_says_why_a_vmd_with_an_invalid_bus_restriction_did_not_bind(tmp_path):
    p = tmp_path / "bad-restriction.toml"
    p.write_text("[[vmd]]\ndevice = 0x28C0\nbus_restriction = 3\n"
                 "[[vmd.root_port]]\nslot = 0\nnvme = {}\n")
    r = CliRunner().invoke(main, ["dmesg", str(p)])
    assert r.exit_code == 0, r.output
    assert "Bound to PCI domain" not in r.output
    assert "pci 0000:00:0e.0: Unknown Bus Offset Setting (3)" in r.output  # Linux's words
    assert "pci 0000:00:0e.0: vmd: probe rejects match -19" in r.output
