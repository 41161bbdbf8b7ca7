"""Topology files: the built-in default, and bad input reported as file:line: field: message."""

import pytest

from vmdsim.errors import TopologyError
from vmdsim.topology import load, parse


def test_default_topology():
    t = load()
    assert t.source == "<built-in default.toml>"
    assert (t.cpus, t.ram) == (4, 2 << 30)
    (vmd,) = t.vmds
    assert (vmd.name, vmd.device, vmd.devfn, vmd.msix_vectors) == ("vmd0", 0x201D, 0x70, 32)
    assert (vmd.cfgbar, vmd.membar1, vmd.membar2) == (32 << 20, 32 << 20, 1 << 20)
    assert [r.slot for r in vmd.root_ports] == [0, 1, 2, 3]
    assert [r.slot_number for r in vmd.root_ports] == [1, 2, 3, 4]
    assert all(r.hotplug and r.irq == "msi" for r in vmd.root_ports)
    assert [r.nvme.queues for r in vmd.root_ports] == [8] * 4
    assert [r.nvme.name for r in vmd.root_ports] == [f"vmd0.rp{i}.nvme" for i in range(4)]
    assert t.root_ports == []


def test_everything_spelled_out():
    t = parse("""
[machine]
cpus = 8
ram = "1G"

[[vmd]]
name = "vmd-a"
device = 0x28C0
slot = "05.5"
msix_vectors = 64
cfgbar = "64M"
membar1 = "64M"
membar2 = "2M"
bus_restriction = 1
vmlock = 2
host_phys = { membar1 = 0x3800_0000_0000, membar2 = 0x3800_0400_0000 }

[[vmd.root_port]]
name = "bay0"
slot = 0
slot_number = 100
hotplug = false
irq = "msix"
device = 0x2031

[vmd.root_port.nvme]
name = "ssd0"
queues = 16
msix_vectors = 8
vendor = 0x144D
device = 0xA808
ltr_max_snoop = 0x1003

[[root_port]]
slot = "1c.4"
""", "all.toml")
    v = t.vmds[0]
    assert (v.name, v.devfn, v.bus_restriction, v.vmlock) == ("vmd-a", 0x2D, 1, 2)
    assert v.host_phys == (0x3800_0000_0000, 0x3800_0400_0000)
    r = v.root_ports[0]
    assert (r.name, r.slot_number, r.hotplug, r.irq, r.device) == ("bay0", 100, False, "msix",
                                                                   0x2031)
    n = r.nvme
    assert (n.name, n.queues, n.msix_vectors, n.vendor, n.device, n.ltr_max_snoop) == (
        "ssd0", 16, 8, 0x144D, 0xA808, 0x1003)
    assert t.root_ports[0].slot == (0x1C << 3) | 4 and t.root_ports[0].name == "rp0"


def test_empty_slots_have_no_drive():
    t = parse("[[vmd]]\ndevice = 0x201D\n[[vmd.root_port]]\nslot = 0\n"
              "[[vmd.root_port]]\nslot = 1\nnvme = {}\n")
    assert t.vmds[0].root_ports[0].nvme is None
    assert t.vmds[0].root_ports[1].nvme.queues == 8


VMD = "[[vmd]]\ndevice = 0x201D\n"
RP = VMD + "[[vmd.root_port]]\nslot = 0\n"

BAD = [
    # (text, line, field, message fragment)
    ("[machine]\ncpus = 2\n[foo]\nx = 1\n", 3, "foo", "unknown field (valid: machine, "),
    ("cpus = 4\n", 1, "cpus", "unknown field"),
    ("[machine]\ncpus = 2\nram_size = 4\n", 3, "machine.ram_size", "valid: cpus, ram"),
    ("[machine]\ncpus = \"four\"\n", 2, "machine.cpus", "must be an integer, not a string"),
    ("[machine]\n\ncpus = 0\n", 3, "machine.cpus", "0 is outside 1..64"),
    ("[machine]\nram = \"lots\"\n", 2, "machine.ram", "is not a size"),
    ("[machine]\nram = \"4G\"\n", 2, "machine.ram", "outside"),
    ("[machine]\nram = true\n", 2, "machine.ram", "must be a size, not a boolean"),
    ("[[vmd]]\nslot = \"0e.0\"\n", 1, "vmd[0].device", "is required"),
    ("[[vmd]]\ndevice = 0x1234\n", 2, "vmd[0].device",
     "unknown VMD device ID 0x1234 (known: 0x201d, 0x28c0, 0x467f, 0x4c3d, 0x7d0b, 0x9a0b, "
     "0xa77f, 0xad0b, 0xb06f, 0xb07f, 0xb60b)"),
    ("[[vmd]]\ndevice = \"201D\"\n", 2, "vmd[0].device", "must be an integer"),
    ("[vmd]\ndevice = 0x201D\n", 1, "vmd", "must be an array of tables ([[vmd]])"),
    (VMD + "msix_vectors = 300\n", 3, "vmd[0].msix_vectors", "300 is outside 1..256"),
    (VMD + "msix_vectors = 3.5\n", 3, "vmd[0].msix_vectors", "not a float"),
    (VMD + "cfgbar = \"24M\"\n", 3, "vmd[0].cfgbar", "not a power of two"),
    (VMD + "cfgbar = \"512K\"\n", 3, "vmd[0].cfgbar", "outside"),
    (VMD + "slot = \"0e\"\n", 3, "vmd[0].slot", "is not a \"dev.fn\" slot"),
    (VMD + "slot = \"00.0\"\n", 3, "vmd[0].slot", "already taken"),
    (VMD + "bus_restriction = 1\n", 3, "vmd[0].bus_restriction", "device 0x201d has no bus"),
    ("[[vmd]]\ndevice = 0x28C0\nbus_restriction = 4\n", 3, "vmd[0].bus_restriction",
     "4 is outside 0..3"),
    (VMD + "vmlock = 2\n", 3, "vmd[0].vmlock", "MEMBAR2 shadow registers"),
    (VMD + "host_phys = { membar1 = 0x1000, membar2 = 0 }\n", 3, "vmd[0].host_phys.membar1",
     "not aligned to the BAR size 0x2000000"),
    (VMD + "host_phys = { membar1 = 0 }\n", 3, "vmd[0].host_phys.membar2", "is required"),
    (VMD + "host_phys = 5\n", 3, "vmd[0].host_phys", "must be a table"),
    (VMD + "colour = 1\n", 3, "vmd[0].colour", "unknown field"),
    (VMD + "cfgbar = \"1M\"\n[[vmd.root_port]]\nslot = 0\n", 3, "vmd[0].cfgbar",
     "1 bus(es) cannot hold"),
    (RP + "\n[[vmd.root_port]]\nslot = 1\nhotplug = \"yes\"\n", 8,
     "vmd[0].root_port[1].hotplug", "must be true or false, not a string"),
    (VMD + "[[vmd.root_port]]\nslot = 32\n", 4, "vmd[0].root_port[0].slot", "32 is outside 0..31"),
    (VMD + "[[vmd.root_port]]\nslot_number = 1\n", 3, "vmd[0].root_port[0].slot", "is required"),
    (RP + "[[vmd.root_port]]\nslot = 0\n", 6, "vmd[0].root_port[1].slot", "already taken"),
    (RP + "irq = \"intx\"\n", 5, "vmd[0].root_port[0].irq", "'intx' is not one of 'msi', 'msix'"),
    (RP + "slot_number = 9000\n", 5, "vmd[0].root_port[0].slot_number", "outside 0..8191"),
    (RP + "nvme = { queues = 8, colour = 1 }\n", 5, "vmd[0].root_port[0].nvme.colour",
     "unknown field (valid: device, ltr_max_snoop, msix_vectors, name, queues, revision, vendor)"),
    (RP + "nvme = { queues = 0 }\n", 5, "vmd[0].root_port[0].nvme.queues", "0 is outside 1..128"),
    (RP + "nvme = { ltr_max_snoop = 0x2000 }\n", 5, "vmd[0].root_port[0].nvme.ltr_max_snoop",
     "0x2000 is outside 0x0..0x1fff"),
    (RP + "nvme = 8\n", 5, "vmd[0].root_port[0].nvme", "must be a table"),
    (RP + "[vmd.root_port.nvme]\nqueues = 4\ncolor = 2\n", 7, "vmd[0].root_port[0].nvme.color",
     "unknown field"),
    (RP + "name = \"a b\"\n", 5, "vmd[0].root_port[0].name", "must be a name"),
    ("[[root_port]]\nslot = 3\n", 2, "root_port[0].slot", "3 is not a \"dev.fn\" slot"),
    ("[[root_port]]\nslot_number = 3\n", 1, "root_port[0].slot", "is required"),
    (VMD + "[[root_port]]\nslot = \"1c.0\"\nname = \"vmd0\"\n", 5, "root_port[0].name",
     "'vmd0' is already used"),
    ("[machine]\ncpus = = 2\n", 2, "syntax", "Invalid value"),
    ("[[vmd]]\ndevice = 0x201D\ndevice = 0x201D\n", 3, "syntax", "Cannot overwrite"),
]


@pytest.mark.parametrize("text, line, field, message", BAD, ids=[b[2] for b in BAD])
def test_malformed_input_names_file_line_and_field(text, line, field, message):
    with pytest.raises(TopologyError) as e:
        parse(text, "bad.toml")
    assert (e.value.file, e.value.line, e.value.field) == ("bad.toml", line, field), str(e.value)
    assert str(e.value).startswith(f"bad.toml:{line}: {field}: ")
    assert message in str(e.value)


def test_missing_file_is_an_error_naming_it(tmp_path):
    with pytest.raises(TopologyError, match=r"nope.toml: file: No such file"):
        load(tmp_path / "nope.toml")


def test_load_from_a_file(tmp_path):
    p = tmp_path / "one.toml"
    p.write_text("[[root_port]]\nslot = \"1c.0\"\nnvme = { queues = 2 }\n")
    t = load(p)
    assert t.source == str(p) and t.root_ports[0].nvme.queues == 2
