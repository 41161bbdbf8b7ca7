"""The resource tree (kernel/resource.c semantics)."""

from __future__ import annotations

import pytest
from pci_testbed import new_kernel

from vmdsim.kernel.errno import EBUSY
from vmdsim.kernel.pci.resource import (
    IORESOURCE_BUSY,
    IORESOURCE_MEM,
    ResourceError,
    __release_region,
    __request_region,
    allocate_resource,
    children,
    format_resource,
    insert_resource,
    release_resource,
    request_resource,
    request_resource_conflict,
    resource,
)


@pytest.fixture
def k():
    return new_kernel()


def mem(k, name, start, end, flags=IORESOURCE_MEM):
    return k.mem.kzalloc(resource, name, start, end, flags, owner="test")


def names(res):
    return [c.name for c in children(res)]


def test_request_keeps_children_sorted_and_refuses_overlap(k):
    root = mem(k, "root", 0, 0xFFFF)
    b = mem(k, "b", 0x2000, 0x2FFF)
    a = mem(k, "a", 0x1000, 0x1FFF)
    assert request_resource(root, b) == 0
    assert request_resource(root, a) == 0
    assert names(root) == ["a", "b"]
    clash = mem(k, "clash", 0x1800, 0x27FF)
    assert request_resource_conflict(root, clash) is a
    assert request_resource(root, clash) == -EBUSY
    outside = mem(k, "outside", 0xFF00, 0x100FF)
    assert request_resource_conflict(root, outside) is root
    assert release_resource(a) == 0 and a.parent is None
    assert names(root) == ["b"]


def test_insert_adopts_the_resources_it_covers(k):
    root = mem(k, "root", 0, 0xFFFF)
    for n, s in (("x", 0x1000), ("y", 0x3000)):
        request_resource(root, mem(k, n, s, s + 0xFFF))
    win = mem(k, "window", 0x0000, 0x7FFF)
    assert insert_resource(root, win) == 0
    assert names(root) == ["window"]
    assert names(win) == ["x", "y"]
    assert all(c.parent is win for c in children(win))
    partial = mem(k, "partial", 0x3800, 0x8FFF)
    assert insert_resource(root, partial) == -EBUSY


def test_allocate_is_first_fit_aligned_within_bounds(k):
    root = mem(k, "window", 0x10000, 0x1FFFF)
    request_resource(root, mem(k, "used", 0x10000, 0x10FFF))
    r1 = mem(k, "r1", 0, 0)
    assert allocate_resource(root, r1, 0x4000, 0, 0xFFFFFFFF, 0x4000) == 0
    assert (r1.start, r1.end) == (0x14000, 0x17FFF)  # 0x11000 rounded up to 16 KiB
    r2 = mem(k, "r2", 0, 0)
    assert allocate_resource(root, r2, 0x1000, 0, 0xFFFFFFFF, 0x1000) == 0
    assert r2.start == 0x11000  # the gap below r1 is used first
    big = mem(k, "big", 0, 0)
    assert allocate_resource(root, big, 0x10000, 0, 0xFFFFFFFF, 0x10000) == -EBUSY
    assert big.parent is None
    with pytest.raises(ResourceError, match="already allocated"):
        allocate_resource(root, r1, 0x1000, 0, 0xFFFFFFFF, 0x1000)


def test_request_region_descends_into_non_busy_resources_and_releases(k):
    root = mem(k, "iomem", 0, 0xFFFFF)
    bar = mem(k, "0000:01:00.0", 0x40000, 0x43FFF)
    request_resource(root, bar)
    region = __request_region(k, root, 0x40000, 0x4000, "nvme")
    assert region is not None and region.parent is bar
    assert region.flags & IORESOURCE_BUSY
    assert __request_region(k, root, 0x41000, 0x100, "other") is None  # busy: refused
    __release_region(k, root, 0x40000, 0x4000)
    assert bar.child is None
    assert region not in k.mem.leaks(owner="pci")
    with pytest.raises(ResourceError, match="nonexistent resource"):
        __release_region(k, root, 0x40000, 0x4000)


def test_format_resource_like_percent_pR(k):
    from vmdsim.kernel.pci.resource import (
        IORESOURCE_BUS,
        IORESOURCE_MEM_64,
        IORESOURCE_PREFETCH,
        IORESOURCE_UNSET,
    )

    r = mem(k, "bar", 0xC0000000, 0xC0003FFF, IORESOURCE_MEM | IORESOURCE_MEM_64
            | IORESOURCE_PREFETCH)
    assert format_resource(r) == "[mem 0xc0000000-0xc0003fff 64bit pref]"
    r.flags |= IORESOURCE_UNSET
    assert format_resource(r) == "[mem size 0x4000 64bit pref]"
    b = mem(k, "busn", 0, 0x1F, IORESOURCE_BUS)
    assert format_resource(b) == "[bus 00-1f]"
