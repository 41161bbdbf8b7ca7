"""The review's last question: "What tears down the chained handlers and the MSIx entries?"

CPU0 unbinds the vmd driver from the VMD (``vmd_remove``: the NVMe child is
unbound and removed with the domain, then devres releases the VMD's
handlers, SRCU structures, vector lists and MSI-X vectors). Meanwhile the
drive completes a command on queue 1 at any moment, and the VMD vector it is
multiplexed onto is taken on CPU1: before the drive is gone the walk finds
it; a vector latched at CPU1 is taken whenever the schedule lets it, even
after the child is gone.

Options: ``handler`` (``request-irq``, today's; ``chained``, the RFC's
chained flow handler) and ``remove`` (``linux``, today's; ``rfc-v3``, the
RFC's, which uninstalls no chained handler). Known verdicts:

- ``chained`` with the RFC's remove: ``irq-misuse`` in the very first
  schedule: devres frees the vector lists under the installed handlers, then
  frees the MSI-X vectors with the handlers installed. A VMD vector taken
  in between runs the handler on the freed list (``use-after-free``; shown
  deterministically by ``tests/drivers/vmd/test_vmd_rfc_v3.py``).
- every other combination, today's driver included:
  ``null-pointer-dereference``, a window of the generic IRQ teardown rather
  than of the VMD driver (``docs/findings.md``): CPU1 read the vector's
  descriptor from ``vector_irq`` before ``free_irq`` shut it down, and is
  stalled (an NMI, an SMI, a preempted vCPU) before it takes
  ``desc->lock`` until the vector's hierarchy is freed; its flow handler
  then follows the parent ``irq_data`` that ``irq_domain_free_irqs`` has
  cleared (``irq_chip_ack_parent``), or, for a chained handler, calls the
  ``irq_mask`` of the ``no_irq_chip`` the descriptor was reset to. Uninstalling
  chained handlers is no protection: nothing waits for a chained handler
  (``synchronize_irq`` waits only for actions).
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


@scenario("vmd-remove", "CPU0 unbinds the VMD driver while a drive behind it completes",
          options={"handler": ("request-irq", "chained"), "remove": ("linux", "rfc-v3")},
          expect={("chained", "rfc-v3"): "irq-misuse",
                  ("chained", "linux"): "null-pointer-dereference",
                  "request-irq": "null-pointer-dereference"})
def vmd_remove(handler: str = "request-irq", remove: str = "linux") -> Program:
    def setup() -> SimpleNamespace:
        w = vmd_world(vmd_options={"handler": handler, "remove": remove})
        w.drive = w.drives[0]
        pin_vector(w, queue_vector(w, w.drive, QID), 1)
        return w

    def threads(w: SimpleNamespace) -> list[Thread]:
        return [(0, lambda: device_release_driver(w.vmd.dev), "unbind"),
                (None, lambda: device_completes(w.drive.hw, QID), "nvme")]

    def check(w: SimpleNamespace) -> None:
        assert not w.k.mem.leaks("nvme"), "the NVMe driver left memory behind"
        assert not w.k.mem.leaks("vmd"), "the vmd driver left memory behind"

    return Program("vmd-remove", setup, threads, check)
