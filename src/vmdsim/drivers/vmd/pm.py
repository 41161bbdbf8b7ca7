"""System sleep: ``vmd_suspend`` frees the VMD vectors' handlers; ``vmd_resume`` restores
the remap bit (firmware may have reset it) and requests the handlers again.

The vectors, lists and child mappings stay as they are across the sleep, as
in Linux; only the handlers on the VMD's own vectors go and come back. The
RFC's chained handlers (``rfc_v3.py``; the RFC had no power management) are
not requested actions and stay installed across the sleep.
"""

from __future__ import annotations

from vmdsim.drivers.vmd.msi import vmd_set_msi_remapping
from vmdsim.kernel.irq.flags import IRQF_NO_THREAD
from vmdsim.kernel.pci import pci_dev, pci_get_drvdata


def vmd_suspend(pdev: pci_dev) -> int:
    vmd = pci_get_drvdata(pdev)
    if vmd.module.handler == "chained":
        return 0
    kirq = pdev.k.irq
    for irqs in vmd.irqs:
        kirq.devm_free_irq(pdev.dev, irqs.virq, irqs)
    return 0


def vmd_resume(pdev: pci_dev) -> int:
    vmd = pci_get_drvdata(pdev)
    vmd_set_msi_remapping(vmd, vmd.irq_domain is not None)
    if vmd.module.handler == "chained":
        return 0
    kirq = pdev.k.irq
    for irqs in vmd.irqs:
        err = kirq.devm_request_irq(pdev.dev, irqs.virq, vmd.protocol.handler,
                                    IRQF_NO_THREAD, vmd.name, irqs)
        if err:
            return err
    return 0
