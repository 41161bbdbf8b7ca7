"""``struct device`` (``drivers/base/core.c``): what every device the kernel knows embeds.

``struct device`` is embedded in ``pci_dev``, ``pci_bus``, ``pci_host_bridge``
and the PCIe port services' ``pcie_device`` (``.dev`` / ``.device`` there). It
carries the driver's private data (``dev_get_drvdata``), the MSI domain the IRQ
code attaches, its DMA masks, its sysfs links and the list of managed resources
(:mod:`vmdsim.kernel.base.devres`).

Simplifications: no kobjects, sysfs or reference counting; a device lives
until its owner frees it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from vmdsim.kernel.base.devres import devres
    from vmdsim.kernel.core import Kernel


class device:
    """``struct device`` (embedded; not separately allocated)."""

    __slots__ = ("k", "init_name", "parent", "driver_data", "devres_head", "msi_domain",
                 "links", "dma_mask", "coherent_dma_mask")

    def __init__(self, k: Kernel, name: str, parent: device | None) -> None:
        self.k = k
        self.init_name = name
        self.parent = parent
        self.driver_data: Any = None
        self.devres_head: list[devres] = []
        self.msi_domain: Any = None
        self.links: dict[str, Any] = {}  # sysfs_create_link targets, by name
        self.dma_mask = 0xFFFFFFFF
        self.coherent_dma_mask = 0xFFFFFFFF

    def __repr__(self) -> str:
        return f"<device {self.init_name}>"


# kobject actions (include/linux/kobject.h) user space hears of
KOBJ_ADD, KOBJ_REMOVE, KOBJ_BIND, KOBJ_UNBIND = "add", "remove", "bind", "unbind"


def kobject_uevent(dev: device, action: str) -> None:
    """Tell user space (udev, over netlink) that ``action`` happened to ``dev``. The
    model's user space is ``k.uevent_listeners``: each is called as the event is sent,
    the earliest a real listener could run (an ordering the kernel must survive)."""
    for listener in list(dev.k.uevent_listeners):
        listener(action, dev)


def dev_name(dev: device) -> str:
    return dev.init_name


def dev_get_drvdata(dev: device) -> Any:
    return dev.driver_data


def dev_set_drvdata(dev: device, data: Any) -> None:
    dev.driver_data = data


def dev_set_msi_domain(dev: device, domain: Any) -> None:
    dev.msi_domain = domain


def dev_get_msi_domain(dev: device) -> Any:
    return dev.msi_domain


def sysfs_create_link(dev: device, target: Any, name: str) -> int:
    """Record a named link from ``dev`` to ``target`` (the VMD's ``domain`` link)."""
    if name in dev.links:
        return -17  # -EEXIST
    dev.links[name] = target
    return 0


def sysfs_remove_link(dev: device, name: str) -> None:
    dev.links.pop(name, None)
