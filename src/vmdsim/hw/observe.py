"""What a device's own logic reads and writes, for whoever listens: the explorer.

Device models see only bus transactions, and the kernel sees devices only
through memory addresses. A device acting on its own (a drive posting a
completion and sending its MSI-X message, a slot losing its card) or reacting
to a transaction (an unmasked entry sending its pending message) reads and
writes registers the kernel also reaches: the MSI-X table, Message Control,
the command register, a doorbell. For the explorer those are shared
locations, exactly as the fields of a kernel object are.

So the hardware reports each such access here, keyed as the CPU would key it:
the CPU-physical address of the register (a BAR offset, or the function's page
of ECAM or VMD CFGBAR config space). Free-running nobody listens and a report
costs one attribute load and a test. Under the controlled scheduler each
report becomes an access of the step that caused it (see
``ControlledScheduler._device_access``), so the explorer orders a device act
against every kernel access of the registers it read or wrote, with no list
of addresses written by hand.

Ranges are widened to whole 8-byte words. The kernel keys its own MMIO access
by its first byte (``kernel/io.py``); every access the kernel makes is
naturally aligned and at most 8 bytes wide, so an aligned word that holds any
byte of a device access holds the first byte of every kernel access that
overlaps it.

Where the model simplifies: the addresses are those in force when the device
acts. A step that moves a BAR while devices act is ordered against them only
through the BAR registers it writes, not through the new addresses.
"""

from __future__ import annotations

from collections.abc import Callable

# Access kinds, the same strings as the kernel's (``kernel/shared.py``).
DEVICE_READ = "read"
DEVICE_WRITE = "write"

DeviceAccessHook = Callable[[int, int, str], None]


class _Observer:
    """Where the explorer plugs in; ``fn(lo, hi, kind)``, None when nobody listens."""

    __slots__ = ("fn",)

    def __init__(self) -> None:
        self.fn: DeviceAccessHook | None = None


observer = _Observer()


def device_access(addr: int | None, size: int, kind: str) -> None:
    """The device's logic reads (``DEVICE_READ``) or changes (``DEVICE_WRITE``) ``size``
    bytes of register at CPU-physical ``addr``; None: the CPU cannot reach them now."""
    fn = observer.fn
    if fn is not None and addr is not None:
        fn(addr & ~7, (addr + max(size, 1) - 1) | 7, kind)


def device_spans(spans: list[tuple[int, int]], kind: str) -> None:
    """As :func:`device_access`, for whole inclusive ranges (a card's every register)."""
    fn = observer.fn
    if fn is not None:
        for lo, hi in spans:
            fn(lo & ~7, hi | 7, kind)
