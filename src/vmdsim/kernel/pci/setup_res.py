"""One resource at a time (``drivers/pci/setup-res.c`` and x86's ``pcibios_align_resource``).

``pci_claim_resource`` accepts an address firmware already programmed (if a
window of the bus above contains it and nothing else holds it);
``pci_assign_resource`` finds room in the bus's windows and, for a BAR,
writes the address to the device (``pci_update_resource``, decode off while
a 64-bit BAR is half written).
"""

from __future__ import annotations

from vmdsim.hw.regs import (
    PCI_BASE_ADDRESS_0,
    PCI_BASE_ADDRESS_IO_MASK,
    PCI_BASE_ADDRESS_MEM_MASK,
    PCI_COMMAND,
    PCI_COMMAND_MEMORY,
)
from vmdsim.kernel.errno import EBUSY, EINVAL
from vmdsim.kernel.pci.access import (
    pci_read_config_dword,
    pci_read_config_word,
    pci_write_config_dword,
    pci_write_config_word,
)
from vmdsim.kernel.pci.bus import pci_bus_alloc_resource, pcibios_resource_to_bus
from vmdsim.kernel.pci.pci_h import (
    PCI_BRIDGE_RESOURCE_END,
    PCI_BRIDGE_RESOURCES,
    PCI_STD_RESOURCE_END,
    pci_bus_for_each_resource,
    pci_dev,
)
from vmdsim.kernel.pci.resource import (
    IORESOURCE_IO,
    IORESOURCE_MEM,
    IORESOURCE_MEM_64,
    IORESOURCE_PCI_FIXED,
    IORESOURCE_PREFETCH,
    IORESOURCE_SIZEALIGN,
    IORESOURCE_STARTALIGN,
    IORESOURCE_UNSET,
    _span,
    format_resource,
    request_resource_conflict,
    resource,
    resource_contains,
    resource_size,
)
from vmdsim.kernel.pci.subsys import pci_err, pci_info

PCI_REGION_FLAG_MASK = 0x0F  # the BAR's low bits, kept in res.flags
PCIBIOS_MIN_MEM = 0  # x86: pci_mem_start; the host windows already lie above RAM
BIOS_END = 0x100000  # x86: the low 1 MiB belongs to legacy ISA


def resource_name(dev: pci_dev, i: int) -> str:
    if i <= PCI_STD_RESOURCE_END:
        return f"BAR {i}"
    if PCI_BRIDGE_RESOURCES <= i <= PCI_BRIDGE_RESOURCE_END:
        return "bridge window"
    return f"resource {i}"


def pcibios_align_resource(data: object, res: _span, size: int, align: int) -> int:
    """x86: keep memory allocations out of the legacy low megabyte."""
    start = res.start
    if res.flags & IORESOURCE_MEM and start < BIOS_END:
        start = BIOS_END
    return start


def pci_resource_alignment(dev: pci_dev, res: resource) -> int:
    """A bridge window keeps its alignment in ``start``; a BAR is aligned to its size."""
    if res.flags & IORESOURCE_STARTALIGN:
        return res.start
    if res.flags & IORESOURCE_SIZEALIGN:
        return resource_size(res)
    return 0


def pci_update_resource(dev: pci_dev, resno: int) -> None:
    """Write resource ``resno``'s bus address into its BAR (``pci_std_update_resource``)."""
    res = dev.resource[resno]
    if not res.flags or res.flags & IORESOURCE_UNSET or res.flags & IORESOURCE_PCI_FIXED:
        return
    if resno > PCI_STD_RESOURCE_END:
        return  # the ROM is not modelled; windows are programmed by pci_setup_bridge
    start, _ = pcibios_resource_to_bus(dev.bus, res)
    new = (start & 0xFFFFFFFF) | (res.flags & PCI_REGION_FLAG_MASK)
    mask = PCI_BASE_ADDRESS_IO_MASK if res.flags & IORESOURCE_IO else PCI_BASE_ADDRESS_MEM_MASK
    reg = PCI_BASE_ADDRESS_0 + 4 * resno
    # A 64-bit BAR cannot be written atomically: stop decoding while it is half updated.
    disable = bool(res.flags & IORESOURCE_MEM_64)
    cmd = 0
    if disable:
        _, cmd = pci_read_config_word(dev, PCI_COMMAND)
        pci_write_config_word(dev, PCI_COMMAND, cmd & ~PCI_COMMAND_MEMORY)
    pci_write_config_dword(dev, reg, new)
    _, check = pci_read_config_dword(dev, reg)
    if (new ^ check) & mask:
        pci_err(dev, f"{resource_name(dev, resno)}: error updating (%#010x != %#010x)"
                % (new, check))
    if res.flags & IORESOURCE_MEM_64:
        new = start >> 32
        pci_write_config_dword(dev, reg + 4, new)
        _, check = pci_read_config_dword(dev, reg + 4)
        if check != new:
            pci_err(dev, f"{resource_name(dev, resno)}: error updating (high %#010x != %#010x)"
                    % (new, check))
    if disable:
        pci_write_config_word(dev, PCI_COMMAND, cmd)


def pci_find_parent_resource(dev: pci_dev, res: resource) -> resource | None:
    """The window of ``dev``'s bus that contains ``res``; None if none (or a bad mix)."""
    for r in pci_bus_for_each_resource(dev.bus):
        if resource_contains(r, res):
            # A prefetchable window holding a non-prefetchable BAR is an allocator mistake.
            if r.flags & IORESOURCE_PREFETCH and not res.flags & IORESOURCE_PREFETCH:
                return None
            return r
    return None


def pci_claim_resource(dev: pci_dev, resno: int) -> int:
    """Insert a firmware-assigned resource into the tree; 0, -EINVAL or -EBUSY."""
    res = dev.resource[resno]
    name = resource_name(dev, resno)
    if res.flags & IORESOURCE_UNSET:
        pci_info(dev, f"{name} {format_resource(res)}: can't claim; no address assigned")
        return -EINVAL
    root = pci_find_parent_resource(dev, res)
    if root is None:
        pci_info(dev, f"{name} {format_resource(res)}: can't claim; no compatible bridge window")
        res.flags |= IORESOURCE_UNSET
        return -EINVAL
    conflict = request_resource_conflict(root, res)
    if conflict is not None:
        pci_info(dev, f"{name} {format_resource(res)}: can't claim; address conflict with "
                      f"{conflict.name} {format_resource(conflict)}")
        res.flags |= IORESOURCE_UNSET
        return -EBUSY
    return 0


def pci_claim_bridge_resource(bridge: pci_dev, i: int) -> int:
    if i < PCI_BRIDGE_RESOURCES or i > PCI_BRIDGE_RESOURCE_END:
        return 0
    return pci_claim_resource(bridge, i)


def __pci_assign_resource(dev: pci_dev, resno: int, size: int, align: int) -> int:
    res = dev.resource[resno]
    bus = dev.bus
    min_ = PCIBIOS_MIN_MEM
    # Exact match first: a 64-bit prefetchable window takes only 64-bit prefetchable BARs
    # (pbus_size_mem sized it that way).
    ret = pci_bus_alloc_resource(bus, res, size, align, min_,
                                 IORESOURCE_PREFETCH | IORESOURCE_MEM_64,
                                 pcibios_align_resource, dev)
    if ret == 0:
        return 0
    # A 32-bit prefetchable window can take 64-bit prefetchable BARs.
    if res.flags & (IORESOURCE_PREFETCH | IORESOURCE_MEM_64) == (IORESOURCE_PREFETCH
                                                                 | IORESOURCE_MEM_64):
        ret = pci_bus_alloc_resource(bus, res, size, align, min_, IORESOURCE_PREFETCH,
                                     pcibios_align_resource, dev)
        if ret == 0:
            return 0
    # Any memory resource can go in a non-prefetchable window.
    if res.flags & (IORESOURCE_PREFETCH | IORESOURCE_MEM_64):
        ret = pci_bus_alloc_resource(bus, res, size, align, min_, 0,
                                     pcibios_align_resource, dev)
    return ret


def pci_assign_resource(dev: pci_dev, resno: int) -> int:
    """Allocate resource ``resno`` from the bus's windows and program it; 0 or an errno."""
    res = dev.resource[resno]
    name = resource_name(dev, resno)
    res.flags |= IORESOURCE_UNSET
    align = pci_resource_alignment(dev, res)
    if not align:
        pci_info(dev, f"{name} {format_resource(res)}: can't assign; bogus alignment")
        return -EINVAL
    size = resource_size(res)
    ret = __pci_assign_resource(dev, resno, size, align)
    if ret:
        pci_info(dev, f"{name} {format_resource(res)}: can't assign; no space")
        return ret
    res.flags &= ~IORESOURCE_UNSET
    res.flags &= ~IORESOURCE_STARTALIGN
    pci_info(dev, f"{name} {format_resource(res)}: assigned")
    if resno < PCI_BRIDGE_RESOURCES:
        pci_update_resource(dev, resno)
    return 0
