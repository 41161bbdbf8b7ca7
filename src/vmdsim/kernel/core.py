"""The ``Kernel``: one object that all of one kernel's state hangs off.

Every subsystem exists from the moment the kernel is created (Linux sets them
up in ``start_kernel`` and the early initcalls, before any driver runs):

===============  ==========================================================
``k.sched``      the CPUs and the scheduler (free-running unless an explorer
                 installs a controlled one)
``k.mem``        the slab allocator with KASAN/kmemleak checks
``k.rcu``        RCU state (readers, grace periods, callbacks)
``k.irq``        the IRQ core: descriptors, chips, domains, x86 vectors and
                 the default PCI/MSI domain (``arch_early_irq_init``,
                 ``pci_arch_init``)
``k.pci``        the PCI core (``pci_driver_init``, postcore_initcall)
``k.system_wq``  the system workqueue (``workqueue_init_early``)
``k.log``        the kernel log (``printk``), which ``dmesg`` reads
``k.io``         the CPU's view of physical memory, attached by ``boot``
``k.pages``      free pages of RAM for coherent DMA buffers, attached by ``boot``
===============  ==========================================================

A driver's own global state (what Linux keeps in the module's static
variables: NVMe's instance IDA, the PCIe port bus) is created by the driver
when it is first used and found with :meth:`Kernel.module_state`.

Several kernels can live in one process; nothing is global except the
pointer to the context that is running right now.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any, TypeVar

from vmdsim.errors import VmdsimError
from vmdsim.kernel.dma import PageAllocator
from vmdsim.kernel.io import IoSpace
from vmdsim.kernel.irq.subsys import IrqSubsystem
from vmdsim.kernel.mem import Allocator
from vmdsim.kernel.pci.subsys import PciSubsystem
from vmdsim.kernel.printk import printk_ringbuffer
from vmdsim.kernel.rcu import Rcu
from vmdsim.kernel.sched import HARNESS, Context, Scheduler, reset_harness
from vmdsim.kernel.workqueue import workqueue_struct

M = TypeVar("M")


class NotBooted(VmdsimError):
    """The kernel has no machine yet: ``k.io`` and ``k.pages`` exist only after ``boot``."""


class Kernel:
    """One running kernel: ``Kernel(ncpus=4)``."""

    def __init__(self, ncpus: int = 4) -> None:
        self.ncpus = ncpus
        reset_harness()  # what a failed earlier run left held is not this kernel's
        HARNESS.cpu.sched.rcu = Rcu()  # nor its harness read-side sections
        self.sched: Scheduler = Scheduler(ncpus)
        self.mem = Allocator(self)
        self.rcu = Rcu()
        self.sched.rcu = self.rcu
        self.sched.quiescent_hooks.append(self.rcu.process_callbacks)
        self._io: IoSpace | None = None
        self._pages: PageAllocator | None = None
        self.log = printk_ringbuffer()  # the kernel log, which dmesg reads
        # User space listening to uevents (kobject_uevent): callables (action, device).
        self.uevent_listeners: list[Callable[[str, Any], None]] = []
        self.irq = IrqSubsystem(self)
        self.pci = PciSubsystem(self)
        self.system_wq = workqueue_struct(self)
        self._modules: dict[Callable[[Kernel], Any], Any] = {}

    # -- what boot attaches ---------------------------------------------------------------
    @property
    def booted(self) -> bool:
        """True once ``boot`` has attached the kernel to a machine."""
        return self._io is not None

    @property
    def io(self) -> IoSpace:
        if self._io is None:
            raise NotBooted("kernel: not booted on a machine (no I/O space yet)")
        return self._io

    @property
    def pages(self) -> PageAllocator:
        if self._pages is None:
            raise NotBooted("kernel: not booted on a machine (no RAM for DMA yet)")
        return self._pages

    def attach_machine(self, io: IoSpace | None, pages: PageAllocator | None) -> None:
        """Attach (boot) or detach (a boot that failed and unwound) the machine's memory."""
        self._io = io
        self._pages = pages

    # -- driver modules ---------------------------------------------------------------------
    def module_state(self, init: Callable[[Kernel], M]) -> M:
        """A driver's global state: ``init(k)`` on first use (its module_init), then the same
        object. ``init`` is the state's class, which also keys it."""
        state = self._modules.get(init)
        if state is None:
            state = self._modules[init] = init(self)
        return state

    # -- running code -----------------------------------------------------------------------
    def run_on(self, cpu: int, fn: Callable[..., Any], *args: Any,
               name: str | None = None) -> Any:
        """Run ``fn(*args)`` as a task on CPU ``cpu`` (free-running) and return its result."""
        return self.sched.run_on(cpu, fn, *args, name=name)

    def on_cpu(self, cpu: int, name: str = "task") -> AbstractContextManager[Context]:
        """``with k.on_cpu(0):`` — the body runs as a task on that CPU."""
        return self.sched.task(cpu, name)

    def raise_irq(self, cpu: int, vector: int) -> None:
        """The interrupt controller's sink: ``vector`` requested on ``cpu``."""
        self.sched.raise_irq(cpu, vector)

    def install_scheduler(self, sched: Scheduler) -> None:
        """Replace the scheduler (the explorer installs a controlled one after setup)."""
        if hasattr(sched, "adopt"):
            sched.adopt(self.sched)
        self.sched = sched
