"""Small machines and helpers for the IRQ-core tests.

Building hardware (a card in a slot) and firing a device's vector are
hardware acts, so these helpers touch hw objects; everything else goes
through the kernel.
"""

from __future__ import annotations

import sys
from pathlib import Path
from types import SimpleNamespace

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # explore_all
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "pci"))  # pci_testbed

from pci_testbed import TestEndpoint, machine  # noqa: E402

from vmdsim.hw.fabric import RootComplex  # noqa: E402
from vmdsim.hw.function import Bar, PciFunction  # noqa: E402
from vmdsim.hw.msi import MsiCapability  # noqa: E402
from vmdsim.hw.regs import PCI_EXP_TYPE_ENDPOINT  # noqa: E402
from vmdsim.kernel.base.devres import devres_release_all  # noqa: E402
from vmdsim.kernel.boot import boot  # noqa: E402
from vmdsim.kernel.core import Kernel  # noqa: E402
from vmdsim.kernel.irq.flags import IRQ_HANDLED  # noqa: E402
from vmdsim.kernel.locking import local_irq_restore, local_irq_save  # noqa: E402
from vmdsim.kernel.pci import pci_enable_device, pci_set_master  # noqa: E402
from vmdsim.kernel.sched import this_cpu  # noqa: E402
from vmdsim.kernel.shared import KObject, shared  # noqa: E402

ENDPOINT_SLOTS = (3, 4)


class MsiEndpoint(PciFunction):
    """An endpoint with plain MSI (64-bit, per-vector masking), ``2**log2_vectors`` vectors."""

    def __init__(self, name: str, log2_vectors: int = 2) -> None:
        super().__init__(name, 0x1234, 0x5679, 0x0C0330, bars=(Bar(0, 0x1000),),
                         interrupt_pin=1)
        self.add_pcie_capability(PCI_EXP_TYPE_ENDPOINT)
        self.msi = MsiCapability(self, log2_vectors)
        self.finalize()


def msix_machine(ncpus: int = 4, endpoints: int = 1, *, msi: bool = False) -> SimpleNamespace:
    """A root complex with ``endpoints`` MSI-X test endpoints (4 vectors each), booted.

    With ``msi``, the endpoints have plain MSI instead. The kernel-side devices
    are enabled and bus-mastering, ready for ``pci_alloc_irq_vectors``;
    ``w.eps[i]`` is the hardware, ``w.devs[i]`` the pci_dev.
    """
    rc = RootComplex(ncpus=ncpus)
    eps = []
    for i in range(endpoints):
        ep = MsiEndpoint(f"ep{i}") if msi else TestEndpoint(f"ep{i}")
        rc.root_bus.attach(ep, ENDPOINT_SLOTS[i])
        eps.append(ep)
    k = Kernel(ncpus=ncpus)
    boot(k, machine(rc, ncpus))
    devs = [next(d for d in k.pci.devices if d.bus.number == 0 and d.devfn == slot << 3)
            for slot in ENDPOINT_SLOTS[:endpoints]]

    def enable() -> None:
        for dev in devs:
            assert pci_enable_device(dev) == 0
            pci_set_master(dev)

    k.run_on(0, enable)
    return SimpleNamespace(k=k, rc=rc, eps=eps, devs=devs, dev=devs[0], ep=eps[0])


def release_devres(w: SimpleNamespace) -> None:
    """What unbinding the devices' drivers releases: their devres, newest first (since
    v6.2 the MSI data's, which removes the per-device MSI domain)."""
    for dev in w.devs:
        w.k.run_on(0, devres_release_all, dev.dev)


class Recorder:
    """A handler that records (irq, cpu, dev_id) and returns ``ret``."""

    def __init__(self, ret: int = IRQ_HANDLED) -> None:
        self.calls: list[tuple[int, int, object]] = []
        self.ret = ret

    def __call__(self, irq: int, dev_id: object) -> int:
        self.calls.append((irq, this_cpu().id, dev_id))
        return self.ret


def in_hardirq(fn, *args):
    """Run ``fn`` with interrupts off, as a hard-interrupt handler would."""
    flags = local_irq_save()
    try:
        return fn(*args)
    finally:
        local_irq_restore(flags)


class Events(KObject):
    """An event log the explorer sees: appending reads and writes one shared field."""

    log = shared()

    def __init__(self) -> None:
        self.__dict__["log"] = ()

    def add(self, what: str) -> None:
        self.log = (*self.log, what)

    def seen(self) -> tuple[str, ...]:
        return self.__dict__["log"]
