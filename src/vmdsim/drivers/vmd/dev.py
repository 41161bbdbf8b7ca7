"""The driver's structures: ``struct vmd_dev``, ``vmd_irq_list``, ``vmd_irq``, and the
lookups every other module shares (``vmd_from_bus``, ``fast_vectors``,
``vmd_module_of_driver``), and the teardown steps today's remove and the RFC's
share. The module's globals (the instance IDA and the list lock)
are in :mod:`~vmdsim.drivers.vmd.module`.

As in Linux, a ``vmd_dev`` embeds its ``pci_sysdata`` (so ``vmd_from_bus`` is
``container_of(bus->sysdata)``: here the sysdata points back at its owner),
its three root-bus resources and its config lock. Each VMD vector has a
``vmd_irq_list``: the list of child IRQs it demultiplexes to, an SRCU domain
of its own, the number of child IRQs assigned (``count``) and the VMD's own
Linux IRQ number (``virq``). Each child IRQ has a ``vmd_irq``, the mapping the
review is about: list links (it *is* a ``list_head``, as Linux embeds
``node`` first), the child's IRQ number, the vector list it is on, and
whether the child enabled it.

Shared fields (what the explorer sees): a ``vmd_irq``'s ``next``/``prev``
links, ``virq``, ``irq`` and ``enabled``; a vector's list head links and
``count``; the locks; SRCU read sections. Statistics (``calls``,
``child_calls``) are plain counters the model adds for measurements: Linux
keeps none, and a race on a statistic is not a bug worth a schedule.

Where the model differs: Linux allocates the vector lists as one
``devm_kcalloc`` array; the model allocates each list from ``k.mem`` (each one
an allocation that fault injection can fail), so a stale pointer to any one
of them is caught. ``vmd->name`` is not a separate allocation.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, cast

from vmdsim.drivers.vmd.features import VMD_MEMBAR1, VMD_MEMBAR2
from vmdsim.kernel.idr import ida_free
from vmdsim.kernel.irq.irqdomain import irq_domain_remove
from vmdsim.kernel.locking import raw_spinlock_t
from vmdsim.kernel.pci import pci_sysdata
from vmdsim.kernel.pci.resource import resource
from vmdsim.kernel.rculist import list_head
from vmdsim.kernel.shared import KObject, init_private, peek, poke, shared
from vmdsim.kernel.srcu import srcu_struct

if TYPE_CHECKING:
    from vmdsim.drivers.vmd.module import vmd_module
    from vmdsim.kernel.pci.driver import pci_driver


@dataclass
class vmd_sysdata(pci_sysdata):
    """The ``pci_sysdata`` embedded in ``struct vmd_dev``; ``vmd`` stands in for
    ``container_of``."""

    vmd: Any = field(default=None, repr=False, compare=False)


class vmd_irq_list(KObject):
    """``struct vmd_irq_list``: one VMD vector's children, SRCU domain and load."""

    count = shared()

    def __init__(self, index: int, vmd: vmd_dev) -> None:
        poke(self, "count", 0)
        self.irq_list = list_head()  # embedded, as in Linux
        self.srcu = srcu_struct(f"vmd.irqs[{index}].srcu")
        self.virq = 0
        self.index = index  # Linux: irqs - vmd->irqs (pointer arithmetic)
        self.vmd = vmd
        self.cpu = -1  # model: the CPU this vector is targeted at (affinity policy)
        self.calls = 0  # model: times vmd_irq ran for this vector
        self.child_calls = 0  # model: generic_handle_irq calls it made

    def __repr__(self) -> str:
        return f"<vmd_irq_list {self.index} virq {self.virq}>"


class vmd_irq(list_head):
    """``struct vmd_irq``: the mapping of one child IRQ onto a VMD vector.

    The list links come first (``node``), so the object is its own list entry.
    """

    irq = shared()
    enabled = shared()
    virq = shared()

    def __init__(self, vmd: vmd_dev) -> None:
        super().__init__()  # INIT_LIST_HEAD(&vmdirq->node)
        init_private(self, irq=None, enabled=False, virq=0)
        self.vmd = vmd  # model: set at init, read by queries and rebalance
        self.cpu = -1  # model: the CPU the child's queue belongs to (managed affinity)
        self.fast = False  # model: counted among the fast vectors (NVMe class)

    def __repr__(self) -> str:
        irq = peek(self, "irq", None)
        idx = irq.index if irq is not None else "-"
        return f"<vmd_irq virq {peek(self, 'virq', None)} on vector {idx}>"


class vmd_dev(KObject):
    """``struct vmd_dev``: one bound VMD."""

    def __init__(self) -> None:
        self.dev: Any = None  # the VMD's pci_dev
        self.cfg_lock = raw_spinlock_t("vmd.cfg_lock")
        self.cfgbar: Any = None
        self.msix_count = 0
        self.irqs: list[vmd_irq_list] = []
        self.sysdata = vmd_sysdata(domain=0, vmd=self)
        self.resources = [resource(), resource(), resource()]
        self.irq_domain: Any = None
        self.parent_domain: Any = None  # the RFC's linear parent (rfc_v3.py), if any
        self.bus: Any = None
        self.busn_start = 0
        self.first_vec = 0
        self.name = ""
        self.instance = -1
        # Model: module parameters this instance runs with, and what probe found.
        self.module: Any = None
        self.features = 0
        self.protocol: Any = None
        self.policy: Any = None
        self.remap_saved: int | None = None  # VMCONFIG remap bit before probe changed it
        self.children: list[vmd_irq] = []  # model: every child mapping, under list_lock
        self.moves = 0  # model: child IRQs moved between vectors by the rebalancer

    def __repr__(self) -> str:
        return f"<vmd_dev {self.name or '?'} domain {self.sysdata.domain:04x}>"


def vmd_from_bus(bus: Any) -> vmd_dev:
    """``container_of(bus->sysdata, struct vmd_dev, sysdata)``."""
    return bus.sysdata.vmd


def vmd_attach_resources(vmd: vmd_dev) -> None:
    """Hang the domain's MEMBAR windows under the VMD's BARs in the resource tree."""
    vmd.dev.resource[VMD_MEMBAR1].child = vmd.resources[1]
    vmd.dev.resource[VMD_MEMBAR2].child = vmd.resources[2]


def vmd_detach_resources(vmd: vmd_dev) -> None:
    vmd.dev.resource[VMD_MEMBAR1].child = None
    vmd.dev.resource[VMD_MEMBAR2].child = None


def vmd_free_msi_domain(vmd: vmd_dev) -> None:
    """Remove the VMD MSI domain and free its fwnode (both removes do this)."""
    if vmd.irq_domain is not None:
        fn = vmd.irq_domain.fwnode
        irq_domain_remove(vmd.irq_domain)
        vmd.dev.k.irq.irq_domain_free_fwnode(fn)
        vmd.irq_domain = None


def vmd_release_instance(vmd: vmd_dev) -> None:
    """Give back the instance number and forget the VMD (the end of both removes)."""
    ida_free(vmd.module.instance_ida, vmd.instance)
    if vmd in vmd.module.devices:
        vmd.module.devices.remove(vmd)


def index_from_irqs(vmd: vmd_dev, irqs: vmd_irq_list) -> int:
    return irqs.index


def fast_vectors(vmd: vmd_dev) -> list[vmd_irq_list]:
    """The vectors NVMe children may use: those after ``first_vec``."""
    return vmd.irqs[vmd.first_vec + 1:]


def vmd_module_of_driver(drv: pci_driver | None) -> vmd_module:
    """The loaded module whose ``pci_driver`` ``drv`` is (``vmd_init`` set ``drv.owner``);
    ``drv`` is the driver a device is being probed or removed by, never None there."""
    assert drv is not None
    return cast("vmd_module", drv.owner)
