"""30ce03503813 "x86/PCI/VMD: Use untracked irq handler".

Every child IRQ on a VMD vector runs each time the vector fires: the VMD
cannot say which child sent the message. A child whose device had nothing to
do returns IRQ_NONE, and with ``handle_simple_irq`` (v4.5-v4.7) every one of those
is counted by the spurious-interrupt detector (``note_interrupt``): once 99,900
of 100,000 interrupts go unhandled, the child is reported ("nobody cared")
and disabled — typically an NVMe admin queue sharing a vector with a busy I/O
queue, which then never sees its completions. The fix installs
``handle_untracked_irq``, which runs the actions without that accounting.

Before the fix: ``vmd_msi_init`` as v4.5-v4.7 had it, with ``handle_simple_irq``
(in today's terms: the vector comes from the instance's policy).
"""

from __future__ import annotations

from typing import Any

from vmdsim.check.scenarios.worlds import small_topology
from vmdsim.drivers.vmd.dev import vmd_from_bus, vmd_irq
from vmdsim.drivers.vmd.msi import child_cpu, child_is_fast, vmd_next_irq
from vmdsim.history.corpus import Finding, Regression, Side
from vmdsim.history.probes import booted, logged
from vmdsim.kernel.errno import ENOMEM
from vmdsim.kernel.irq.flow import handle_simple_irq
from vmdsim.kernel.irq.irqdomain import irq_domain_set_info
from vmdsim.kernel.pci.msi import msi_desc_to_pci_dev
from vmdsim.kernel.rculist import INIT_LIST_HEAD
from vmdsim.sim.workload import Load, run_load
from vmdsim.variants import variant

INTERRUPTS = 100_000 + 10  # one spurious-detector window, and a little


@variant("vmdsim.drivers.vmd.msi.vmd_msi_init")
def vmd_msi_init(domain: Any, info: Any, virq: int, hwirq: int, arg: Any) -> int:
    """v4.5-v4.7: the child IRQ gets ``handle_simple_irq``."""
    desc = arg.desc
    pdev = msi_desc_to_pci_dev(desc)
    vmd = vmd_from_bus(pdev.bus)
    vmdirq = vmd.dev.k.mem.kzalloc(vmd_irq, vmd, owner="vmd")
    if vmdirq is None:
        return -ENOMEM
    INIT_LIST_HEAD(vmdirq)
    vmdirq.fast = child_is_fast(desc)
    vmdirq.cpu = child_cpu(desc, hwirq)
    vmdirq.irq = vmd_next_irq(vmd, desc, virq, vmdirq)
    vmdirq.virq = virq
    irq_domain_set_info(domain, virq, vmdirq.irq.virq, info.chip, vmdirq,
                        handle_simple_irq, vmd, None)
    return 0


def _shared_vector_load() -> Finding:
    """A drive's admin queue and its I/O queue share the one fast vector of a 2-vector VMD;
    100,010 I/O completions: no child IRQ may be disabled as spurious."""
    s = booted(small_topology(vectors=2), "<untracked-irq>")
    run_load(s, Load(rate=2000.0, duration_ms=1e9, interrupts=INTERRUPTS))
    found = logged(s, "nobody cared", "Disabling IRQ")
    if found:
        return Finding("nobody-cared", "; ".join(found))
    return Finding("clean", f"{INTERRUPTS} interrupts on a shared vector, no IRQ disabled")


ENTRIES = [
    Regression(
        "untracked-irq", "30ce03503813", "x86/PCI/VMD: Use untracked irq handler", "v4.8",
        "100,000 interrupts on a vector shared by a busy and an idle child disable no child "
        "IRQ (\"nobody cared\")", _shared_vector_load,
        Side("v4.5-v4.7: handle_simple_irq", variants=(vmd_msi_init,)),
        Side("handle_untracked_irq (Linux since the fix)"),
        note="the model counts every unhandled interrupt; Linux forgives one that comes "
             "more than HZ/10 after the previous, which a busy vector never does"),
]
