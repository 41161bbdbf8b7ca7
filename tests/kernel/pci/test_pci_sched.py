"""The PCI core under the schedulers: boot's CPU, device registers as shared state, and
interrupts reaching a scheduler installed after boot."""

from __future__ import annotations

from pci_testbed import NVME_VS, REG_VS, TestEndpoint, machine, new_kernel, root_port

from vmdsim.hw.fabric import RootComplex
from vmdsim.hw.regs import MSI_ADDR_BASE, MSI_ADDR_DEST_ID_SHIFT
from vmdsim.kernel.boot import boot
from vmdsim.kernel.controlled import ControlledScheduler
from vmdsim.kernel.io import readl, writel
from vmdsim.kernel.pci import (
    PCI_DEVICE,
    pci_driver,
    pci_enable_device,
    pci_iomap,
    pci_iounmap,
    pci_register_driver,
    pci_resource_start,
)
from vmdsim.kernel.sched import current


def small_machine():
    rc = RootComplex()
    rc.root_bus.attach(root_port(rc, "rp"), 0x1C).secondary.attach(TestEndpoint("nvme"))
    return rc


def test_boot_runs_as_swapper_on_cpu0_and_drivers_probe_there():
    k = new_kernel()
    where = []

    def probe(dev, id):
        ctx = current()
        where.append((ctx.name, ctx.cpu.id, ctx.kind))
        return 0

    pci_register_driver(k, pci_driver("nvme", [PCI_DEVICE(0x1234, 0x5678)], probe=probe))
    boot(k, machine(small_machine()))
    assert where == [("swapper/0", 0, "task")]
    assert k.sched.cpus[0].curr is None  # the boot task is over


def test_every_mmio_access_is_a_scheduling_point_keyed_by_physical_address():
    k = new_kernel()
    boot(k, machine(small_machine()))
    dev = k.pci.pci_get_domain_bus_and_slot(0, 1, 0)
    assert pci_enable_device(dev) == 0
    a, b = pci_iomap(dev, 0), pci_iomap(dev, 0)  # two mappings of one register block
    assert a.vm is not b.vm
    got = {}
    sched = ControlledScheduler(k.ncpus)
    k.install_scheduler(sched)
    sched.spawn(0, lambda: got.setdefault("vs", readl(a + REG_VS)), name="reader")
    sched.spawn(1, lambda: writel(0, b + REG_VS), name="writer")
    assert sched.run(), sched.failure
    key = f"{pci_resource_start(dev, 0) + REG_VS:#x}"
    mmio = {(s.thread, s.access) for s in sched.trace if s.access and s.access[0] == "mmio"}
    assert mmio == {("reader", ("mmio", key, "read")), ("writer", ("mmio", key, "write"))}
    assert got["vs"] == NVME_VS
    pci_iounmap(dev, a)
    pci_iounmap(dev, b)


def test_interrupts_reach_the_scheduler_installed_after_boot():
    k = new_kernel()
    rc = small_machine()
    boot(k, machine(rc))
    sched = ControlledScheduler(k.ncpus)
    k.install_scheduler(sched)
    # An MSI for CPU 2, vector 0x41, as a device would write it (a bus transaction).
    rc.apic.message(MSI_ADDR_BASE | (2 << MSI_ADDR_DEST_ID_SHIFT), 0x41)
    assert sched.cpus[2].pending == [0x41]  # left to the chooser, not delivered at once
