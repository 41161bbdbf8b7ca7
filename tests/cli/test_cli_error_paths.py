"""What a person gets wrong, through the real entry point: one line on stderr saying what and
where (for topologies ``file:line: field``), valid names listed, exit status 2, no traceback."""

from __future__ import annotations

import pytest
from clirig import DURATION, invoke, path

POLICIES = "least-loaded, modulo, affinity, rebalance"
PROTOCOLS = "srcu, rfc-v3, kfree-rcu, synchronize-rcu, spinlock"


def error_line(r) -> str:
    """The one error line of a failed command; no traceback, nothing on stdout."""
    assert r.exit_code == 2, (r.output, r.exception)
    assert isinstance(r.exception, SystemExit), r.exception
    assert "Traceback" not in r.output
    assert r.stdout == ""
    lines = r.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("vmdsim: error: "), r.stderr
    return lines[0].removeprefix("vmdsim: error: ")


@pytest.mark.parametrize("args", [
    ("run", "--policy", "nope", "--duration", DURATION),
    ("interrupts", "--policy", "nope"),
    ("balance", "--policy", "least-loaded,nope", "--duration", DURATION),
])
def test_an_unknown_policy_lists_the_valid_ones(args):
    assert error_line(invoke(*args)) == f"vmd: unknown policy 'nope'; valid policies: {POLICIES}"


def test_an_unknown_protocol_lists_the_valid_ones():
    r = invoke("run", path("client"), "--protocol", "nope", "--duration", DURATION)
    assert error_line(r) == f"vmd: unknown protocol 'nope'; valid protocols: {PROTOCOLS}"


def test_balance_needs_at_least_one_policy():
    assert error_line(invoke("balance", "--policy", " , ")) == \
        "--policy: name at least one policy"


def test_a_hotplug_act_on_a_slot_the_machine_lacks_lists_its_slots():
    r = invoke("run", path("two-vmds"), "--hotplug", "1:remove:vmd2.rp0")
    assert error_line(r) == ("no root port 'vmd2.rp0'; the machine has: vmd0.rp0, vmd0.rp1, "
                             "vmd1.rp0, vmd1.rp1")
    r = invoke("balance", path("client"), "--hotplug", "1:remove:rp0", "--policy", "modulo")
    assert error_line(r) == "no root port 'rp0'; the machine has: vmd0.rp0"


def test_a_malformed_hotplug_script_says_how_to_write_it():
    r = invoke("run", "--hotplug", "5:pull:vmd0.rp1")
    assert error_line(r) == ("hotplug event 1 ('5:pull:vmd0.rp1'): write it as MS:remove:SLOT "
                             "or MS:insert:SLOT, e.g. 5:remove:vmd0.rp1")


def test_hotplug_on_an_example_loses_nothing():
    # (the client example's M.2 slot is declared without hot-plug: the default's have it)
    r = invoke("run", path("default"), "--duration", "10", "--hotplug",
               "3:remove:vmd0.rp0,6:insert:vmd0.rp0")
    assert r.exit_code == 0, r.output
    assert r.stdout.splitlines()[-1] == "lost interrupts 0"
    r = invoke("run", path("client"), "--duration", "10", "--hotplug", "3:remove:vmd0.rp0")
    assert r.exit_code == 2 and "declared hotplug = false" in r.stderr


# -- bad topologies -------------------------------------------------------------------------
BAD = {
    # two VMDs left on the default slot 0e.0
    "same-slot": ("[[vmd]]\ndevice = 0x201D\n\n[[vmd]]\ndevice = 0x201D\n",
                  4, "vmd[1].slot", "0e.0 is already taken"),
    # a bus restriction on a part that has none
    "restriction": ("[machine]\ncpus = 2\n\n[[vmd]]\ndevice = 0x201D\nbus_restriction = 2\n",
                    6, "vmd[0].bus_restriction",
                    "device 0x201d has no bus restriction (VMCAP bit 0 is 0); only 0 is "
                    "possible"),
    "unknown-key": ("[[vmd]]\ndevice = 0x467F\n\n[[vmd.root_port]]\nslot = 6\nqueues = 4\n",
                    6, "vmd[0].root_port[0].queues",
                    "unknown field (valid: device, hotplug, irq, name, nvme, revision, slot, "
                    "slot_number)"),
    "unknown-device": ("[[vmd]]\ndevice = 0x1234\n", 2, "vmd[0].device",
                       "unknown VMD device ID 0x1234 (known: 0x201d, 0x28c0, 0x467f, 0x4c3d, "
                       "0x7d0b, 0x9a0b, 0xa77f, 0xad0b, 0xb06f, 0xb07f, 0xb60b)"),
    "syntax": ("[machine]\ncpus = 4\nram = \n", 3, "syntax", None),
    "too-many-ports": ("[[vmd]]\ndevice = 0x201D\ncfgbar = \"1M\"\n[[vmd.root_port]]\n"
                       "slot = 0\n", 3, "vmd[0].cfgbar",
                       "1 bus(es) cannot hold the root bus and a bus below each of the 1 root "
                       "port(s)"),
}
COMMANDS = [("run", "--duration", DURATION), ("run", "--json"), ("lspci",), ("lspci", "-t"),
            ("interrupts",), ("balance", "--duration", DURATION), ("topology", "validate"),
            ("topology", "show")]


@pytest.mark.parametrize("case", list(BAD))
@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: " ".join(c))
def test_a_bad_topology_is_file_line_field_and_exit_2_for_every_command(case, command,
                                                                        tmp_path):
    text, line, field, what = BAD[case]
    p = tmp_path / f"{case}.toml"
    p.write_text(text)
    args = [*command[:2], str(p), *command[2:]] if command[0] == "topology" else \
        [command[0], str(p), *command[1:]]
    msg = error_line(invoke(*args))
    assert msg.startswith(f"{p}:{line}: {field}: "), msg
    if what is not None:
        assert msg == f"{p}:{line}: {field}: {what}"


def test_a_missing_topology_file_is_an_error_not_a_traceback(tmp_path):
    p = tmp_path / "nope.toml"
    assert error_line(invoke("lspci", str(p))) == f"{p}: file: No such file or directory"
