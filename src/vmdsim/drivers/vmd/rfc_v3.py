"""The RFC v3's code (Keith Busch, "[RFC PATCHv3 3/4] x86/pci: Initial commit for new
VMD device driver", October 2015) where the review found fault with it, as options of
today's driver (module parameters ``handler``, ``remove``, ``parent``; ``module.py``).

What the model has of the RFC is what the review quotes (the seed,
Thomas Gleixner's reply of 3 November 2015); everything else is today's driver.

``vmd_flow_handler`` (``handler=chained``)
    each VMD vector gets a chained flow handler
    (``irq_set_chained_handler_and_data``) in place of a requested action:
    ``chained_irq_enter``, walk the vector's list (as the instance's teardown
    protocol walks it), ``chained_irq_exit``. A chained handler is no
    ``irqaction``: ``free_irq`` never sees it and devres does not release it,
    so only an explicit ``irq_set_chained_handler_and_data(irq, NULL, NULL)``
    uninstalls it.
``vmd_remove`` (``remove=rfc-v3``)
    the RFC's remove: clear drvdata, remove the ``domain`` link, stop and
    remove the root bus, remove the MSI domain. Nothing uninstalls the chained
    handlers ("What tears down the chained handlers and the MSIx entries?"):
    devres then frees the vector lists with the handlers still pointing at
    them, and ``pcim_release`` frees the VMD's MSI-X vectors with handlers
    installed. A VMD vector taken in between (one latched at a CPU before its
    child went away) runs the chained handler on freed memory. The RFC had
    neither the instance IDA nor the resource attach of today's probe; the
    model's RFC remove undoes those as today's does, so that only what the
    review is about differs.
``vmd_create_parent_domain`` (``parent=linear``)
    the RFC's ``irq_domain_add_linear(NULL, count, domain_ops, dev)`` under
    the MSI domain. The review: "vmd_irqdomain can only hand out 'count'
    vectors ... But that parent limitation does not matter simply because your
    msi_irqdomain does not follow down the hierarchy in the allocation path ...
    It's just wasting memory". The RFC's ``domain_ops`` are not quoted; the
    model's parent allocates nothing and checks nothing, which is what the
    review says happened: the domain has a level there (one ``irq_data`` per
    child IRQ, a reverse map of ``count`` entries) that no lookup uses, and it
    maps more child IRQs than its size (``vmdsim irq-domains``). The RFC kept
    the parent only in a local variable of its in-kernel helper and its
    remove removes only ``vmd->irq_domain``: the model's RFC remove leaves the
    parent behind (kmemleak reports it), today's removes both.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from vmdsim.drivers.vmd.dev import (
    vmd_detach_resources,
    vmd_dev,
    vmd_free_msi_domain,
    vmd_irq_list,
    vmd_release_instance,
)
from vmdsim.kernel.irq.flow import chained_irq_enter, chained_irq_exit
from vmdsim.kernel.irq.irqdesc import (
    irq_desc_get_chip,
    irq_desc_get_handler_data,
    irq_desc_get_irq,
)
from vmdsim.kernel.irq.irqdomain import (
    irq_domain,
    irq_domain_create_hierarchy,
    irq_domain_ops,
    irq_domain_remove,
)
from vmdsim.kernel.pci import (
    pci_get_drvdata,
    pci_remove_root_bus,
    pci_set_drvdata,
    pci_stop_root_bus,
    sysfs_remove_link,
)

if TYPE_CHECKING:
    from vmdsim.kernel.irq.irqdesc import irq_desc
    from vmdsim.kernel.pci.pci_h import pci_dev


def vmd_flow_handler(desc: irq_desc) -> None:
    """The RFC's chained demultiplexer of one VMD vector."""
    chip = irq_desc_get_chip(desc)
    irqs: vmd_irq_list = irq_desc_get_handler_data(desc)
    chained_irq_enter(chip, desc)
    irqs.vmd.protocol.handler(irq_desc_get_irq(desc), irqs)
    chained_irq_exit(chip, desc)


def vmd_remove(dev: pci_dev) -> None:
    """The RFC v3's ``vmd_remove``: the chained handlers stay installed."""
    vmd: vmd_dev = pci_get_drvdata(dev)
    pci_set_drvdata(dev, None)
    sysfs_remove_link(vmd.dev.dev, "domain")
    pci_stop_root_bus(vmd.bus)
    pci_remove_root_bus(vmd.bus)
    vmd.bus = None
    # vmd_teardown_dma_ops(vmd): the model has no DMA ops to restore.
    vmd_free_msi_domain(vmd)  # irq_domain_remove(vmd->irq_domain); the parent stays
    # Model: what today's probe added and the RFC did not have, undone as today.
    vmd_detach_resources(vmd)
    vmd_release_instance(vmd)


# -- the linear parent -----------------------------------------------------------------------
def rfc_parent_domain_alloc(domain: irq_domain, virq: int, nr_irqs: int, arg: Any) -> int:
    """Model-only: the parent level of a child IRQ allocates nothing (see above)."""
    return 0


def rfc_parent_domain_free(domain: irq_domain, virq: int, nr_irqs: int) -> None:
    """Model-only: nothing was allocated at this level."""


# Static, as a driver's ops table is.
vmd_parent_domain_ops = irq_domain_ops(alloc=rfc_parent_domain_alloc,
                                       free=rfc_parent_domain_free)


def vmd_create_parent_domain(vmd: vmd_dev) -> irq_domain | None:
    """The RFC's ``irq_domain_add_linear(NULL, count, domain_ops, dev)``: a linear domain
    of the VMD's vector count (no fwnode: Linux names it ``unknown-N``)."""
    return irq_domain_create_hierarchy(None, 0, vmd.msix_count, None, vmd_parent_domain_ops,
                                       vmd, k=vmd.dev.k, owner="vmd")


def vmd_remove_parent_domain(vmd: vmd_dev) -> None:
    """Today's remove on an RFC parent: remove it after the MSI domain above it."""
    if vmd.parent_domain is not None:
        irq_domain_remove(vmd.parent_domain)
        vmd.parent_domain = None
