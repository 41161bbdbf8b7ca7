"""Moving a live child IRQ between VMD vectors while its drive completes a command.

The ``rebalance`` policy's move (``vmd_move_irq``): mask the child at its
device, take it off the old vector's list, wait for the old vector's
readers, repoint it, put it on the new list, rewrite its message, unmask,
and replay the new vector. CPU0 moves queue 1's child to another fast
vector while the drive posts a completion at any moment of it. The
property: the completion is handled — at the end nothing the drive posted
is still unconsumed. A step order that unmasks before relinking, or skips
the replay, loses an interrupt here.
"""

from __future__ import annotations

from types import SimpleNamespace

from vmdsim.check.program import Program, Thread
from vmdsim.check.scenario import scenario
from vmdsim.check.scenarios.worlds import device_completes, pin_vector, vmd_world
from vmdsim.drivers.vmd.policies import fast_vectors
from vmdsim.drivers.vmd.rebalance import vmd_move_irq
from vmdsim.errors import Violation
from vmdsim.kernel.locking import mutex_lock, mutex_unlock
from vmdsim.kernel.pci.msi import pci_irq_vector
from vmdsim.kernel.shared import peek

QID = 1


def lost_check(w: SimpleNamespace, qid: int = QID) -> None:
    """No completion the drive posted may be left unconsumed once everything has run."""
    left = w.drive.hw.pending(qid)
    if left:
        raise Violation("lost-interrupt", f"{w.drive.dev.name} queue {qid}: {left} posted "
                        "completion(s) never handled: their interrupt was lost")


@scenario("live-move", "CPU0 moves a live child IRQ to another vector while its drive "
          "completes a command", options={"protocol": ("srcu", "kfree-rcu", "rfc-v3")},
          expect={(): "safe"})
def live_move(protocol: str = "srcu") -> Program:
    def setup() -> SimpleNamespace:
        w = vmd_world(protocol=protocol, policy="rebalance", vectors=4)
        w.drive = w.drives[0]
        virq = pci_irq_vector(w.drive.pdev, QID)
        w.child = next(c for c in w.vmd.children if c.virq == virq)
        w.dst = next(v for v in fast_vectors(w.vmd) if v is not w.child.irq)
        pin_vector(w, w.child.irq, 1)  # both walks run beside the moving CPU
        pin_vector(w, w.dst, 1)
        return w

    def move(w: SimpleNamespace) -> None:
        m = w.vmd.irq_domain.root.mutex
        mutex_lock(m)
        vmd_move_irq(w.vmd, w.child, w.dst)
        mutex_unlock(m)

    def threads(w: SimpleNamespace) -> list[Thread]:
        return [(0, lambda: move(w), "move"),
                (None, lambda: device_completes(w.drive.hw, QID), "nvme")]

    def check(w: SimpleNamespace) -> None:
        if peek(w.child, "irq") is not w.dst:
            raise Violation("assertion", "the child did not end on the new vector")
        lost_check(w)

    return Program("live-move", setup, threads, check)
