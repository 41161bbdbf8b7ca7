"""Loading the driver: module parameters, one load per kernel; and its power callbacks."""

from __future__ import annotations

import pytest
from vmd_testbed import (
    boot_vmd,
    bound_queues,
    fire_all,
    load_vmd,
    machine_text,
    vmd_block,
)

from vmdsim.drivers.vmd import (
    POLICIES,
    PROTOCOLS,
    VmdParamError,
    vmd_devices,
    vmd_exit,
    vmd_init,
    vmd_module_of,
    vmd_show_interrupts,
)
from vmdsim.kernel.pci import device_shutdown, dpm_resume, dpm_suspend, pci_read_config_word


def test_unknown_names_are_refused_with_the_valid_ones_listed():
    w = boot_vmd(None, child=False, load=False)
    with pytest.raises(VmdParamError, match=r"unknown protocol 'rcu'; valid protocols: "
                                            r"srcu, rfc-v3, kfree-rcu"):
        vmd_init(w.k, protocol="rcu")
    with pytest.raises(VmdParamError, match=r"unknown policy 'fair'; valid policies: "
                                            r"least-loaded, modulo, affinity, rebalance"):
        vmd_init(w.k, policy="fair")
    assert vmd_module_of(w.k) is None
    assert list(PROTOCOLS) == ["srcu", "rfc-v3", "kfree-rcu", "synchronize-rcu", "spinlock"]
    assert list(POLICIES) == ["least-loaded", "modulo", "affinity", "rebalance"]


def test_defaults_per_instance_lists_and_a_single_load():
    text = machine_text([vmd_block(slot="0e.0"), vmd_block(slot="0f.0"),
                         vmd_block(slot="10.0")])
    w = boot_vmd(text, child=False, protocol="rfc-v3,kfree-rcu", policy=["modulo"])
    got = [(v.name, v.protocol.name, v.policy.name) for v in vmd_devices(w.k)]
    assert got == [("vmd0", "rfc-v3", "modulo"), ("vmd1", "kfree-rcu", "least-loaded"),
                   ("vmd2", "srcu", "least-loaded")]
    with pytest.raises(VmdParamError, match="already loaded"):
        vmd_init(w.k)
    w.k.run_on(0, vmd_exit, w.k)
    assert vmd_module_of(w.k) is None and vmd_devices(w.k) == []
    with pytest.raises(VmdParamError, match="not loaded"):
        vmd_exit(w.k)


def test_suspend_frees_the_vector_handlers_and_resume_brings_them_back():
    w = boot_vmd(machine_text([vmd_block(vectors=8)]))
    k, vmd = w.k, w.vmd
    assert k.run_on(0, dpm_suspend, k) == 0
    assert not any(k.irq.irq_has_action(irqs.virq) for irqs in vmd.irqs)
    assert k.run_on(0, dpm_resume, k) == 0
    assert all(k.irq.irq_has_action(irqs.virq) for irqs in vmd.irqs)
    fire_all(w)


def test_resume_puts_the_remap_bit_back_as_the_driver_set_it():
    w = boot_vmd(machine_text([vmd_block(0x28C0, extra="vmlock = 2\n")]))
    k = w.k
    vmd_pdev = w.vmd.dev
    hw = w.m.vmds[0]
    k.run_on(0, dpm_suspend, k)
    hw.reset()  # firmware on the way back from sleep: remapping on again
    assert not pci_read_config_word(vmd_pdev, 0x44)[1] & 0x2
    k.run_on(0, dpm_resume, k)
    assert pci_read_config_word(vmd_pdev, 0x44)[1] & 0x2


def test_shutdown_removes_the_msi_domain():
    w = boot_vmd(machine_text([vmd_block(0x28C0, extra="vmlock = 2\n")]), child=False)
    k = w.k
    k.run_on(0, device_shutdown, k)
    assert not pci_read_config_word(w.vmd.dev, 0x44)[1] & 0x2  # remapping back on
    # remapping on, with the real drivers bound: they free their vectors at shutdown first
    from vmdsim.drivers.nvme import nvme_init
    from vmdsim.drivers.pcieport.portdrv import pcie_portdrv_init

    w = boot_vmd(machine_text([vmd_block()]), child=False, load=False)
    w.k.run_on(0, nvme_init, w.k)
    w.k.run_on(0, pcie_portdrv_init, w.k)
    load_vmd(w)
    names = [d.name for d in w.k.irq.irq_domain_list]
    assert "VMD-MSI-65536" in names
    w.k.run_on(0, device_shutdown, w.k)
    assert "VMD-MSI-65536" not in [d.name for d in w.k.irq.irq_domain_list]
    assert w.vmd.irq_domain is None


def test_proc_interrupts_shows_the_vector_of_each_child():
    w = boot_vmd(machine_text([vmd_block(vectors=4, ports=1, queues=2)]), queues=3)
    table = vmd_show_interrupts(w.k)
    for q in bound_queues(w):
        row = next(line for line in table.splitlines() if line.startswith(f"{q.virq:>3}:"))
        assert row.endswith(f"nvmeq{q.q}  vmd0:{[1, 2, 3][q.q]}")


def test_one_name_applies_to_every_vmd():
    text = machine_text([vmd_block(slot="0e.0"), vmd_block(slot="0f.0")])
    w = boot_vmd(text, child=False, protocol="kfree-rcu", policy="affinity")
    got = [(v.protocol.name, v.policy.name) for v in vmd_devices(w.k)]
    assert got == [("kfree-rcu", "affinity"), ("kfree-rcu", "affinity")]
