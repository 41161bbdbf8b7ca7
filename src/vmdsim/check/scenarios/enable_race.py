"""A child IRQ being enabled while its device already signals: no interrupt may be lost.

The child IRQ of queue 1 has been disabled (``disable_irq``: the VMD child
chip masks it at the device and takes it off its vector's list, as during a
controller reset). CPU0 enables it again (``enable_irq`` -> ``irq_enable``:
put it on the vector's list, *then* unmask it at the device) while the drive
completes a command at any moment: before the unmask the message waits in
the drive's pending bit and is sent by the unmask; after it, it is sent at
once. Either way the VMD vector's walk must find the child on the list, so
that once everything has run the completion has been handled. Unmasking
before the list insertion would lose it.
"""

from __future__ import annotations

from types import SimpleNamespace

from vmdsim.check.program import Program, Thread
from vmdsim.check.scenario import scenario
from vmdsim.check.scenarios.live_move import lost_check
from vmdsim.check.scenarios.worlds import device_completes, pin_vector, queue_vector, vmd_world
from vmdsim.kernel.pci.msi import pci_irq_vector

QID = 1


@scenario("enable-race", "CPU0 re-enables a child IRQ while its drive completes a command",
          options={"protocol": ("srcu", "kfree-rcu", "rfc-v3")}, expect={(): "safe"})
def enable_race(protocol: str = "srcu") -> Program:
    def setup() -> SimpleNamespace:
        w = vmd_world(protocol=protocol)
        w.drive = w.drives[0]
        w.virq = pci_irq_vector(w.drive.pdev, QID)
        pin_vector(w, queue_vector(w, w.drive, QID), 1)  # the walk runs beside the enabler
        w.k.run_on(0, w.k.irq.disable_irq, w.virq)
        return w

    def threads(w: SimpleNamespace) -> list[Thread]:
        return [(0, lambda: w.k.irq.enable_irq(w.virq), "enable_irq"),
                (None, lambda: device_completes(w.drive.hw, QID), "nvme")]

    def check(w: SimpleNamespace) -> None:
        lost_check(w)

    return Program("enable-race", setup, threads, check)
