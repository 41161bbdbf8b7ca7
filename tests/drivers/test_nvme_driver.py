"""The NVMe driver on plain root ports in the primary domain (no VMD in the way).

The machines come from TOML topologies; everything is driven through the
kernel (boot, driver registration, config space, /proc/interrupts) except the
hardware acts a drive does on its own: ``nvme.complete(q)``.
"""

from __future__ import annotations

import re

import pytest

import vmdsim
from vmdsim.drivers.nvme import (
    NVME_REG_CC,
    NVME_REG_CSTS,
    nvme_core_of,
    nvme_exit,
    nvme_init,
    nvme_irq,
    nvme_queue_stats,
    nvme_suspend_queue,
)
from vmdsim.drivers.pcieport import pcie_portdrv_init
from vmdsim.errors import Violation
from vmdsim.hw.machine import Machine
from vmdsim.hw.regs import (
    PCI_COMMAND,
    PCI_COMMAND_MASTER,
    PCI_MSIX_FLAGS,
    PCI_MSIX_FLAGS_ENABLE,
)
from vmdsim.kernel.boot import boot
from vmdsim.kernel.core import Kernel
from vmdsim.kernel.io import readl
from vmdsim.kernel.irq.flags import IRQ_HANDLED, IRQ_NONE
from vmdsim.kernel.pci import (
    pci_read_config_word,
    pci_resource_start,
)
from vmdsim.topology import parse

TOPOLOGY = """
[machine]
cpus = 4

[[root_port]]
slot = "1c.0"
slot_number = 1
nvme = { queues = 8 }

[[root_port]]
slot = "1d.0"
slot_number = 2
irq = "msix"
nvme = { queues = 2 }
"""

SINGLE_VECTOR = """
[machine]
cpus = 2

[[root_port]]
slot = "1c.0"
nvme = { queues = 4, msix_vectors = 1 }
"""


def booted(text: str = TOPOLOGY, *, drivers_first: bool = True):
    s = vmdsim.boot(parse(text, "<test>"),
                    drivers=["pcieport", "nvme"] if drivers_first else [])
    if not drivers_first:
        pcie_portdrv_init(s.k)
        nvme_init(s.k)
    return s.machine, s.k


def interrupts(k) -> dict[str, list[int]]:
    """/proc/interrupts: action names -> per-CPU counts."""
    rows = {}
    for line in k.irq.show_interrupts().splitlines()[1:]:
        m = re.match(r"\s*(\d+):((?:\s+\d+){" + str(k.ncpus) + r"})\s.*?-edge\s+(.*)$", line)
        if m:
            rows[m.group(3).strip()] = [int(x) for x in m.group(2).split()]
    return rows


def pdev_of(k, name: str):
    return next(d.pdev for d in nvme_core_of(k).devices if d.name == name)


def stats(k) -> dict[str, dict]:
    return {r["name"]: r for r in nvme_queue_stats(k)}


def test_each_drive_binds_with_an_admin_vector_and_one_per_io_queue_up_to_the_cpus():
    m, k = booted()
    devs = nvme_core_of(k).devices
    assert [(d.name, d.pdev.bus.number) for d in devs] == [("nvme0", 1), ("nvme1", 2)]
    # 8 I/O queues on the drive, 4 CPUs: one I/O queue per CPU (Linux: num_possible_cpus)
    assert [d.num_vecs for d in devs] == [5, 3]
    rows = interrupts(k)
    assert {f"nvme0q{q}" for q in range(5)} | {f"nvme1q{q}" for q in range(3)} <= set(rows)
    assert "nvme0q5" not in rows
    # The vectors are MSI-X, enabled in the drive's config space.
    for d in devs:
        _, flags = pci_read_config_word(d.pdev, d.pdev.msix_cap + PCI_MSIX_FLAGS)
        assert flags & PCI_MSIX_FLAGS_ENABLE


def test_drivers_registered_after_boot_bind_at_once_and_only_once():
    m, k = booted(drivers_first=False)
    assert [d.name for d in nvme_core_of(k).devices] == ["nvme0", "nvme1"]
    assert nvme_init(k) == -16  # -EBUSY: already registered


def test_io_vectors_are_spread_over_the_cpus_and_the_admin_vector_is_not():
    m, k = booted()
    s = stats(k)
    assert s["nvme0q0"]["cpus"] == [0, 1, 2, 3]  # pre_vectors = 1: not spread
    assert [s[f"nvme0q{q}"]["cpus"] for q in range(1, 5)] == [[0], [1], [2], [3]]
    assert [s[f"nvme1q{q}"]["cpus"] for q in range(1, 3)] == [[0, 1], [2, 3]]


def test_a_completion_runs_the_queue_handler_on_the_cpu_of_its_affinity():
    m, k = booted()
    drive = m.nvmes[0]
    for q in range(1, 5):
        assert drive.complete(q)
    assert drive.complete(3)
    s = stats(k)
    for q in range(1, 5):
        row = s[f"nvme0q{q}"]
        n = 2 if q == 3 else 1
        assert row["calls_per_cpu"] == {q - 1: n}
        assert (row["real"], row["spurious"], row["completions"]) == (n, 0, n)
    rows = interrupts(k)
    assert rows["nvme0q3"] == [0, 0, 2, 0]
    # Every entry was consumed: the drive has nothing pending on any queue.
    assert all(drive.pending(q) == 0 for q in range(5))


def test_a_second_completion_before_the_handler_runs_is_consumed_in_the_same_call():
    m, k = booted()
    drive = m.nvmes[0]
    cpu = k.sched.cpu(0)
    with k.on_cpu(0):
        cpu.irqs_enabled = False  # queue 1's vector targets CPU 0, which is busy
        drive.complete(1)
        drive.complete(1)
        cpu.irqs_enabled = True
        k.sched.irqs_changed(cpu)
    row = stats(k)["nvme0q1"]
    assert (row["real"], row["spurious"], row["completions"]) == (1, 0, 2)


def test_a_shared_vector_calls_every_queue_on_it_and_the_idle_one_counts_spurious():
    m, k = booted(SINGLE_VECTOR)
    (dev,) = nvme_core_of(k).devices
    assert (dev.num_vecs, dev.max_qid) == (1, 1)
    # Create I/O CQ and SQ ran on the shared vector with queue 0 alone on it; then the
    # I/O queue's handler joined (the Set Features before was on the setup vector)
    assert sum(interrupts(k)["nvme0q0, nvme0q1"]) == 2
    b = stats(k)
    assert (b["nvme0q0"]["real"], b["nvme0q1"]["real"], b["nvme0q1"]["spurious"]) == (3, 0, 0)
    m.nvmes[0].complete(1)
    s = stats(k)
    assert (s["nvme0q1"]["real"], s["nvme0q1"]["spurious"]) == (1, 0)
    assert (s["nvme0q0"]["real"], s["nvme0q0"]["spurious"]) == (3, 1)
    m.nvmes[0].complete(0)  # an event: the Asynchronous Event Request completes
    s = stats(k)
    assert (s["nvme0q0"]["real"], s["nvme0q1"]["spurious"]) == (4, 1)


def test_unbinding_frees_every_irq_and_vector_and_shuts_the_controller_down():
    m, k = booted()
    before = set(k.irq.active_irqs())
    pdev = pdev_of(k, "nvme0")
    irqs = {r["irq"] for r in nvme_queue_stats(k) if r["name"].startswith("nvme0")}
    bar = pci_resource_start(pdev, 0)
    nvme_exit(k)
    assert k.mem.leaks("nvme") == []
    assert not irqs & set(k.irq.active_irqs())  # descriptors gone
    assert irqs <= before
    assert not any(name.startswith("nvme") for name in interrupts(k))
    _, flags = pci_read_config_word(pdev, pdev.msix_cap + PCI_MSIX_FLAGS)
    assert not flags & PCI_MSIX_FLAGS_ENABLE
    _, cmd = pci_read_config_word(pdev, PCI_COMMAND)
    assert not cmd & PCI_COMMAND_MASTER
    regs = k.io.ioremap(bar, 0x1000)
    assert readl(regs + NVME_REG_CC) >> 14 & 3 == 1  # shutdown notification (normal)
    assert readl(regs + NVME_REG_CSTS) >> 2 & 3 == 2  # shutdown complete
    k.io.iounmap(regs)
    # A completion now reaches no handler and no CPU.
    m.nvmes[0].complete(1)
    assert k.irq.spurious_vectors == [0] * k.ncpus


def test_rebinding_gets_the_lowest_free_instance_and_fresh_vectors():
    m, k = booted()
    nvme_exit(k)
    assert nvme_core_of(k).instances == set()
    assert nvme_init(k) == 0
    assert [d.name for d in nvme_core_of(k).devices] == ["nvme0", "nvme1"]
    m.nvmes[1].complete(2)
    assert stats(k)["nvme1q2"]["real"] == 1


def test_a_handler_running_after_free_irq_returned_is_reported():
    m, k = booted()
    (dev,) = [d for d in nvme_core_of(k).devices if d.name == "nvme1"]
    q = dev.queues[1]
    with k.on_cpu(1):
        nvme_suspend_queue(dev, 1)  # free_irq returned: the queue is marked
    with pytest.raises(Violation) as e:
        nvme_irq(33, q)
    assert e.value.kind == "handler-after-free_irq"
    assert "nvme1q1" in str(e.value)


def test_an_interrupt_for_work_already_consumed_finds_nothing_and_counts_spurious():
    m, k = booted()
    dev = nvme_core_of(k).devices[0]
    q = dev.queues[2]  # its vector targets CPU 1
    irq = stats(k)["nvme0q2"]["irq"]
    cpu = k.sched.cpu(1)
    with k.on_cpu(1):
        cpu.irqs_enabled = False
        m.nvmes[0].complete(2)  # the interrupt waits: CPU 1 has interrupts off
        assert nvme_irq(irq, q) == IRQ_HANDLED  # the entry is consumed by a poll
        assert nvme_irq(irq, q) == IRQ_NONE
        cpu.irqs_enabled = True
        k.sched.irqs_changed(cpu)  # now the interrupt: nothing left for it
    assert (q.irq_real, q.irq_spurious, q.completions) == (1, 2, 1)
    assert interrupts(k)["nvme0q2"] == [0, 1, 0, 0]


def _probe_with_nth_failure(n: int):
    s = vmdsim.boot(parse(TOPOLOGY, "<test>"), drivers=["pcieport"])
    m, k = s.machine, s.k
    irqs_before = set(k.irq.active_irqs())
    k.mem.fail_nth(n)
    assert nvme_init(k) == 0
    k.mem.fail_nth(None)
    return m, k, irqs_before


def test_every_allocation_failure_during_probe_unwinds_completely():
    walked = 0
    for n in range(1, 400):
        m, k, irqs_before = _probe_with_nth_failure(n)
        failed = k.mem.failed
        bound = [d.pdev for d in nvme_core_of(k).devices]
        unbound = [d for d in k.pci.devices if d.class_ == 0x010802 and d not in bound]
        for pdev in unbound:
            assert pdev.driver is None
            assert pdev.enable_cnt == 0
            assert not pdev.msix_enabled and not pdev.msi_enabled
            _, flags = pci_read_config_word(pdev, pdev.msix_cap + PCI_MSIX_FLAGS)
            assert not flags & PCI_MSIX_FLAGS_ENABLE
        owned = sum(1 for o in k.mem.leaks("nvme"))
        # a live device: its nvme_dev, and per queue the nvme_queue plus two coherent DMA
        # buffers (entries), each a dma_coherent and its mapping
        expected = sum(1 + 5 * d.queue_count for d in nvme_core_of(k).devices)
        assert owned == expected, f"fail_nth({n}): nvme objects left behind"
        assert set(k.irq.active_irqs()) - irqs_before == {
            r["irq"] for r in nvme_queue_stats(k)}, f"fail_nth({n}): IRQs left behind"
        # The instance numbers of failed probes were given back.
        assert nvme_core_of(k).instances == {d.instance for d in nvme_core_of(k).devices}
        if not failed:
            break
        walked += 1
        # Unbinding the survivors and binding again leaves nothing behind either.
        nvme_exit(k)
        assert k.mem.leaks("nvme") == []
        assert set(k.irq.active_irqs()) == irqs_before
        assert nvme_init(k) == 0
        assert len(nvme_core_of(k).devices) == 2
    else:
        pytest.fail("probe never ran without an allocation failing")
    assert walked > 20  # the walk reached deep into both probes


# -- admin commands ---------------------------------------------------------------------------
def test_queues_are_created_with_admin_commands_on_the_vectors_the_driver_chose():
    m, k = booted()
    for dev in nvme_core_of(k).devices:
        hw = next(n for n in m.nvmes if n.bar_address(0) == pci_resource_start(dev.pdev, 0))
        # Set Features, then per I/O queue Create CQ and Create SQ; one event request posted
        assert hw.admin_commands == 1 + 2 * (dev.online_queues - 1) + 1
        assert sorted(hw.admin.cqs) == list(range(1, dev.online_queues))
        for q in range(1, dev.online_queues):
            assert hw.queue_vector(q) == dev.queues[q].cq_vector == q
        assert hw.admin.aers == [31]  # the Asynchronous Event Request, outstanding


def test_one_vector_puts_every_queue_on_vector_0_and_no_completion_is_lost():
    m, k = booted(SINGLE_VECTOR)
    hw = m.nvmes[0]
    assert hw.queue_vector(1) == 0  # Create I/O CQ named vector 0, not "queue mod vectors"
    for _ in range(5):
        assert hw.complete(1)
    assert hw.pending(1) == 0 and stats(k)["nvme0q1"]["completions"] == 5


def test_an_admin_completion_whose_interrupt_is_lost_is_polled_after_the_timeout():
    m = Machine.build(parse(TOPOLOGY, "<test>"))
    k = Kernel(ncpus=m.ncpus)
    hw = m.nvmes[1]
    fire = hw.msix.fire
    hw.msix.fire = lambda n: False if n == 0 else fire(n)  # the fabric loses vector 0
    nvme_init(k)
    boot(k, m)
    assert [d.name for d in nvme_core_of(k).devices] == ["nvme0", "nvme1"]
    log = [line for line in k.log.lines() if "timeout" in line]
    assert log and all("QID 0 timeout, completion polled" in line for line in log)
    assert any("opcode 0x9 (Set Features)" in line for line in log)
    assert stats(k)["nvme1q1"]["name"] == "nvme1q1"  # every command completed: queues exist


def test_after_any_allocation_failure_during_probe_every_queue_that_exists_delivers():
    """Whatever the failure cut (a drive, some vectors, some queues), a completion on any
    queue the controller has is consumed by its handler: none waits behind a masked entry."""
    for n in range(1, 400):
        m, k, _ = _probe_with_nth_failure(n)
        failed = k.mem.failed
        live = {q.name for q in (q for d in nvme_core_of(k).devices for q in d.queues[1:]) if q}
        posted = set()
        for i, hw in enumerate(m.nvmes):
            for q in range(1, hw.nr_queues):
                # a drive whose probe failed is disabled: no bus mastering, nothing posts
                if hw.queue_exists(q) and hw.complete(q):
                    posted.add((i, q))
            assert all(hw.pending(q) == 0 for q in range(1, hw.nr_queues)), (n, hw.name)
        assert len(posted) == len(live), n  # every queue of a bound drive took its completion
        if not failed:
            break
    else:
        pytest.fail("probe never ran without an allocation failing")
