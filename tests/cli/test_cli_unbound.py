"""A machine boots as declared or says what did not: every declared device is bound to its
driver, or ``validate`` refuses the file at the device's line (exit 2), ``run`` and
``balance`` name each device on stderr and exit 1 unless ``--allow-unbound``, and the views
(``lspci``, ``dmesg``, ``interrupts``) name them on stderr."""

from __future__ import annotations

import pytest
from clirig import invoke

VMD_AT_FUNCTION_5 = """[machine]
cpus = 2

[[vmd]]
device = 0x201D
slot = "05.5"

[[vmd.root_port]]
slot = 0
nvme = { queues = 2 }
"""

CLIENT_ONE_VECTOR = """[machine]
cpus = 2

[[vmd]]
device = 0x467F
msix_vectors = 1

[[vmd.root_port]]
slot = 6
nvme = { queues = 2 }
"""

RESERVED_BUS_RESTRICTION = CLIENT_ONE_VECTOR.replace("msix_vectors = 1", "bus_restriction = 3")

MEMBAR1_TOO_SMALL = """[machine]
cpus = 2

[[vmd]]
device = 0x201D
membar1 = "2M"
membar2 = "1M"
""" + "".join(f"""
[[vmd.root_port]]
slot = {i}
nvme = {{ queues = 1 }}
""" for i in range(3))


def write(tmp_path, text):
    f = tmp_path / "machine.toml"
    f.write_text(text)
    return str(f)


@pytest.mark.parametrize("text, line, field, why", [
    (VMD_AT_FUNCTION_5, 4, "vmd[0]", "function 0 of its slot (05.0) is absent"),
    (CLIENT_ONE_VECTOR, 4, "vmd[0]", "probe with driver vmd failed with error -34"),
    (RESERVED_BUS_RESTRICTION, 4, "vmd[0]", "Unknown Bus Offset Setting (3)"),
    (MEMBAR1_TOO_SMALL, 15, "vmd[0].root_port[1].nvme", "can't assign; no space"),
])
def test_validate_boots_once_and_refuses_what_would_not_bind(tmp_path, text, line, field, why):
    f = write(tmp_path, text)
    r = invoke("topology", "validate", f)
    assert r.exit_code == 2, r.output
    first = r.stderr.splitlines()[0]
    assert first.startswith(f"vmdsim: error: {f}:{line}: {field}: ") and why in first
    assert "declared device(s) would not come up bound" in r.stderr.splitlines()[-1]


def test_run_names_every_unbound_device_and_fails_unless_allowed(tmp_path):
    f = write(tmp_path, VMD_AT_FUNCTION_5)
    r = invoke("run", f, "--duration", "1")
    assert r.exit_code == 1 and r.stdout == ""
    warnings = [x for x in r.stderr.splitlines() if x.startswith("vmdsim: warning: ")]
    assert [w.split()[2] for w in warnings] == ["vmd0", "vmd0.rp0", "vmd0.rp0.nvme"]
    assert "behind vmd0, which is not bound to vmd" in warnings[2]
    r = invoke("run", f, "--duration", "1", "--allow-unbound")
    assert r.exit_code == 0 and "lost interrupts 0" in r.stdout
    assert len([x for x in r.stderr.splitlines() if ") is not bound to " in x]) == 3
    assert "no completion was posted" in r.stderr  # no drive bound: an empty load, said
    r = invoke("balance", f, "--duration", "1", "--policy", "modulo")
    assert r.exit_code == 1 and "--allow-unbound" in r.stderr


@pytest.mark.parametrize("view", [["lspci", "-t"], ["dmesg"], ["interrupts"]])
def test_views_say_on_stderr_what_did_not_bind(tmp_path, view):
    f = write(tmp_path, MEMBAR1_TOO_SMALL)
    r = invoke(*view, f)
    assert r.exit_code == 0
    assert [x.split()[2] for x in r.stderr.splitlines()] == ["vmd0.rp1.nvme", "vmd0.rp2.nvme"]


def test_every_shipped_topology_boots_with_every_device_bound():
    from clirig import EXAMPLES, path

    for name in EXAMPLES:
        r = invoke("topology", "validate", path(name))
        assert r.exit_code == 0 and r.stderr == "", (name, r.stderr)
