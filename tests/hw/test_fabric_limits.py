"""Transactions no fabric can carry are refused at the root complex, naming the address and
size; a device's DMA is held to the same rules."""

from __future__ import annotations

import pytest

from vmdsim.errors import BusAccessError
from vmdsim.hw.machine import Machine


@pytest.mark.parametrize("addr, size, value, says", [
    (-8, 4, 0, r"outside 0 \.\. 2\^64 - 1"),
    (1 << 64, 4, 0, r"outside 0 \.\. 2\^64 - 1"),
    (0x1000, 4, 1 << 32, r"does not fit 4 byte\(s\)"),
    (0x1000, 2, -1, r"does not fit 2 byte\(s\)"),
    (0x1000, 0, 0, "size must be 1 to 4096"),
    (0x1000, 1 << 20, 0, "size must be 1 to 4096"),
])
def test_cpu_and_device_writes_out_of_range_are_refused(addr, size, value, says):
    m = Machine.load(None)
    with pytest.raises(BusAccessError, match=says):
        m.rc.mem_write(addr, size, value)
    with pytest.raises(BusAccessError, match=says):
        m.rc.upstream_write(addr, size, value, m.nvmes[0])


def test_a_negative_address_is_not_stored():
    m = Machine.load(None)
    with pytest.raises(BusAccessError):
        m.rc.mem_write(-4, 4, 0x12345678)
    with pytest.raises(BusAccessError):
        m.rc.mem_read(-4, 4)
    assert m.rc.ram.pages == {}


def test_a_read_nobody_claims_is_all_ones_at_any_size():
    m = Machine.load(None)
    unclaimed = 0x3CAE_0000_0000  # above RAM and every window
    for size in (1, 2, 4, 8, 16, 64, 4096):
        assert m.rc.mem_read(unclaimed, size) == (1 << 8 * size) - 1
