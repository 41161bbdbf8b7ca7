"""Interrupts from below a VMD: a completion on any queue reaches that queue's handler through
the VMD vector its IRQ is mapped to (remapping on), or straight to a CPU (bypass)."""

from __future__ import annotations

from vmd_testbed import ROOMY_DEFAULT, boot_vmd, bound_queues, machine_text, vmd_block

from vmdsim.drivers.nvme import nvme_init, nvme_queue_stats
from vmdsim.drivers.vmd import (
    vmd_interrupts_column,
    vmd_irq_vector,
    vmd_vector_calls,
    vmd_vector_child_calls,
)
from vmdsim.kernel.io import readl
from vmdsim.kernel.pci import pci_iomap, pci_iounmap

MSIX_TABLE = 0x2000


def msix_entry(k, pdev, n):
    """(address low, data) of MSI-X entry ``n`` of a drive, read through MMIO."""
    base = pci_iomap(pdev, 0)
    try:
        entry = base + MSIX_TABLE + 16 * n
        return readl(entry), readl(entry + 8)
    finally:
        pci_iounmap(pdev, base)


def test_every_queue_interrupt_reaches_its_handler_through_its_own_vmd_vector():
    w = boot_vmd(ROOMY_DEFAULT)
    k, vmd = w.k, w.vmd
    queues = bound_queues(w)
    assert len(queues) == 36
    for ctrl_i, ctrl in enumerate(w.drv.bound):
        for queue in ctrl.queues:
            found = vmd_irq_vector(k, queue.virq)
            assert found is not None and found[0] is vmd
            index = found[1]
            # the child's message: x86 MSI base, the VMD vector in bits 19:12, data 0
            assert msix_entry(k, ctrl.pdev, queue.q) == (0xFEE00000 | index << 12, 0)
            calls, kstat = vmd_vector_calls(vmd), k.irq.kstat_irqs(vmd.irqs[index].virq)
            others = [q.consumed for q in queues if q is not queue]
            assert w.m.nvmes[ctrl_i].complete(queue.q)
            assert queue.consumed == 1
            assert [q.consumed for q in queues if q is not queue] == others
            after = vmd_vector_calls(vmd)
            assert after[index] == calls[index] + 1
            assert [c for i, c in enumerate(after) if i != index] == \
                [c for i, c in enumerate(calls) if i != index]
            assert k.irq.kstat_irqs(vmd.irqs[index].virq) == kstat + 1
            assert vmd_interrupts_column(k, queue.virq) == f"vmd0:{index}"


def test_children_sharing_a_vector_all_run_and_only_the_one_with_work_finds_any():
    w = boot_vmd(machine_text([vmd_block(0x201D, vectors=2, ports=2, queues=1)]), queues=2)
    k, vmd = w.k, w.vmd
    queues = bound_queues(w)
    # one fast vector (1): all four NVMe child IRQs share it, in the order they were enabled
    assert [vmd_irq_vector(k, q.virq)[1] for q in queues] == [1, 1, 1, 1]
    assert w.m.nvmes[1].complete(1)
    assert [q.calls for q in queues] == [1, 1, 1, 1]
    assert [q.consumed for q in queues] == [0, 0, 0, 1]
    assert vmd_vector_calls(vmd) == [0, 1] and vmd_vector_child_calls(vmd) == [0, 4]


def test_bypass_children_interrupt_the_cpus_directly():
    w = boot_vmd(machine_text([vmd_block(0x28C0, extra="vmlock = 2\n")]), queues=5)
    k, vmd = w.k, w.vmd
    assert vmd.irqs == []
    for ctrl_i, ctrl in enumerate(w.drv.bound):
        for queue in ctrl.queues:
            addr, data = msix_entry(k, ctrl.pdev, queue.q)
            vec = k.irq.irq_vector_of(queue.virq)
            assert vec is not None
            cpu, vector = vec
            assert (addr, data) == (0xFEE00000 | cpu << 12, vector)
            assert vmd_irq_vector(k, queue.virq) is None
            before = k.irq.kstat_irqs_cpu(queue.virq, cpu)
            assert w.m.nvmes[ctrl_i].complete(queue.q)
            assert queue.consumed == 1 and queue.calls == 1
            assert k.irq.kstat_irqs_cpu(queue.virq, cpu) == before + 1


def test_the_nvme_driver_and_port_services_below_a_vmd():
    """The real drivers: NVMe queues on fast vectors, the root ports' service IRQs (not
    NVMe) on the slow vector 0; a completion reaches the nvme queue handler."""
    from vmdsim.drivers.pcieport.portdrv import pcie_portdrv_init
    from vmdsim.kernel.pci import PCI_CLASS_BRIDGE_PCI

    w = boot_vmd(ROOMY_DEFAULT, child=False, load=False)
    k = w.k
    k.run_on(0, pcie_portdrv_init, k)
    k.run_on(0, nvme_init, k)
    from vmd_testbed import load_vmd

    load_vmd(w)
    vmd = w.vmd
    ports = [d for d in k.pci.lspci(0x10000) if d.class_ >> 8 == PCI_CLASS_BRIDGE_PCI]
    port_irqs = [irq for irq in k.irq.active_irqs()
                 if (found := vmd_irq_vector(k, irq)) and found[1] == 0]
    assert ports and len(port_irqs) == len(ports)
    stats = nvme_query(k)
    assert stats and all(vmd_irq_vector(k, s["irq"])[1] > 0 for s in stats)
    target = stats[-1]  # the last queue of the last drive (drives bind in scan order)
    qid = int(target["name"].rsplit("q", 1)[1])
    assert w.m.nvmes[-1].complete(qid)
    after = {s["name"]: s for s in nvme_query(k)}
    assert after[target["name"]]["completions"] == 1
    assert vmd_vector_calls(vmd)[vmd_irq_vector(k, target["irq"])[1]] == 1


def nvme_query(k):
    return nvme_queue_stats(k)
