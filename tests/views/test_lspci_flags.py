"""lspci's other flags as pciutils prints them: -nn, -k, -x, -s, -d, and -t with names."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

import vmdsim
from vmdsim.cli import main
from vmdsim.views.lspci import LspciError, lspci

VMD = "0000:00:0e.0 RAID bus controller: Intel Corporation Volume Management Device NVMe RAID "


@pytest.fixture(scope="module")
def k():
    return vmdsim.boot().k


def test_nn_gives_class_and_ids_in_brackets(k):
    lines = lspci(k, numeric=2).splitlines()
    assert VMD + "Controller [8086:201d]" not in lines  # the class code comes first
    assert ("0000:00:0e.0 RAID bus controller [0104]: Intel Corporation Volume Management "
            "Device NVMe RAID Controller [8086:201d]") in lines


def test_k_names_the_driver_and_the_module_of_the_loadable_ones(k):
    out = lspci(k, kernel=True, slot="00:0e.0").splitlines()
    assert out == [VMD + "Controller", "\tKernel driver in use: vmd", "\tKernel modules: vmd"]
    port = lspci(k, kernel=True, slot="10000:00:00.0").splitlines()
    assert port[1:] == ["\tKernel driver in use: pcieport"]  # built in: no module line


def test_x_dumps_64_bytes_of_config_space_as_the_kernel_reads_it(k):
    out = lspci(k, hexdump_=1, slot="00:0e.0").splitlines()
    assert out[1].startswith("00: 86 80 1d 20 ")  # vendor 8086, device 201d, little-endian
    assert [line[:3] for line in out[1:5]] == ["00:", "10:", "20:", "30:"]
    assert len(lspci(k, hexdump_=3, slot="00:0e.0").splitlines()) == 1 + 16  # 256 bytes


def test_s_and_d_select_as_pciutils_does(k):
    behind = lspci(k, slot="10000::").splitlines()
    assert behind and all(line.startswith("10000:") for line in behind)
    drives = lspci(k, numeric=1, ids="8086:0a54").splitlines()
    assert drives and all(line.endswith("0108: 8086:0a54") for line in drives)
    assert lspci(k, ids="::0104").splitlines() == [VMD + "Controller"]
    assert lspci(k, slot="00:1f.7") == ""
    for bad, message in (({"slot": "10000:"}, "invalid bus number '10000'"),
                         ({"slot": "1:2:3:4"}, "too many ':'"),
                         ({"slot": "00:0e.9"}, "invalid function number '9'"),
                         ({"ids": "8086"}, "write [vendor]:[device][:class]"),
                         ({"ids": "zz:1"}, "invalid vendor ID 'zz'")):
        with pytest.raises(LspciError, match=message.replace("[", r"\[").replace("]", r"\]")):
            lspci(k, **bad)


def test_tree_names_leaves_not_bridges_and_only_under_v(k):
    plain = lspci(k, as_tree=True)
    assert "Intel" not in plain
    named = lspci(k, as_tree=True, verbose_=1, numeric=2).splitlines()
    vmd_tree = next(i for i, s in enumerate(named) if s.startswith("-[10000:00]"))
    assert named[vmd_tree].startswith("-[10000:00]-+-00.0-[01]----00.0  Intel Corporation NVMe")
    assert named[vmd_tree].endswith("[8086:0a54]")
    assert "Root Port" not in "\n".join(named)  # pciutils names no bridge in a tree
    ids = lspci(k, as_tree=True, verbose_=1, numeric=1).splitlines()
    assert ids[vmd_tree - 1].endswith("\\-0e.0  8086:201d")  # domain 0000 first


def test_the_command_takes_combined_flags_and_refuses_what_it_does_not_model():
    r = CliRunner().invoke(main, ["lspci", "-tvnn"])
    assert r.exit_code == 0 and "[8086:201d]" in r.output
    for args, message in ((["lspci", "-vv"], "-vv: the model prints -v's detail only"),
                          (["lspci", "-xxxxx"], "at most 4096 bytes"),
                          (["lspci", "-t", "-s", "00:"], "-t with -s or -d"),
                          (["lspci", "-q"], "No such option '-q'")):
        r = CliRunner().invoke(main, args)
        assert r.exit_code == 2 and message in r.output, (args, r.output)
