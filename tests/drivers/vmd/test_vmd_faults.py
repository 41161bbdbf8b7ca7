"""Allocation failure at every point of the VMD's probe (``k.mem.fail_nth``): each run either
binds (a failure the PCI core absorbs, such as a device missing from the scan) and then
unbinds cleanly, or fails and leaves the kernel exactly as before — no object, IRQ,
descriptor, PCI domain or MSI domain left, and the remap bit as firmware set it."""

from __future__ import annotations

import pytest
from test_vmd_probe import snapshot, vmconfig
from vmd_testbed import boot_vmd, machine_text, vmd_block

from vmdsim.drivers.vmd import vmd_devices, vmd_exit, vmd_init

MAX_RUNS = 3000

MACHINES = {
    "remap-201d": machine_text([vmd_block(0x201D, vectors=4, ports=2, queues=2)]),
    "bypass-28c0": machine_text([vmd_block(0x28C0, vectors=4, ports=2, queues=2,
                                           extra="vmlock = 2\n")]),
    "guest-28c0": machine_text([vmd_block(
        0x28C0, vectors=4, ports=2, queues=2,
        extra="vmlock = 2\nhost_phys = { membar1 = 0x3800000000, membar2 = 0xA0000000 }\n")]),
    "client-9a0b": machine_text([vmd_block(0x9A0B, vectors=4, ports=2, queues=2)]),
}


def walk(text: str, child: bool) -> tuple[int, set[str]]:
    outcomes: set[str] = set()
    for n in range(1, MAX_RUNS):
        w = boot_vmd(text, child=child, queues=3, load=False)
        k = w.k
        before, cfg = snapshot(k), vmconfig(w)
        k.mem.fail_nth(n)
        k.run_on(0, vmd_init, k)
        hit = k.mem.failed
        k.mem.fail_nth(None)
        if vmd_devices(k):
            outcomes.add("bound")
            k.run_on(0, vmd_exit, k)
        else:
            outcomes.add("probe failed")
        assert snapshot(k) == before, f"run {n}: something left behind"
        assert vmconfig(w) == cfg, f"run {n}: VMCONFIG changed"
        if not hit:
            return n - 1, outcomes
    raise AssertionError(f"still failing allocations after {MAX_RUNS} runs")


@pytest.mark.parametrize("name", list(MACHINES))
def test_a_probe_failing_anywhere_unwinds_completely(name):
    runs, outcomes = walk(MACHINES[name], child=False)
    assert runs > 20
    assert outcomes == {"bound", "probe failed"}


def test_with_child_drivers_binding_during_the_probe_too():
    runs, outcomes = walk(MACHINES["remap-201d"], child=True)
    assert outcomes == {"bound", "probe failed"}
