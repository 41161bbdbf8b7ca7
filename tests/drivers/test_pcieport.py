"""The PCIe port driver and its services on plain root ports (primary domain).

Machines come from TOML topologies. The hardware acts are a person at a slot
(``rp.unpopulate()``, ``rp.populate(card)``, ``rp.press_attention_button()``)
and a device sending a message (``drive.report_error``, ``drive.signal_pme``,
``rp.receive_error_message``, ``rp.receive_pme``); everything else goes
through the kernel: config space, /proc/interrupts, the kernel log.
"""

from __future__ import annotations

import re
from types import SimpleNamespace

import pytest

import vmdsim
from vmdsim.check.explore import explore
from vmdsim.check.program import Program
from vmdsim.drivers.nvme import nvme_core_of, nvme_queue_stats
from vmdsim.drivers.pcieport import (
    PCIE_PORT_SERVICE_AER,
    PCIE_PORT_SERVICE_HP,
    PCIE_PORT_SERVICE_PME,
    get_service_data,
    pcie_port_bus_of,
    pcie_portdrv_exit,
    pcie_portdrv_init,
)
from vmdsim.drivers.pcieport.pciehp import OFF_STATE, ON_STATE, pciehp_controller
from vmdsim.hw.aer import ERR_COR, ERR_FATAL, ERR_NONFATAL
from vmdsim.hw.nvme import NvmeController
from vmdsim.hw.regs import (
    PCI_ERR_COR_RCVR,
    PCI_ERR_ROOT_COMMAND,
    PCI_ERR_ROOT_STATUS,
    PCI_EXP_DEVCTL,
    PCI_EXP_DEVCTL_CERE,
    PCI_EXP_RTCTL,
    PCI_EXP_RTCTL_PMEIE,
    PCI_EXP_RTSTA,
    PCI_EXP_RTSTA_PME,
    PCI_EXP_SLTCTL,
    PCI_EXP_SLTCTL_ABPE,
    PCI_EXP_SLTCTL_CCIE,
    PCI_EXP_SLTCTL_DLLSCE,
    PCI_EXP_SLTCTL_HPIE,
    PCI_EXP_SLTCTL_PDCE,
    PCI_EXP_SLTCTL_PIC,
    PCI_EXP_SLTCTL_PWR_IND_OFF,
    PCI_EXP_SLTCTL_PWR_IND_ON,
    PCI_EXP_SLTSTA,
    PCI_PM_CTRL,
    PCI_PM_CTRL_PME_ENABLE,
    PCI_PM_CTRL_PME_STATUS,
)
from vmdsim.kernel.pci import (
    pci_read_config_dword,
    pci_read_config_word,
    pci_write_config_word,
    pcie_capability_read_dword,
    pcie_capability_read_word,
    pcie_capability_set_word,
)
from vmdsim.kernel.sched import current
from vmdsim.topology import parse

TOPOLOGY = """
[machine]
cpus = 4

[[root_port]]
slot = "1c.0"
slot_number = 1
nvme = { queues = 4 }

[[root_port]]
slot = "1d.0"
slot_number = 2
irq = "msix"
nvme = { queues = 2 }

[[root_port]]
slot = "1e.0"
slot_number = 3
hotplug = false
"""


def booted(text: str = TOPOLOGY, native: dict[str, bool] | None = None):
    s = vmdsim.boot(parse(text, "<test>"), drivers=["pcieport", "nvme"], native=native)
    return s.machine, s.k


def port(k, dev: int):
    return k.pci.pci_get_domain_bus_and_slot(0, 0, dev << 3)


def interrupts(k) -> dict[str, int]:
    """/proc/interrupts: action names -> total count."""
    rows = {}
    for line in k.irq.show_interrupts().splitlines()[1:]:
        m = re.match(r"\s*(\d+):((?:\s+\d+){" + str(k.ncpus) + r"})\s.*?-edge\s+(.*)$", line)
        if m:
            rows[m.group(3).strip()] = sum(int(x) for x in m.group(2).split())
    return rows


def services(k, pdev) -> dict[int, object]:
    return {s.service: s for s in pcie_port_bus_of(k).services_of(pdev)}


def log_since(k, n: int) -> list[str]:
    return list(k.log.lines())[n:]


def sltctl(pdev) -> int:
    return pcie_capability_read_word(pdev, PCI_EXP_SLTCTL)[1]


# -- binding and vectors ---------------------------------------------------------------------
def test_root_ports_bind_and_services_share_the_msi_vector():
    m, k = booted()
    rp0 = port(k, 0x1C)
    assert rp0.driver.name == "pcieport"
    names = sorted(s.name for s in pcie_port_bus_of(k).services_of(rp0))
    assert names == ["0000:00:1c.0:pcie001", "0000:00:1c.0:pcie002", "0000:00:1c.0:pcie004"]
    irqs = {s.irq for s in services(k, rp0).values()}
    assert len(irqs) == 1  # one MSI message: every service on it
    assert "PCIe PME, aerdrv, pciehp" in interrupts(k)


def test_msix_ports_take_each_services_vector_from_its_interrupt_message_number():
    m, k = booted()
    rp1 = port(k, 0x1D)
    _, flags = pcie_capability_read_word(rp1, 2)  # PCI_EXP_FLAGS: message number 0
    _, rootsta = pci_read_config_dword(rp1, rp1.aer_cap + PCI_ERR_ROOT_STATUS)
    assert (flags >> 9 & 0x1F, rootsta >> 27) == (0, 1)
    s = services(k, rp1)
    from vmdsim.kernel.pci.msi import pci_irq_vector

    assert s[PCIE_PORT_SERVICE_PME].irq == s[PCIE_PORT_SERVICE_HP].irq == pci_irq_vector(rp1, 0)
    assert s[PCIE_PORT_SERVICE_AER].irq == pci_irq_vector(rp1, 1)
    rows = interrupts(k)
    assert "PCIe PME, pciehp" in rows and "aerdrv" in rows


def test_a_port_without_hotplug_gets_no_pciehp():
    m, k = booted()
    rp2 = port(k, 0x1E)
    assert set(services(k, rp2)) == {PCIE_PORT_SERVICE_PME, PCIE_PORT_SERVICE_AER}


def test_pciehp_enables_link_and_button_events_and_command_completion():
    m, k = booted()
    ctl = sltctl(port(k, 0x1C))
    on = PCI_EXP_SLTCTL_HPIE | PCI_EXP_SLTCTL_DLLSCE | PCI_EXP_SLTCTL_ABPE | PCI_EXP_SLTCTL_CCIE
    assert ctl & on == on
    assert not ctl & PCI_EXP_SLTCTL_PDCE  # a slot with an attention button: Linux's rule
    ctrl = pciehp_controller(port(k, 0x1C))
    assert ctrl.state == ON_STATE and ctrl.timeouts == 0


def test_host_bridge_native_flags_decide_which_services_run():
    m, k = booted(native={"pcie_hotplug": False, "aer": False})
    rp0 = port(k, 0x1C)
    assert set(services(k, rp0)) == {PCIE_PORT_SERVICE_PME}
    assert not sltctl(rp0) & PCI_EXP_SLTCTL_HPIE
    _, cmd = pci_read_config_dword(rp0, rp0.aer_cap + PCI_ERR_ROOT_COMMAND)
    assert cmd == 0
    m, k = booted(native={"pme": False, "aer": False, "pcie_hotplug": False})
    assert port(k, 0x1C).driver is not None
    assert services(k, port(k, 0x1C)) == {}
    assert pcie_capability_read_word(port(k, 0x1C), PCI_EXP_RTCTL)[1] & PCI_EXP_RTCTL_PMEIE == 0


def test_pcie_ports_native_overrides_firmware():
    s = vmdsim.boot(parse(TOPOLOGY, "<test>"), drivers=["pcieport"],
                    native={"pcie_hotplug": False, "aer": False, "pme": False},
                    configure=lambda k: setattr(pcie_port_bus_of(k), "native", True))
    k = s.k  # pcie_ports=native
    assert len(services(k, port(k, 0x1C))) == 3


def test_unbinding_the_port_driver_stops_services_and_frees_their_irqs():
    m, k = booted()
    pcie_portdrv_exit(k)
    assert k.mem.leaks("pcieport") == []
    rows = interrupts(k)
    assert not any("pciehp" in r or "aerdrv" in r or "PME" in r for r in rows)
    rp0 = port(k, 0x1C)
    assert not sltctl(rp0) & PCI_EXP_SLTCTL_HPIE
    _, cmd = pci_read_config_dword(rp0, rp0.aer_cap + PCI_ERR_ROOT_COMMAND)
    assert cmd == 0
    assert not rp0.msi_enabled


# -- hot-plug --------------------------------------------------------------------------------
def test_surprise_removal_removes_the_drive_and_its_driver_frees_every_irq():
    m, k = booted()
    irqs_before_drive = {r["irq"] for r in nvme_query(k, "nvme0")}
    assert len(irqs_before_drive) == 5
    n = len(k.log.lines())
    m.by_name["rp0"].unpopulate()
    log = log_since(k, n)
    assert "pcieport 0000:00:1c.0: pciehp: Slot(1): Link Down" in log
    assert "pcieport 0000:00:1c.0: pciehp: Slot(1): Card not present" in log
    assert not any("unbound" in line for line in log)  # Linux logs an unbind at debug level
    assert k.pci.pci_get_domain_bus_and_slot(0, 1, 0) is None
    assert [d.name for d in nvme_core_of(k).devices] == ["nvme1"]
    assert not irqs_before_drive & set(k.irq.active_irqs())
    assert not any(name.startswith("nvme0") for name in interrupts(k))
    # nvme1 and its three queues only, each queue with its two DMA buffers (2 objects each)
    assert len(k.mem.leaks("nvme")) == 1 + 3 * 5
    rp0 = port(k, 0x1C)
    assert sltctl(rp0) & PCI_EXP_SLTCTL_PIC == PCI_EXP_SLTCTL_PWR_IND_OFF
    assert pciehp_controller(rp0).state == OFF_STATE
    assert pcie_capability_read_word(rp0, PCI_EXP_SLTSTA)[1] & 0x1FF == 0  # events cleared


def nvme_query(k, name: str) -> list[dict]:
    return [r for r in nvme_queue_stats(k) if r["name"].startswith(name + "q")]


def test_reinsertion_binds_the_new_drive_with_fresh_vectors():
    m, k = booted()
    rp = m.by_name["rp0"]
    rp.unpopulate()
    baseline = k.mem.owner_counts().get("irq", 0)
    new = NvmeController("spare", nr_io_queues=8)
    n = len(k.log.lines())
    rp.populate(new)
    log = log_since(k, n)
    assert "pcieport 0000:00:1c.0: pciehp: Slot(1): Card present" in log
    assert "pcieport 0000:00:1c.0: pciehp: Slot(1): Link Up" in log
    assert "nvme nvme0: pci function 0000:01:00.0" in log  # nvme_probe's first line
    assert [d.name for d in nvme_core_of(k).devices] == ["nvme1", "nvme0"]
    rows = nvme_query(k, "nvme0")
    assert len(rows) == 5  # admin + 4 CPUs' worth of I/O queues
    assert k.mem.owner_counts()["irq"] > baseline
    new.complete(2)
    assert next(r for r in nvme_query(k, "nvme0") if r["name"] == "nvme0q2")["real"] == 1
    rp0 = port(k, 0x1C)
    assert sltctl(rp0) & PCI_EXP_SLTCTL_PIC == PCI_EXP_SLTCTL_PWR_IND_ON
    assert pciehp_controller(rp0).state == ON_STATE


def test_repeated_hotplug_cycles_leak_nothing():
    m, k = booted()
    rp = m.by_name["rp0"]
    rp.unpopulate()
    assert len(nvme_core_of(k).devices) == 1
    counts = k.mem.owner_counts()
    irqs = set(k.irq.active_irqs())
    for i in range(3):
        rp.populate(NvmeController(f"cycle{i}", nr_io_queues=4))
        assert [d.name for d in nvme_core_of(k).devices] == ["nvme1", "nvme0"]
        rp.unpopulate()
        assert len(nvme_core_of(k).devices) == 1
        assert k.mem.owner_counts() == counts
        assert set(k.irq.active_irqs()) == irqs
    assert pciehp_controller(port(k, 0x1C)).enabled == 3


def test_the_attention_button_toggles_the_slot():
    m, k = booted()
    rp = m.by_name["rp0"]
    n = len(k.log.lines())
    rp.press_attention_button()
    log = log_since(k, n)
    assert "pcieport 0000:00:1c.0: pciehp: Slot(1): Button press: will power off in 5 sec" in log
    assert k.pci.pci_get_domain_bus_and_slot(0, 1, 0) is None  # safe removal done
    assert rp.card is not None  # the card is still in the slot
    assert pciehp_controller(port(k, 0x1C)).state == OFF_STATE
    rp.press_attention_button()
    assert pciehp_controller(port(k, 0x1C)).state == ON_STATE
    assert [d.name for d in nvme_core_of(k).devices] == ["nvme1", "nvme0"]


# -- AER ---------------------------------------------------------------------------------------
def test_an_error_message_reaches_aerdrv_which_logs_the_source_and_clears_the_status():
    m, k = booted()
    rp = m.by_name["rp0"]
    rp0 = port(k, 0x1C)
    n = len(k.log.lines())
    rp.receive_error_message(ERR_COR, 0x0100)
    assert ("pcieport 0000:00:1c.0: AER: Correctable error message received from 0000:01:00.0"
            in log_since(k, n))
    assert pci_read_config_dword(rp0, rp0.aer_cap + PCI_ERR_ROOT_STATUS)[1] & 0x7F == 0
    rp.receive_error_message(ERR_NONFATAL, 0x0100)
    rp.receive_error_message(ERR_FATAL, 0x0100)
    log = log_since(k, n)
    assert ("pcieport 0000:00:1c.0: AER: Uncorrectable (Non-Fatal) error message received from "
            "0000:01:00.0") in log
    assert ("pcieport 0000:00:1c.0: AER: Uncorrectable (Fatal) error message received from "
            "0000:01:00.0") in log
    rpc = get_service_data(services(k, rp0)[PCIE_PORT_SERVICE_AER])
    assert len(rpc.received) == 3


def test_a_drive_reporting_a_correctable_error_is_logged_on_its_msix_port():
    m, k = booted()
    drive = m.nvmes[1]
    pdev = k.pci.pci_get_domain_bus_and_slot(0, 2, 0)
    # What pci_aer_init does for every device when AER is native (not in the PCI core yet).
    pcie_capability_set_word(pdev, PCI_EXP_DEVCTL, PCI_EXP_DEVCTL_CERE)
    n = len(k.log.lines())
    assert drive.report_error(PCI_ERR_COR_RCVR, correctable=True)
    assert ("pcieport 0000:00:1d.0: AER: Correctable error message received from 0000:02:00.0"
            in log_since(k, n))
    assert interrupts(k)["aerdrv"] == 1


def test_only_aerdrv_handles_an_error_on_the_shared_msi_vector():
    m, k = booted()
    m.by_name["rp0"].receive_error_message(ERR_COR, 0x0100)
    desc = k.irq.irq_to_desc(services(k, port(k, 0x1C))[PCIE_PORT_SERVICE_AER].irq)
    actions = {}
    a = desc.action
    while a is not None:
        actions[a.name] = (a.calls, a.handled)
        a = a.next
    # The CC interrupt of pciehp's set-up came first; the error is aerdrv's alone.
    assert actions["aerdrv"][1] == 1
    assert actions["PCIe PME"][1] == 0
    assert actions["pciehp"][1] == 1


# -- PME ---------------------------------------------------------------------------------------
def test_a_pme_from_the_drive_is_taken_and_cleared_at_the_port_and_the_drive():
    m, k = booted()
    drive = m.nvmes[0]
    pdev = k.pci.pci_get_domain_bus_and_slot(0, 1, 0)
    # Arm PME as pci_pme_active() would.
    pmcsr = pci_read_config_word(pdev, pdev.pm_cap + PCI_PM_CTRL)[1]
    pci_write_config_word(pdev, pdev.pm_cap + PCI_PM_CTRL, pmcsr | PCI_PM_CTRL_PME_ENABLE)
    assert drive.signal_pme()
    rp0 = port(k, 0x1C)
    assert pcie_capability_read_dword(rp0, PCI_EXP_RTSTA)[1] & PCI_EXP_RTSTA_PME == 0
    assert pcie_capability_read_word(rp0, PCI_EXP_RTCTL)[1] & PCI_EXP_RTCTL_PMEIE
    pmcsr = pci_read_config_word(pdev, pdev.pm_cap + PCI_PM_CTRL)[1]
    assert not pmcsr & (PCI_PM_CTRL_PME_STATUS | PCI_PM_CTRL_PME_ENABLE)
    data = get_service_data(services(k, rp0)[PCIE_PORT_SERVICE_PME])
    assert (data.requests, data.found) == (1, 1)


def test_queued_pmes_are_all_taken_and_a_stray_one_is_spurious():
    m, k = booted()
    rp = m.by_name["rp0"]
    rp0 = port(k, 0x1C)
    data = get_service_data(services(k, rp0)[PCIE_PORT_SERVICE_PME])
    n = len(k.log.lines())
    with k.on_cpu(0):  # the port's MSI targets CPU 0: hold it off while three arrive
        cpu = k.sched.cpu(0)
        cpu.irqs_enabled = False
        for rid in (0x0100, 0x0100, 0x0500):
            rp.receive_pme(rid)
        cpu.irqs_enabled = True
        k.sched.irqs_changed(cpu)
    assert data.requests == 3
    assert data.found == 0  # the drive's PME Status was never set
    assert log_since(k, n).count("pcieport 0000:00:1c.0: PME: Spurious native interrupt!") == 3
    assert pcie_capability_read_dword(rp0, PCI_EXP_RTSTA)[1] & 0x30000 == 0


def test_pme_and_aer_on_the_msix_port_use_their_own_vectors():
    m, k = booted()
    rp = m.by_name["rp1"]
    rp.receive_pme(0x0200)
    rp.receive_error_message(ERR_COR, 0x0200)
    rows = interrupts(k)
    assert rows["aerdrv"] == 1
    assert rows["PCIe PME, pciehp"] >= 2  # pciehp's set-up command completion, then the PME


# -- under the explorer ------------------------------------------------------------------------
SMALL = """
[machine]
cpus = 2

[[root_port]]
slot = "1c.0"
slot_number = 1
nvme = { queues = 2 }
"""


def surprise_removal_during_io() -> Program:
    """A person pulls the drive while it completes I/O: the hot-plug interrupt, the pciehp
    thread (a context of its own), the NVMe driver's free_irq and the completion's
    interrupt interleave as the explorer chooses."""

    def setup():
        m, k = booted(SMALL)
        return SimpleNamespace(k=k, m=m)

    def unplug(w):
        w.m.root_ports[0].unpopulate()
        # The person waits for the slot to go dark (lets the interrupt and thread run).
        current().cpu.sched.block_until(lambda: not nvme_core_of(w.k).devices,
                                        "the slot's removal", sleep=True)

    def io(w):
        w.m.nvmes[0].complete(1)

    def check(w):
        assert not nvme_core_of(w.k).devices
        assert w.k.mem.leaks("nvme") == []

    return Program("surprise-removal-during-io", setup,
                   lambda w: [(0, lambda: unplug(w), "unplug"), (1, lambda: io(w), "io")],
                   check)


def test_no_schedule_of_a_surprise_removal_during_io_breaks_the_teardown():
    r = explore(surprise_removal_during_io(), "pct", runs=40, depth=3, seed=5)
    assert r.verdict == "safe", r.drawing()
    assert r.stats.executions == 40


# -- allocation failures -----------------------------------------------------------------------
def test_every_allocation_failure_while_ports_bind_unwinds_and_unbinding_leaves_nothing():
    walked = 0
    for n in range(1, 400):
        k = vmdsim.boot(parse(TOPOLOGY, "<test>"), drivers=[]).k
        irqs_before = set(k.irq.active_irqs())
        devres_before = k.mem.owner_counts().get("devres", 0)
        k.mem.fail_nth(n)
        assert pcie_portdrv_init(k) == 0
        k.mem.fail_nth(None)
        failed = k.mem.failed
        bus = pcie_port_bus_of(k)
        for srv in bus.devices:
            if srv.driver is not None:  # a bound service has its handler on its IRQ
                assert k.irq.irq_has_action(srv.irq), f"fail_nth({n}): {srv.name}"
        for dev in (port(k, 0x1C), port(k, 0x1D), port(k, 0x1E)):
            if dev.driver is None:  # a port whose probe failed holds nothing
                assert dev.enable_cnt == 0 and not (dev.msi_enabled or dev.msix_enabled)
                assert bus.services_of(dev) == []
        pcie_portdrv_exit(k)
        assert k.mem.leaks("pcieport") == [], f"fail_nth({n})"
        assert set(k.irq.active_irqs()) == irqs_before, f"fail_nth({n})"
        assert k.mem.owner_counts().get("devres", 0) == devres_before, f"fail_nth({n})"
        assert all(not port(k, d).msi_enabled and not port(k, d).msix_enabled
                   for d in (0x1C, 0x1D, 0x1E))
        if not failed:
            break
        walked += 1
    else:
        pytest.fail("the ports never bound without an allocation failing")
    assert walked > 20
