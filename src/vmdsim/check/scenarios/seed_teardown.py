"""The race in the seed's review: a child IRQ torn down while the VMD demux walks to it.

CPU0 unbinds the NVMe driver from a drive behind the VMD (``nvme_remove``:
``free_irq`` -> the child is disabled, masked and taken off its vector's
list -> ``synchronize_irq`` -> ``pci_free_irq_vectors`` -> the VMD MSI
domain frees the mapping -> the IRQ core frees the descriptor). Meanwhile
the drive completes a command on that queue, and the VMD vector it is
multiplexed onto is taken on CPU1 (its affinity is set there, as an
administrator would with ``/proc/irq/N/smp_affinity``): the demux handler
walks the vector's list and calls ``generic_handle_irq`` on each child.

Known verdicts: ``rfc-v3`` (RCU read side, mapping freed at once) uses the
freed mapping; ``kfree-rcu`` with descriptors freed at once uses the freed
descriptor — the seed's KABOOM; with descriptors freed after a grace period
it is safe; ``synchronize-rcu`` (v4.9's fix, ee6ee49fd09f) and ``srcu``
(Linux today) are safe either way.
"""

from __future__ import annotations

from types import SimpleNamespace

from vmdsim.check.program import Program, Thread
from vmdsim.check.scenario import scenario
from vmdsim.check.scenarios.worlds import (
    device_completes,
    pin_vector,
    queue_vector,
    vmd_world,
)
from vmdsim.kernel.pci import device_release_driver

QID = 1


@scenario("seed-teardown", "CPU0 unbinds an NVMe child while CPU1 takes its VMD vector",
          options={"protocol": ("srcu", "kfree-rcu", "synchronize-rcu", "rfc-v3",
                               "spinlock"),
                   "desc_free": ("immediate", "rcu")},
          expect={"spinlock": "deadlock",
                  ("rfc-v3", "immediate"): "use-after-free",
                  ("rfc-v3", "rcu"): "use-after-free",
                  ("kfree-rcu", "immediate"): "use-after-free",
                  ("kfree-rcu", "rcu"): "safe",
                  "synchronize-rcu": "safe",
                  "srcu": "safe"})
def seed_teardown(protocol: str = "srcu", desc_free: str = "immediate") -> Program:
    def setup() -> SimpleNamespace:
        w = vmd_world(protocol=protocol, desc_free=desc_free)
        w.drive = w.drives[0]
        pin_vector(w, queue_vector(w, w.drive, QID), 1)
        return w

    def threads(w: SimpleNamespace) -> list[Thread]:
        return [(0, lambda: device_release_driver(w.drive.pdev), "unbind"),
                (None, lambda: device_completes(w.drive.hw, QID), "nvme")]

    def check(w: SimpleNamespace) -> None:
        assert not w.k.mem.leaks("nvme"), "the NVMe driver left memory behind"

    return Program("seed-teardown", setup, threads, check)
