"""The ``Kernel``: one object that all of one kernel's state hangs off.

Subsystems are attributes with Linux's names on their methods:

============  ===========================================================
``k.sched``   the CPUs and the scheduler (free-running unless an explorer
              installs a controlled one)
``k.mem``     the slab allocator with KASAN/kmemleak checks
``k.rcu``     RCU state (readers, grace periods, callbacks)
``k.io``      the CPU's view of physical memory, set by ``boot``
``k.pages``   free pages of RAM for coherent DMA buffers, set by ``boot``
``k.irq``     the IRQ core: descriptors, chips, domains, x86 vectors
``k.pci``     the PCI core, created on first use
============  ===========================================================

Several kernels can live in one process; nothing is global except the
pointer to the context that is running right now.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any

from vmdsim.kernel.irq import IrqSubsystem
from vmdsim.kernel.mem import Allocator
from vmdsim.kernel.rcu import Rcu
from vmdsim.kernel.sched import Context, Scheduler


class Kernel:
    """One running kernel: ``Kernel(ncpus=4)``."""

    def __init__(self, ncpus: int = 4) -> None:
        self.ncpus = ncpus
        self.sched = Scheduler(ncpus)
        self.mem = Allocator(self)
        self.rcu = Rcu()
        self.sched.rcu = self.rcu
        self.sched.quiescent_hooks.append(self.rcu.process_callbacks)
        self.io: Any = None
        self.pages: Any = None  # kernel.dma.PageAllocator over the machine's RAM, set by boot
        self.irq = IrqSubsystem(self)

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
