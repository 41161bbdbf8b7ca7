"""The ``vmdsim`` command, through click's CliRunner."""

from click.testing import CliRunner

from vmdsim.cli import main


def invoke(*args):
    return CliRunner().invoke(main, list(args))


def test_topology_show_draws_the_default_machine_as_two_trees():
    r = invoke("topology", "show")
    assert r.exit_code == 0, r.output
    out = r.output
    assert out.startswith("0000:00  primary domain")
    assert "+-00.0  8086:2020  Host bridge" in out
    assert "\\-0e.0  8086:201d  RAID bus controller" in out
    assert "VMD, 32 MSI-X vectors, MSI remapping on" in out
    assert "vmd0  hidden domain behind 0000:00:0e.0" in out
    assert "CFGBAR 32M at 0xc0000000 (buses 00-1f), MEMBAR1 32M at 0xc2000000" in out
    for i in range(4):
        assert f"-0{i}.0-[--]  8086:2030  PCI bridge" in out
        assert f"vmd{0}.rp{i}       root port, slot {i + 1}, hot-plug, MSI" in out
        assert f"vmd0.rp{i}.nvme  NVMe, 8 I/O queues, 9 MSI-X vectors" in out
    assert out.count("8086:0a54  Non-Volatile memory controller") == 4


def test_topology_show_a_file_with_an_empty_slot(tmp_path):
    p = tmp_path / "m.toml"
    p.write_text('[[vmd]]\ndevice = 0x28C0\n[[vmd.root_port]]\nslot = 0\nslot_number = 3\n'
                 '[[root_port]]\nslot = "1c.0"\nnvme = { queues = 2 }\n')
    r = invoke("topology", "show", str(p))
    assert r.exit_code == 0, r.output
    assert "8086:28c0" in r.output
    assert "\\- (empty slot 3)" in r.output
    assert "\\-1c.0-[--]  8086:2030  PCI bridge" in r.output
    assert "rp0.nvme     NVMe, 2 I/O queues, 3 MSI-X vectors" in r.output


def test_validate_prints_a_summary(tmp_path):
    p = tmp_path / "m.toml"
    p.write_text('[machine]\ncpus = 2\n[[vmd]]\ndevice = 0x201D\nmsix_vectors = 8\n'
                 '[[vmd.root_port]]\nslot = 0\nnvme = {}\n[[vmd.root_port]]\nslot = 1\n')
    r = invoke("topology", "validate", str(p))
    assert r.exit_code == 0, r.output
    assert r.output == (f"{p}: ok: 2 CPUs, 1 VMD(s), 2 root port(s) (1 empty slot(s)), "
                        "1 NVMe drive(s)\n  vmd0: device 0x201d, 8 MSI-X vectors, "
                        "2 root port(s)\n")


def test_validate_bad_input_exits_2_with_file_line_and_field(tmp_path):
    p = tmp_path / "bad.toml"
    p.write_text("[[vmd]]\ndevice = 0x201D\n\n[[vmd.root_port]]\nslot = 0\nqueues = 8\n")
    r = invoke("topology", "validate", str(p))
    assert r.exit_code == 2
    assert r.stdout == ""
    assert r.stderr == (f"vmdsim: error: {p}:6: vmd[0].root_port[0].queues: unknown field "
                        "(valid: device, hotplug, irq, name, nvme, revision, slot, slot_number)\n")


def test_unknown_vmd_device_lists_the_valid_ones(tmp_path):
    p = tmp_path / "bad.toml"
    p.write_text("[[vmd]]\ndevice = 0x1234\n")
    r = invoke("run", str(p))
    assert r.exit_code == 2
    assert f"{p}:2: vmd[0].device: unknown VMD device ID 0x1234 (known: 0x201d, 0x28c0" in r.stderr
    assert "Traceback" not in r.output


def test_missing_file_and_firmware_failure_are_errors_not_tracebacks(tmp_path):
    r = invoke("topology", "validate", str(tmp_path / "nope.toml"))
    assert r.exit_code == 2 and "nope.toml: file: No such file" in r.stderr
    p = tmp_path / "big.toml"
    p.write_text('[[vmd]]\ndevice = 0x201D\nmembar1 = "1G"\n')
    r = invoke("run", str(p))
    assert r.exit_code == 2
    assert f"{p}:3: vmd[0].membar1: vmd0: BAR2 (0x40000000 bytes) does not fit" in r.stderr


def test_topology_default_prints_a_file_that_validates(tmp_path):
    r = invoke("topology", "default")
    assert r.exit_code == 0 and "device = 0x201D" in r.output
    p = tmp_path / "d.toml"
    p.write_text(r.output)
    r = invoke("topology", "validate", str(p))
    assert r.exit_code == 0 and "4 NVMe drive(s)" in r.output
