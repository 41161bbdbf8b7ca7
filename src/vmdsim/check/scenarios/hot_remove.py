"""A drive pulled from its slot while it completes a command.

A person pulls the card from a hot-plug root port behind the VMD; the port
signals the event (its MSI, remapped by the VMD onto the slow vector);
pciehp's handler queues the slot's work, which removes the device: the NVMe
driver's remove frees its queue IRQs through the VMD MSI domain. Meanwhile
the drive completes a command on queue 1 at any moment — before it is
pulled (the VMD vector is taken on CPU1 and the demux walks to the queue),
or after (its message goes nowhere). In every schedule: no freed memory is
touched, no handler runs after its ``free_irq`` returned, nothing
deadlocks, and once everything has run the NVMe driver holds nothing — with
``srcu`` and ``kfree-rcu``; ``rfc-v3`` frees the mapping under the walk.

The whole hot-plug path (port interrupt, pciehp's deferred work, device
removal, NVMe teardown) makes tens of thousands of traces (57,168 under
``srcu``): exhaustive DPOR takes about half an hour on one core;
``--strategy pct`` finds the rfc-v3 bug in a few dozen runs.
"""

from __future__ import annotations

from types import SimpleNamespace

from vmdsim.check.program import Program, Thread
from vmdsim.check.scenario import scenario
from vmdsim.check.scenarios.worlds import (
    DEVICE_ACTS,
    device_completes,
    pin_vector,
    queue_vector,
    vmd_world,
)
from vmdsim.drivers.pcieport.portdrv import pcie_portdrv_init
from vmdsim.hw.rootport import RootPort
from vmdsim.kernel.shared import READ, sched_point

QID = 1


def pull(port: RootPort) -> None:
    """A person pulls the card: presence and link drop, the port signals the change. The
    card's registers vanish and the port's slot status changes in one act, which the
    hardware models report register by register (``hw/observe.py``)."""
    sched_point(DEVICE_ACTS, port.name, READ)
    port.unpopulate()


@scenario("hot-remove", "a drive is pulled from its hot-plug slot while it completes a command",
          options={"protocol": ("srcu", "kfree-rcu", "rfc-v3")},
          expect={"rfc-v3": "use-after-free", "kfree-rcu": "safe", "srcu": "safe"})
def hot_remove(protocol: str = "srcu") -> Program:
    def setup() -> SimpleNamespace:
        w = vmd_world(protocol=protocol, hotplug=True, ports=pcie_portdrv_init)
        w.drive = w.drives[0]
        pin_vector(w, queue_vector(w, w.drive, QID), 1)
        w.port = w.m.root_ports[0]
        return w

    def threads(w: SimpleNamespace) -> list[Thread]:
        return [(None, lambda: pull(w.port), "pull"),
                (None, lambda: device_completes(w.drive.hw, QID), "nvme")]

    def check(w: SimpleNamespace) -> None:
        assert not w.k.mem.leaks("nvme"), "the NVMe driver left memory behind"
        assert w.port.card is None

    return Program("hot-remove", setup, threads, check)



