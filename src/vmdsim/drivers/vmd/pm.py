"""System sleep: ``vmd_suspend`` frees the VMD vectors' handlers; ``vmd_resume`` restores
the remap bit (firmware may have reset it) and requests the handlers again.

The vectors, lists and child mappings stay as they are across the sleep, as
in Linux; only the handlers on the VMD's own vectors go and come back.
"""

from __future__ import annotations

from vmdsim.drivers.vmd.msi import vmd_set_msi_remapping
from vmdsim.kernel.irq.flags import IRQF_NO_THREAD
from vmdsim.kernel.pci import pci_dev, pci_get_drvdata


def vmd_suspend(pdev: pci_dev) -> int:
    vmd = pci_get_drvdata(pdev)
    kirq = pdev.k.irq
    for irqs in vmd.irqs:
        kirq.devm_free_irq(pdev.dev, irqs.virq, irqs)
    return 0


def vmd_resume(pdev: pci_dev) -> int:
    vmd = pci_get_drvdata(pdev)
    vmd_set_msi_remapping(vmd, vmd.irq_domain is not None)
    kirq = pdev.k.irq
    for irqs in vmd.irqs:
        err = kirq.devm_request_irq(pdev.dev, irqs.virq, vmd.protocol.handler,
                                    IRQF_NO_THREAD, vmd.name, irqs)
        if err:
            return err
    return 0
