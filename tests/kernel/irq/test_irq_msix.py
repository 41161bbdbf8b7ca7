"""MSI-X and MSI end to end on a machine without a VMD: device -> APIC -> common_interrupt
-> flow handler -> driver handler, all through config cycles, MMIO and MSI writes."""

from __future__ import annotations

import pytest
from irq_testbed import Recorder, msix_machine, release_devres

from vmdsim.hw.regs import (
    PCI_MSI_FLAGS,
    PCI_MSI_FLAGS_ENABLE,
    PCI_MSIX_FLAGS,
    PCI_MSIX_FLAGS_ENABLE,
    PCI_MSIX_FLAGS_MASKALL,
)
from vmdsim.kernel.errno import EINVAL, ENOSPC, ERANGE
from vmdsim.kernel.irq.flags import IRQS_PENDING, IrqError
from vmdsim.kernel.irq.msi_parent import MSI_DEFAULT_DOMAIN, msi_get_device_domain
from vmdsim.kernel.pci import pci_read_config_word, pci_restore_state, pci_save_state
from vmdsim.kernel.pci.msi import (
    PCI_IRQ_AFFINITY,
    PCI_IRQ_MSI,
    PCI_IRQ_MSIX,
    pci_alloc_irq_vectors,
    pci_free_irq,
    pci_free_irq_vectors,
    pci_irq_get_affinity,
    pci_irq_vector,
    pci_request_irq,
)

MMCFG_MAPPINGS = 1  # boot's ECAM mapping: the only ioremap that outlives a test


def alloc(w, lo, hi, flags, dev=None):
    return w.k.run_on(0, pci_alloc_irq_vectors, dev or w.dev, lo, hi, flags)


def request_all(w, n, h, cpu=0, dev=None):
    dev = dev or w.dev
    for i in range(n):
        assert w.k.run_on(cpu, pci_request_irq, dev, i, h, None, dev, f"ep-q{i}") == 0


def free_all(w, n, dev=None):
    dev = dev or w.dev
    for i in range(n):
        w.k.run_on(0, pci_free_irq, dev, i, dev)
    w.k.run_on(0, pci_free_irq_vectors, dev)


def msix_control(w, dev=None):
    dev = dev or w.dev
    return w.k.run_on(0, pci_read_config_word, dev, dev.msix_cap + PCI_MSIX_FLAGS)[1]


def assert_nothing_left(w):
    """After pci_free_irq_vectors only the device domain is left (Linux keeps it until the
    device's devres goes, at unbind); after that, nothing."""
    k = w.k
    for dev in w.devs:
        own = msi_get_device_domain(dev.dev, MSI_DEFAULT_DOMAIN)
        assert own is None or own.mapcount == 0
    release_devres(w)
    assert k.mem.leaks("irq") == []
    assert len(k.mem.leaks("ioremap")) == MMCFG_MAPPINGS
    assert k.irq.active_irqs() == [] and k.irq.vectors_in_use() == []
    assert k.irq.vector_matrix.allocated() == 0
    assert k.irq.msi_dev_data == {}


def test_each_vector_reaches_its_handler_on_the_cpu_its_affinity_names():
    w = msix_machine(ncpus=4)
    n = alloc(w, 1, 4, PCI_IRQ_MSIX | PCI_IRQ_AFFINITY)
    assert n == 4
    assert msix_control(w) & (PCI_MSIX_FLAGS_ENABLE | PCI_MSIX_FLAGS_MASKALL) == \
        PCI_MSIX_FLAGS_ENABLE
    irqs = [pci_irq_vector(w.dev, i) for i in range(n)]
    assert irqs == sorted(set(irqs)) and irqs[0] >= 24
    assert [pci_irq_get_affinity(w.dev, i) for i in range(n)] == [{0}, {1}, {2}, {3}]
    h = Recorder()
    request_all(w, n, h)
    for i in range(n):
        w.ep.msix.fire(i)  # the device signals queue i
    assert h.calls == [(irqs[i], i, w.dev) for i in range(n)]
    table = w.k.irq.show_interrupts()
    # v6.2+: the device domain's chip, the vector's index as its hwirq
    assert f"{irqs[2]}:          0          0          1          0 PCI-MSIX-0000:00:03.0" \
        "   2-edge      ep-q2" in table
    free_all(w, n)
    assert_nothing_left(w)


def test_without_affinity_each_vector_goes_to_the_least_loaded_cpu():
    w = msix_machine(ncpus=4)
    n = alloc(w, 4, 4, PCI_IRQ_MSIX)
    cpus = [w.k.irq.irq_vector_of(pci_irq_vector(w.dev, i))[0] for i in range(n)]
    assert sorted(cpus) == [0, 1, 2, 3]
    assert pci_irq_get_affinity(w.dev, 0) is None
    w.k.run_on(0, pci_free_irq_vectors, w.dev)
    assert_nothing_left(w)


def test_a_vector_fired_while_masked_is_pending_and_delivered_on_unmask():
    w = msix_machine(ncpus=2)
    assert alloc(w, 2, 2, PCI_IRQ_MSIX | PCI_IRQ_AFFINITY) == 2
    h = Recorder()
    irq1 = pci_irq_vector(w.dev, 1)
    w.ep.msix.fire(1)  # every entry is masked until request_irq
    assert h.calls == [] and w.k.irq.spurious_vectors == [0, 0]
    # The unmask happens under the descriptor lock with interrupts off; run it on the
    # vector's own CPU, where the interrupt waits in the IRR until they are on again.
    assert w.k.run_on(1, pci_request_irq, w.dev, 1, h, None, w.dev, "q1") == 0
    assert h.calls == [(irq1, 1, w.dev)]
    w.k.run_on(0, pci_free_irq, w.dev, 1, w.dev)
    w.k.run_on(0, pci_free_irq_vectors, w.dev)
    assert_nothing_left(w)


def test_an_interrupt_while_disabled_is_masked_then_replayed_by_enable_irq():
    w = msix_machine(ncpus=2)
    alloc(w, 2, 2, PCI_IRQ_MSIX | PCI_IRQ_AFFINITY)
    h = Recorder()
    request_all(w, 2, h)
    irq = pci_irq_vector(w.dev, 1)
    w.k.run_on(0, w.k.irq.disable_irq, irq)  # lazy: the entry stays unmasked
    w.ep.msix.fire(1)  # arrives, finds the IRQ disabled: masked in the device, pending
    assert h.calls == [] and w.k.irq.irq_to_desc(irq).istate & IRQS_PENDING
    w.ep.msix.fire(1)  # masked now: the device keeps it in its Pending Bit
    # enable_irq unmasks (the device sends its pending message) and retriggers (an IPI
    # of the same vector): both reach CPU1's IRR while enable_irq has interrupts off
    # there, and one IRR bit means one delivery, as on a real local APIC.
    w.k.run_on(1, w.k.irq.enable_irq, irq)
    assert [c[:2] for c in h.calls] == [(irq, 1)]
    assert not w.k.irq.irq_to_desc(irq).istate & IRQS_PENDING
    w.ep.msix.fire(1)
    assert len(h.calls) == 2
    free_all(w, 2)
    assert_nothing_left(w)


def test_moving_an_irq_to_another_cpu_loses_nothing_and_frees_the_old_vector():
    w = msix_machine(ncpus=4)
    alloc(w, 1, 1, PCI_IRQ_MSIX)
    h = Recorder()
    request_all(w, 1, h)
    irq = pci_irq_vector(w.dev, 0)
    old = w.k.irq.irq_vector_of(irq)
    assert w.k.run_on(0, w.k.irq.irq_set_affinity, irq, {3}) == 0
    new = w.k.irq.irq_vector_of(irq)
    assert new[0] == 3 and len(w.k.irq.vectors_in_use()) == 2  # old kept until used
    w.k.sched.raise_irq(*old)  # an interrupt already in flight to the old vector
    w.ep.msix.fire(0)  # and the first one the device sends with the new message
    assert [c[:2] for c in h.calls] == [(irq, old[0]), (irq, 3)]
    assert w.k.irq.vectors_in_use() == [(3, new[1], irq)]  # the old vector is released
    free_all(w, 1)
    assert_nothing_left(w)


def test_restore_state_after_a_reset_brings_msix_back():
    w = msix_machine(ncpus=2)
    alloc(w, 2, 2, PCI_IRQ_MSIX | PCI_IRQ_AFFINITY)
    h = Recorder()
    request_all(w, 2, h)
    w.k.run_on(0, pci_save_state, w.dev)
    w.ep.reset()  # the function loses its config and its MSI-X table
    assert msix_control(w) & PCI_MSIX_FLAGS_ENABLE == 0
    w.k.run_on(0, pci_restore_state, w.dev)  # calls k.pci.restore_msi_state
    assert msix_control(w) & (PCI_MSIX_FLAGS_ENABLE | PCI_MSIX_FLAGS_MASKALL) == \
        PCI_MSIX_FLAGS_ENABLE
    w.ep.msix.fire(1)
    assert h.calls == [(pci_irq_vector(w.dev, 1), 1, w.dev)]
    free_all(w, 2)
    assert_nothing_left(w)


def test_requests_that_cannot_be_met_are_refused():
    w = msix_machine(ncpus=2)
    assert alloc(w, 5, 8, PCI_IRQ_MSIX) == -ENOSPC  # the table has 4 entries
    assert alloc(w, 3, 2, PCI_IRQ_MSIX) == -ERANGE
    assert alloc(w, 3, 4, PCI_IRQ_MSIX | PCI_IRQ_AFFINITY) == -ENOSPC  # 2 CPUs: 2 spread
    assert alloc(w, 1, 1, PCI_IRQ_MSI) == -EINVAL  # no MSI capability
    assert alloc(w, 1, 4, PCI_IRQ_MSIX | PCI_IRQ_AFFINITY) == 2
    with pytest.raises(IrqError, match="MSI-X enabled twice"):
        alloc(w, 1, 4, PCI_IRQ_MSIX)
    assert pci_irq_vector(w.dev, 2) == -EINVAL
    w.k.run_on(0, pci_free_irq_vectors, w.dev)
    assert pci_irq_vector(w.dev, 0) == -EINVAL
    assert msix_control(w) & PCI_MSIX_FLAGS_ENABLE == 0
    assert_nothing_left(w)


def test_freeing_vectors_that_still_have_handlers_is_a_bug():
    w = msix_machine(ncpus=1)
    alloc(w, 1, 1, PCI_IRQ_MSIX)
    request_all(w, 1, Recorder())
    with pytest.raises(IrqError, match="still has a handler"):
        w.k.run_on(0, pci_free_irq_vectors, w.dev)


def test_after_teardown_the_device_cannot_reach_a_handler():
    w = msix_machine(ncpus=2)
    alloc(w, 2, 2, PCI_IRQ_MSIX)
    h = Recorder()
    request_all(w, 2, h)
    free_all(w, 2)
    w.ep.msix.fire(0)  # MSI-X is off in the device: the function drops it
    assert h.calls == [] and w.k.irq.spurious_vectors == [0, 0]
    assert_nothing_left(w)


def test_plain_msi_gives_one_vector_without_interrupt_remapping():
    w = msix_machine(ncpus=2, msi=True)
    assert alloc(w, 1, 4, PCI_IRQ_MSIX | PCI_IRQ_MSI) == 1  # no multi-MSI on x86's domain
    irq = pci_irq_vector(w.dev, 0)
    assert w.dev.irq == irq
    ctrl = w.k.run_on(0, pci_read_config_word, w.dev, w.dev.msi_cap + PCI_MSI_FLAGS)[1]
    assert ctrl & PCI_MSI_FLAGS_ENABLE
    h = Recorder()
    cpu = w.k.irq.irq_vector_of(irq)[0]
    assert w.k.run_on(cpu, pci_request_irq, w.dev, 0, h, None, w.dev, "msi") == 0
    w.ep.msi.fire(0)
    assert h.calls == [(irq, cpu, w.dev)]
    w.k.run_on(0, w.k.irq.disable_irq, irq)
    w.ep.msi.fire(0)  # lazily disabled: masked at the capability, left pending
    assert len(h.calls) == 1
    w.k.run_on(cpu, w.k.irq.enable_irq, irq)
    assert len(h.calls) == 2
    free_all(w, 1)
    ctrl = w.k.run_on(0, pci_read_config_word, w.dev, w.dev.msi_cap + PCI_MSI_FLAGS)[1]
    assert not ctrl & PCI_MSI_FLAGS_ENABLE and w.dev.irq == 0
    assert_nothing_left(w)


def test_a_managed_device_gets_its_vectors_and_handlers_back_when_the_driver_unbinds():
    from vmdsim.kernel.pci import devres_release_all, pcim_enable_device

    w = msix_machine(ncpus=2)
    k, dev = w.k, w.dev
    h = Recorder()

    def probe():  # what a driver using pcim/devm does, in probe's order
        assert pcim_enable_device(dev) == 0
        assert pci_alloc_irq_vectors(dev, 2, 2, PCI_IRQ_MSIX) == 2
        for i in range(2):
            assert k.irq.devm_request_irq(dev.dev, pci_irq_vector(dev, i), h, 0, f"q{i}",
                                          dev) == 0

    k.run_on(0, probe)
    w.ep.msix.fire(1)
    assert len(h.calls) == 1
    k.run_on(0, devres_release_all, dev.dev)  # unbind: handlers first, then the vectors
    assert not dev.msix_enabled and msix_control(w) & PCI_MSIX_FLAGS_ENABLE == 0
    assert k.mem.leaks("devres") == []
    assert_nothing_left(w)
