"""The resource tree: ``struct resource`` and Linux's ``kernel/resource.c``.

A resource is a range ``[start, end]`` (inclusive) with type flags. Resources
form a tree through ``parent``/``child``/``sibling`` pointers, children sorted
by address and never overlapping: ``iomem_resource`` at the root, then host
bridge windows, bridge windows, BARs, and the busy regions drivers request.
The PCI core keeps its bus-number ranges (``busn_res``) in a second tree per
domain. The algorithms follow the kernel's: ``request_resource`` inserts a
leaf, ``insert_resource`` may adopt existing children, ``allocate_resource``
is first-fit from the lowest address, ``__request_region`` descends through
non-busy resources and adds a busy leaf.

Every resource is a kernel object allocated through ``k.mem`` (Linux embeds
some in other structures; the model allocates those together with their
owner), so a resource left behind after its owner is gone is a visible leak
and a stale pointer to a freed one is a use-after-free report.

Simplifications: no ``IORESOURCE_MUXED`` waiting, no reallocation of a
resource that is already in a tree (``allocate_resource`` refuses it).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, cast

from vmdsim.errors import VmdsimError
from vmdsim.kernel.errno import (
    EBUSY,
    EINVAL,
)
from vmdsim.kernel.shared import KObject

if TYPE_CHECKING:
    from vmdsim.kernel.core import Kernel

# include/linux/ioport.h
IORESOURCE_BITS = 0x000000FF  # bus-specific bits (for PCI: the BAR's low bits)
IORESOURCE_TYPE_BITS = 0x00001F00
IORESOURCE_IO = 0x00000100
IORESOURCE_MEM = 0x00000200
IORESOURCE_REG = 0x00000300
IORESOURCE_IRQ = 0x00000400
IORESOURCE_DMA = 0x00000800
IORESOURCE_BUS = 0x00001000
IORESOURCE_PREFETCH = 0x00002000
IORESOURCE_READONLY = 0x00004000
IORESOURCE_CACHEABLE = 0x00008000
IORESOURCE_RANGELENGTH = 0x00010000
IORESOURCE_SHADOWABLE = 0x00020000
IORESOURCE_SIZEALIGN = 0x00040000  # size indicates alignment
IORESOURCE_STARTALIGN = 0x00080000  # start field is alignment
IORESOURCE_MEM_64 = 0x00100000
IORESOURCE_WINDOW = 0x00200000  # forwarded by a bridge
IORESOURCE_MUXED = 0x00400000
IORESOURCE_EXCLUSIVE = 0x08000000
IORESOURCE_DISABLED = 0x10000000
IORESOURCE_UNSET = 0x20000000  # no address assigned yet
IORESOURCE_AUTO = 0x40000000
IORESOURCE_BUSY = 0x80000000  # driver has marked this resource busy
IORESOURCE_PCI_FIXED = 1 << 4  # PCI: do not move resource

RESOURCE_MAX = (1 << 64) - 1
OWNER = "pci"  # k.mem owner of every PCI-core object (k.mem.kzalloc(..., owner=OWNER))


class ResourceError(VmdsimError):
    """A misuse of the resource tree that Linux would WARN about (a kernel bug)."""


class resource(KObject):
    """``struct resource``: [start, end], flags, and its place in a tree."""

    def __init__(self, name: str | None = None, start: int = 0, end: int = 0, flags: int = 0,
                 parent: resource | None = None) -> None:
        self.name = name
        self.start = start
        self.end = end
        self.flags = flags
        self.desc = 0
        self.parent = parent
        self.sibling: resource | None = None
        self.child: resource | None = None

    def __repr__(self) -> str:
        return f"<resource {self.name!r} {format_resource(self)}>"


# -- queries ---------------------------------------------------------------------
def resource_size(res: resource) -> int:
    return res.end - res.start + 1


def resource_type(res: resource) -> int:
    return res.flags & IORESOURCE_TYPE_BITS


def resource_contains(r1: resource, r2: resource) -> bool:
    """True when r2 lies inside r1 (same type, r1 assigned)."""
    if resource_type(r1) != resource_type(r2):
        return False
    if r1.flags & IORESOURCE_UNSET or r2.flags & IORESOURCE_UNSET:
        return False
    return r1.start <= r2.start and r1.end >= r2.end


def resource_overlaps(r1: resource, r2: resource) -> bool:
    return r1.start <= r2.end and r1.end >= r2.start


def children(res: resource) -> Iterator[resource]:
    """The direct children of ``res``, in address order."""
    p = res.child
    while p is not None:
        yield p
        p = p.sibling


def walk(res: resource, depth: int = 0) -> Iterator[tuple[int, resource]]:
    """(depth, resource) for every descendant, depth first, as /proc/iomem lists them."""
    for c in children(res):
        yield depth, c
        yield from walk(c, depth + 1)


def format_resource(res: resource) -> str:
    """Linux's ``%pR``: ``[mem 0xc0000000-0xc0003fff 64bit pref]``, ``[bus 00-1f]``."""
    t = resource_type(res)
    if t == IORESOURCE_BUS:
        return f"[bus {res.start:02x}-{res.end:02x}]"
    kind = {IORESOURCE_MEM: "mem", IORESOURCE_IO: "io"}.get(t, "??? ")
    if res.flags & IORESOURCE_UNSET:
        body = f"{kind} size {resource_size(res):#x}"
    else:
        body = f"{kind} {res.start:#010x}-{res.end:#010x}"
    if t == IORESOURCE_MEM:
        if res.flags & IORESOURCE_MEM_64:
            body += " 64bit"
        if res.flags & IORESOURCE_PREFETCH:
            body += " pref"
    if res.flags & IORESOURCE_WINDOW:
        body += " window"
    if res.flags & IORESOURCE_DISABLED:
        body += " disabled"
    return f"[{body}]"


def format_iomem(root: resource) -> str:
    """The tree under ``root`` in the layout of ``/proc/iomem``."""
    lines = []
    for depth, r in walk(root):
        lines.append(f"{'  ' * depth}{r.start:08x}-{r.end:08x} : {r.name}")
    return "\n".join(lines)


# -- insertion and removal (kernel/resource.c) ------------------------------------
def __request_resource(root: resource, new: resource) -> resource | None:
    """Link ``new`` as a leaf under ``root``; the conflicting resource, or None."""
    start, end = new.start, new.end
    if end < start or start < root.start or end > root.end:
        return root
    prev = None
    tmp = root.child
    while True:
        if tmp is None or tmp.start > end:
            new.sibling = tmp
            if prev is None:
                root.child = new
            else:
                prev.sibling = new
            new.parent = root
            return None
        if tmp.end < start:
            prev, tmp = tmp, tmp.sibling
            continue
        return tmp


def __release_resource(old: resource, release_child: bool) -> int:
    parent = old.parent
    if parent is None:
        return -EINVAL
    prev = None
    tmp = parent.child
    while tmp is not None:
        if tmp is old:
            if release_child or old.child is None:
                nxt = old.sibling
            else:
                # Hand the children up to the parent, in place.
                c = old.child
                while True:
                    c.parent = parent
                    if c.sibling is None:
                        break
                    c = c.sibling
                c.sibling = old.sibling
                nxt = old.child
                old.child = None
            if prev is None:
                parent.child = nxt
            else:
                prev.sibling = nxt
            old.parent = None
            old.sibling = None
            return 0
        prev, tmp = tmp, tmp.sibling
    return -EINVAL


def request_resource_conflict(root: resource, new: resource) -> resource | None:
    return __request_resource(root, new)


def request_resource(root: resource, new: resource) -> int:
    """Insert ``new`` under ``root``: 0, or -EBUSY when it conflicts."""
    return -EBUSY if __request_resource(root, new) is not None else 0


def release_resource(old: resource) -> int:
    """Unlink ``old`` from its parent (its own children stay with it)."""
    return __release_resource(old, True)


def remove_resource(old: resource) -> int:
    """Unlink ``old`` and hand its children up to its parent."""
    return __release_resource(old, False)


def __insert_resource(parent: resource, new: resource) -> resource | None:
    while True:
        first = __request_resource(parent, new)
        if first is None or first is parent:
            return first
        if first is new:
            raise ResourceError(f"insert_resource: {new!r} is already in the tree")
        if first.start > new.start or first.end < new.end:
            break
        if first.start == new.start and first.end == new.end:
            break
        parent = first
    nxt = first
    while True:
        if nxt.start < new.start or nxt.end > new.end:
            return nxt  # partial overlap: bad and unfixable
        if nxt.sibling is None or nxt.sibling.start > new.end:
            break
        nxt = nxt.sibling
    new.parent = parent
    new.sibling = nxt.sibling
    new.child = first
    nxt.sibling = None
    c: resource | None = first
    while c is not None:
        c.parent = new
        c = c.sibling
    if parent.child is first:
        parent.child = new
    else:
        # first is a child of parent, so the walk ends at first's predecessor
        p = cast(resource, parent.child)
        while p.sibling is not first:
            p = cast(resource, p.sibling)
        p.sibling = new
    return None


def insert_resource_conflict(parent: resource, new: resource) -> resource | None:
    """Insert ``new``, adopting existing resources it covers entirely; the conflict or None."""
    return __insert_resource(parent, new)


def insert_resource(parent: resource, new: resource) -> int:
    return -EBUSY if __insert_resource(parent, new) is not None else 0


def adjust_resource(res: resource, start: int, size: int) -> int:
    """Move/resize ``res`` in place if it still fits its parent, siblings and children."""
    end = start + size - 1
    parent = res.parent
    if parent is not None:
        if start < parent.start or end > parent.end:
            return -EBUSY
        for c in children(parent):
            if c is not res and c.start <= end and c.end >= start:
                return -EBUSY
    for c in children(res):
        if c.start < start or c.end > end:
            return -EBUSY
    res.start, res.end = start, end
    return 0


class _span:
    """A candidate range handed to an alignment callback (a stack ``struct resource``)."""

    __slots__ = ("start", "end", "flags")

    def __init__(self, start: int, end: int, flags: int) -> None:
        self.start, self.end, self.flags = start, end, flags


AlignF = Callable[[object, _span, int, int], int]


def __find_resource(root: resource, new: resource, size: int, min_: int, max_: int,
                    align: int, alignf: AlignF | None, alignf_data: object) -> int:
    """First fit from the lowest address; sets new.start/end, 0 or -EBUSY."""
    this = root.child
    tmp_start = root.start
    if this is not None and this.start == root.start:
        tmp_start = this.end + 1
        this = this.sibling
    while True:
        tmp_end = this.start - 1 if this is not None else root.end
        if tmp_end >= tmp_start:
            lo = max(tmp_start, min_)
            hi = min(tmp_end, max_)
            if lo <= hi:
                a_start = (lo + align - 1) & ~(align - 1) if align > 1 else lo
                if a_start >= lo:
                    avail = _span(a_start, hi, new.flags & ~IORESOURCE_UNSET)
                    s = alignf(alignf_data, avail, size, align) if alignf else a_start
                    e = s + size - 1
                    if s <= e and avail.start <= s and e <= avail.end:
                        new.start, new.end = s, e
                        return 0
        if this is None or this.end == root.end:
            break
        tmp_start = this.end + 1
        this = this.sibling
    return -EBUSY


def allocate_resource(root: resource, new: resource, size: int, min_: int, max_: int,
                      align: int, alignf: AlignF | None = None,
                      alignf_data: object = None) -> int:
    """Find a free ``size``-byte range in ``root`` within [min_, max_], aligned; insert it."""
    if new.parent is not None:
        raise ResourceError(f"allocate_resource: {new!r} is already allocated under "
                            f"{new.parent!r}; the model does not reallocate in place")
    if size <= 0 or align <= 0 or align & (align - 1):
        raise ResourceError(f"allocate_resource: {new!r}: size {size:#x} / alignment {align:#x} "
                            "must be positive, alignment a power of two")
    err = __find_resource(root, new, size, min_, max_, align, alignf, alignf_data)
    if err == 0 and __request_resource(root, new) is not None:
        err = -EBUSY
    return err


# -- busy regions: request_mem_region and friends ----------------------------------
def __request_region(k: Kernel, parent: resource, start: int, n: int, name: str,
                     flags: int = 0) -> resource | None:
    """Mark [start, start+n) busy under ``parent``, descending into non-busy resources.

    Returns the new busy resource, or None when the range is taken (or memory ran out).
    """
    res = k.mem.kzalloc(resource, name, start, start + n - 1, owner=OWNER)
    if res is None:
        return None
    while True:
        res.flags = resource_type(parent) | IORESOURCE_BUSY | flags
        res.desc = parent.desc
        conflict = __request_resource(parent, res)
        if conflict is None:
            return res
        if conflict is not parent and not conflict.flags & IORESOURCE_BUSY:
            parent = conflict
            continue
        k.mem.kfree(res)
        return None


def __release_region(k: Kernel, parent: resource, start: int, n: int) -> None:
    """Release a busy region requested with ``__request_region``."""
    end = start + n - 1
    prev_owner = parent
    prev = None
    res = parent.child
    while res is not None:
        if res.start <= start and res.end >= end:
            if not res.flags & IORESOURCE_BUSY:
                prev_owner, prev, res = res, None, res.child
                continue
            if res.start != start or res.end != end:
                break
            if prev is None:
                prev_owner.child = res.sibling
            else:
                prev.sibling = res.sibling
            res.parent = None
            res.sibling = None
            k.mem.kfree(res)
            return
        prev, res = res, res.sibling
    raise ResourceError(f"Trying to free nonexistent resource <{start:#018x}-{end:#018x}> "
                        f"under {parent.name!r}")
