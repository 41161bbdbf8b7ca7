"""ID allocation: ``struct ida`` (``include/linux/idr.h``, ``lib/idr.c``).

``ida_alloc`` hands out the smallest free non-negative integer and ``ida_free``
gives it back; drivers number their instances with one (``vmd_instance_ida``,
``nvme_instance_ida``), which is why a rebound device takes the lowest free
number again.

Where the model simplifies: Linux's IDA is a radix tree that may allocate
memory and fail with -ENOMEM; the model's is a set and never fails.
"""

from __future__ import annotations


class ida:
    """``struct ida``: the IDs in use."""

    def __init__(self) -> None:
        self.used: set[int] = set()

    def __repr__(self) -> str:
        return f"<ida {sorted(self.used)}>"


def ida_alloc(i: ida) -> int:
    """The smallest free ID, now taken."""
    n = 0
    while n in i.used:
        n += 1
    i.used.add(n)
    return n


def ida_free(i: ida, n: int) -> None:
    """Give ``n`` back (freeing one that is free is ignored; Linux WARNs)."""
    i.used.discard(n)
