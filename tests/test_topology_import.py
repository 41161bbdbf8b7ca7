"""``vmdsim topology import``: real machines' ``lspci -nn`` text in, a topology out that
boots to the same VMD side (three laptops of ``tests/data/real/``)."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

import vmdsim
from vmdsim.cli import main
from vmdsim.errors import TopologyError
from vmdsim.topology import parse
from vmdsim.topology_import import import_topology
from vmdsim.views.lspci import lspci, tree

REAL = Path(__file__).resolve().parent / "data" / "real"
SAMPLES = REAL / "samples"


def _text(path: Path) -> str:
    return path.read_text()


def _vmd_side(lines: list[str]) -> list[str]:
    return [s.strip().split(" (prog-if")[0] for s in lines
            if s.strip().startswith(("0000:00:0e.0 ", "10000:"))]


def _imported(name: str, cpus: int | None = None) -> tuple[str, vmdsim.System]:
    path = SAMPLES / name
    toml = import_topology([(str(path), _text(path))], cpus)
    system = vmdsim.boot(parse(toml, name))
    assert system.unbound == []
    return toml, system


@pytest.mark.parametrize("name", ["07_adl-dell-xps9320_lspci-vnn.txt",
                                  "04_tgl-asus-ux371_lspci-nn.txt",
                                  "05_tgl-asus-b7402fea_lspci-nnk.txt"])
def test_an_imported_laptop_lists_its_vmd_side_as_the_laptop_did(name):
    _, s = _imported(name)
    real = _vmd_side(_text(SAMPLES / name).splitlines())
    assert len(real) == 3 and _vmd_side(lspci(s.k, numeric=2).splitlines()) == real


def test_the_xps_9320_imported_from_lspci_vnn_is_the_hand_written_one_and_its_tree():
    toml, s = _imported("07_adl-dell-xps9320_lspci-vnn.txt", cpus=20)
    # what -v gives: the VMD's 19 vectors and region sizes, the port's bus, the drive's 33
    for line in ('device = 0x467F', 'slot = "0e.0"', "msix_vectors = 19", 'cfgbar = "32M"',
                 'membar1 = "32M"', 'membar2 = "1M"', "bus_restriction = 2", "slot = 6",
                 "device = 0x464D", "revision = 0x02", "cpus = 20",
                 "nvme = { vendor = 0x1C5C, device = 0x1959, msix_vectors = 33, queues = 32 }"):
        assert line in toml.splitlines(), line
    real = [s for s in _text(REAL / "xps-9320_lspci-tv.txt").splitlines()
            if s.startswith("-[10000:")]
    assert [s for s in tree(s.k, names=True).splitlines() if s.startswith("-[10000:")] == real


def test_what_was_guessed_and_dropped_is_listed_at_the_top():
    toml, _ = _imported("04_tgl-asus-ux371_lspci-nn.txt")
    head = toml.split("\n\n")[0]
    assert "machine.cpus = 4: lspci does not say how many CPUs" in head
    assert "msix_vectors = 32 (its MSI-X Count is in `lspci -v`)" in head
    assert "root port 10000:e0:1d.0: hotplug = false" in head
    assert "21 device(s) of domain 0000 besides the VMD(s)" in head


@pytest.mark.parametrize(("text", "message"), [
    ("0000:00:0e.0 RAID bus controller: Intel Corporation Volume Management Device\n",
     "x.txt:1: lspci: no numeric IDs: import reads `lspci -nn`"),
    ("-[0000:00]-+-00.0\n", "x.txt: lspci: no device lines of `lspci -nn` found"),
    ("0000:64:05.5 RAID bus controller [0104]: Intel Corporation Volume Management Device "
     "NVMe RAID Controller [8086:201d] (rev 04)\n",
     "x.txt:1: vmd: the VMD at 0000:64:05.5 is not on bus 0 of domain 0000"),
    ("0000:00:0e.0 RAID bus controller [0104]: Intel Corporation Volume Management Device "
     "NVMe RAID Controller [8086:201d]\n",
     "x.txt:1: vmd: the VMD at 0000:00:0e.0 would own domain 10000, of which the text shows"),
    ("0000:00:1f.0 ISA bridge [0601]: Intel Corporation Device [8086:a082]\n",
     "x.txt: vmd: no VMD in the text"),
])
def test_a_text_that_cannot_make_the_machine_is_refused_naming_the_line(text, message):
    with pytest.raises(TopologyError) as e:
        import_topology([("x.txt", text)])
    assert message in str(e.value)


def test_the_command_writes_the_toml_and_refuses_with_exit_2(tmp_path: Path):
    out = tmp_path / "ux371.toml"
    ux371 = str(SAMPLES / "04_tgl-asus-ux371_lspci-nn.txt")
    r = CliRunner().invoke(main, ["topology", "import", ux371, "--cpus", "8", "-o", str(out)])
    assert r.exit_code == 0, r.output
    assert "cpus = 8" in out.read_text()
    r = CliRunner().invoke(main, ["topology", "validate", str(out)])
    assert r.exit_code == 0, r.output
    r = CliRunner().invoke(main, ["topology", "import", str(tmp_path / "missing.txt")])
    assert r.exit_code == 2 and "cannot read it" in r.output and "Traceback" not in r.output
