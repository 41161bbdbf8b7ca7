"""Allocation failure at every allocation of pci_alloc_irq_vectors, irq_domain_alloc_irqs and
request_irq: each walk makes the 1st, 2nd, ... allocation fail (``k.mem.fail_nth``) until a
run no longer reaches the armed one. A failed call returns an error and leaves nothing
behind; a successful one is undone and must leave nothing either."""

from __future__ import annotations

from collections.abc import Callable

from irq_testbed import Recorder, msix_machine, release_devres

from vmdsim.hw.regs import PCI_MSIX_FLAGS
from vmdsim.kernel.core import Kernel
from vmdsim.kernel.irq.irqdomain import irq_domain_alloc_irqs
from vmdsim.kernel.pci import pci_read_config_word
from vmdsim.kernel.pci.msi import (
    PCI_IRQ_AFFINITY,
    PCI_IRQ_MSI,
    PCI_IRQ_MSIX,
    pci_alloc_irq_vectors,
    pci_free_irq_vectors,
    pci_irq_vector,
)

MAX_RUNS = 500


def walk(k: Kernel, run: Callable[[], None]) -> int:
    """Arm ``fail_nth(n)`` and call ``run`` for n = 1, 2, ...; the number of failure points."""
    for n in range(1, MAX_RUNS):
        failed = k.mem.failed
        k.mem.fail_nth(n)
        run()
        k.mem.fail_nth(None)
        if k.mem.failed == failed:
            return n - 1
    raise AssertionError(f"still failing allocations after {MAX_RUNS} runs")


def clean(w) -> None:
    """Nothing left once the device's devres is released (what unbinding its driver
    does; since v6.2 it removes the per-device MSI domain)."""
    k = w.k
    release_devres(w)
    assert k.mem.leaks("irq") == []
    assert len(k.mem.leaks("ioremap")) == 1  # boot's ECAM mapping
    assert k.irq.active_irqs() == [] and k.irq.vectors_in_use() == []
    assert k.irq.vector_matrix.allocated() == 0 and k.irq.msi_dev_data == {}


def test_every_failure_in_pci_alloc_irq_vectors_returns_an_error_and_leaks_nothing():
    w = msix_machine(ncpus=4)
    k, dev = w.k, w.dev
    results = []

    def run():
        n = k.run_on(0, pci_alloc_irq_vectors, dev, 4, 4, PCI_IRQ_MSIX | PCI_IRQ_AFFINITY)
        results.append(n)
        if n < 0:
            assert not dev.msix_enabled
            ctrl = k.run_on(0, pci_read_config_word, dev, dev.msix_cap + PCI_MSIX_FLAGS)[1]
            assert ctrl == 3  # table size 4, MSI-X disabled, Function Mask clear
        else:
            k.run_on(0, pci_free_irq_vectors, dev)
        clean(w)

    # the device domain (v6.2+: msi_setup_device_data's devres, the template's copy, its
    # fwnode, the irq_domain), one mapping, then per vector: the msi_desc, and
    # descriptor (3), the vector level's irq_data and apic_chip_data
    assert walk(k, run) == 4 + 1 + 4 + 4 * 5
    assert results[:-1] == [r for r in results[:-1] if r < 0] and results[-1] == 4


def _virq(dev, i):
    return pci_irq_vector(dev, i)


def test_with_a_range_a_late_failure_gives_fewer_vectors_not_an_error():
    w = msix_machine(ncpus=4)
    k, dev = w.k, w.dev
    counts = []

    def run():
        n = k.run_on(0, pci_alloc_irq_vectors, dev, 1, 4, PCI_IRQ_MSIX)
        k.mem.fail_nth(None)  # only the allocation is under test
        counts.append(n)
        if n > 0:
            h = Recorder()
            for i in range(n):  # whatever was granted works
                assert k.run_on(0, k.irq.request_irq, _virq(dev, i), h, 0, "q", dev) == 0
            for i in range(n):
                w.ep.msix.fire(i)
            assert len(h.calls) == n
            for i in range(n):
                k.run_on(0, k.irq.free_irq, _virq(dev, i), dev)
            k.run_on(0, pci_free_irq_vectors, dev)
        clean(w)

    walk(k, run)
    assert set(counts) > {4} and any(0 < c < 4 for c in counts)


def test_every_failure_in_plain_msi_leaks_nothing():
    w = msix_machine(ncpus=2, msi=True)
    k, dev = w.k, w.dev

    def run():
        n = k.run_on(0, pci_alloc_irq_vectors, dev, 1, 1, PCI_IRQ_MSI)
        if n < 0:
            assert not dev.msi_enabled
        else:
            k.run_on(0, pci_free_irq_vectors, dev)
        clean(w)

    # the device domain (4, as above); the msi_desc; desc (3), irq_data, apic_chip_data
    assert walk(k, run) == 4 + 1 + 5


def test_every_failure_in_irq_domain_alloc_irqs_leaks_nothing():
    k = Kernel(ncpus=2)

    def run():
        virq = k.run_on(0, irq_domain_alloc_irqs, k.irq.x86_vector_domain, 3)
        if virq > 0:
            k.run_on(0, k.irq.irq_domain_free_irqs, virq, 3)
        assert k.mem.leaks("irq") == [] and k.irq.active_irqs() == []

    assert walk(k, run) == 3 * 4  # desc (3) and apic_chip_data per IRQ (no parent level)


def test_a_failing_request_irq_leaves_the_irq_as_it_was():
    w = msix_machine(ncpus=1)
    k, dev = w.k, w.dev
    k.run_on(0, pci_alloc_irq_vectors, dev, 1, 1, PCI_IRQ_MSIX)
    virq = _virq(dev, 0)
    before = k.mem.leaks("irq")

    def run():
        ret = k.run_on(0, k.irq.request_irq, virq, Recorder(), 0, "q", dev)
        if ret == 0:
            k.run_on(0, k.irq.free_irq, virq, dev)
        assert k.mem.leaks("irq") == before and not k.irq.irq_has_action(virq)

    assert walk(k, run) == 1
    k.run_on(0, pci_free_irq_vectors, dev)
    clean(w)
