"""The README's Python examples run as written, from the repository root."""

from __future__ import annotations

import os
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_every_python_block_of_the_readme_runs(capsys):
    blocks = re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text(), re.S)
    assert blocks, "the README shows the Python API"
    cwd = os.getcwd()
    os.chdir(ROOT)  # its paths are relative to the repository
    try:
        for code in blocks:
            exec(compile(code, "README.md", "exec"), {})
    finally:
        os.chdir(cwd)
    out = capsys.readouterr().out
    assert "CPU0" in out and "vmd0" in out  # /proc/interrupts was printed


def test_boot_registers_only_the_drivers_asked_for():
    import vmdsim
    from vmdsim.drivers.nvme import nvme_core_of

    only_vmd = vmdsim.boot(drivers=["vmd"])
    assert nvme_core_of(only_vmd.k).devices == []
    m = only_vmd.machine
    # each drive and root port is said unbound (no nvme, no pcieport), none hidden
    assert {u.device for u in only_vmd.unbound} == {d.name for d in m.nvmes + m.root_ports}
    full = vmdsim.boot()
    assert len(nvme_core_of(full.k).devices) == len(full.machine.nvmes) and not full.unbound
