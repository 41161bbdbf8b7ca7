"""Any memory transaction on a booted machine, at any address, of any size and value: the
fabric carries it or refuses it with a BusAccessError (or the device it reaches with an
MmioAccessError or ConfigAccessError naming the register and offset), never another
exception.

A device's DMA (a drive behind the VMD or in the primary domain) changes no register
software can write in any function's config space, no MSI-X table, and raises no CPU
vector but those of the VMD's own MSI-X entries and of devices outside the VMD; the kernel
takes every interrupt it raises without failing. The CPU may write anything it likes
(it is the kernel's own business), but the device models must take it: no exception."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

import vmdsim
from vmdsim.errors import BusAccessError, ConfigAccessError, MmioAccessError
from vmdsim.hw.msix import MsixCapability
from vmdsim.hw.vmd import VMD_MSIX_TABLE_OFFSET
from vmdsim.sim.system import System

SIZES = st.sampled_from([1, 2, 4, 8, 4, 4, 3, 16, 64, 4096, 0, 5000])
VALUES = st.one_of(st.integers(0, 0xFF), st.integers(0, 2**32 - 1), st.integers(-1, 2**70),
                   st.sampled_from([0, 1, 0xEF, 0xFFFFFFFF, 0x4000_0001]))


def _functions(s: System):
    m = s.machine
    yield from m.rc.root_bus.walk()
    for vmd in m.vmds:
        yield from vmd.hidden_bus.walk()


def _bases(s: System) -> list[int]:
    """Where transactions are worth aiming: every BAR, the VMD's MSI-X table, the MSI
    window, RAM the kernel uses, MMCONFIG, the ends of the address space."""
    m = s.machine
    out = [0, 0x1000, 0x100000, m.rc.mmconfig_base, 0xFEE00000, 0xFEE01000, 2**32 - 4,
           2**64 - 8, 2**64 - 1]
    for fn in _functions(s):
        out += [fn.bar_address(i) for i in fn.bars]
    for vmd in m.vmds:
        out.append(vmd.bar_address(4) + VMD_MSIX_TABLE_OFFSET)
    out += sorted(m.rc.ram.pages)[:8]
    return out


@st.composite
def transactions(draw, s: System, who: list[str]) -> list[tuple[str, str, int, int, int]]:
    bases = _bases(s)
    ops = []
    for _ in range(draw(st.integers(1, 25))):
        addr = draw(st.one_of(st.sampled_from(bases).map(
            lambda b: b + draw(st.integers(-16, 0x4000))), st.integers(-2**64, 2**65)))
        ops.append((draw(st.sampled_from(who)), draw(st.sampled_from(["read", "write"])),
                    addr, draw(SIZES), draw(VALUES)))
    return ops


def _writable(s: System) -> dict[str, bytes]:
    """Each function's config bits software can write (status bits the hardware sets on
    an error are not among them)."""
    return {fn.name: bytes(b & w for b, w in zip(fn.cfg.data, fn.cfg.wmask, strict=True))
            for fn in _functions(s)}


def _tables(s: System) -> dict[str, tuple]:
    out = {}
    for fn in _functions(s):
        cap = fn.msix
        if isinstance(cap, MsixCapability):
            out[fn.name] = (tuple(cap.addr), tuple(cap.data))
    return out


def _own_vectors(s: System) -> set[tuple[int, int]]:
    """(CPU, vector) of every MSI-X entry a VMD or a primary-domain device has programmed:
    what a child behind a VMD may end up raising."""
    hidden = {id(fn) for vmd in s.machine.vmds for fn in vmd.hidden_bus.walk()}
    out = set()
    for fn in _functions(s):
        cap = fn.msix
        if isinstance(cap, MsixCapability) and id(fn) not in hidden:
            entries = zip(cap.addr, cap.data, strict=True)
            out |= {((a >> 12) & 0xFF, d & 0xFF) for a, d in entries if a}
    return out


def _apply(s: System, who: str, kind: str, addr: int, size: int, value: int) -> None:
    rc = s.machine.rc
    dev = None if who == "cpu" else next(fn for fn in _functions(s) if fn.name == who)
    try:
        if kind == "write":
            if dev is None:
                s.k.run_on(0, rc.mem_write, addr, size, value)
            else:
                dev.bus_master_write(addr, size, value)
        elif dev is None:
            rc.mem_read(addr, size)
        else:
            dev.bus_master_read(addr, size)
    except (BusAccessError, MmioAccessError, ConfigAccessError):
        pass  # refused: no fabric carries it, or the device or config space it reaches
        # rejects it, naming the register and offset


# No shrinking: each example boots a machine, and a failing list of at most 25
# transactions reads well enough as drawn.
FUZZ = settings(max_examples=25, deadline=None, database=None,
                phases=[Phase.explicit, Phase.reuse, Phase.generate],
                suppress_health_check=[HealthCheck.too_slow])
MANY = settings(FUZZ, max_examples=200)


def dma_isolation(data) -> None:
    s = vmdsim.boot()
    drives = [n.name for n in s.machine.nvmes]
    raised: list[tuple[int, int]] = []
    apic = s.machine.rc.apic
    sink = apic.sink

    def recording(cpu: int, vector: int) -> None:
        raised.append((cpu, vector))
        sink(cpu, vector)

    apic.attach(recording)
    cfg, tables, allowed = _writable(s), _tables(s), _own_vectors(s)
    for op in data.draw(transactions(s, drives)):
        _apply(s, *op)
    assert _writable(s) == cfg
    assert _tables(s) == tables
    assert set(raised) <= allowed, set(raised) - allowed


def cpu_access(data) -> None:
    s = vmdsim.boot()
    for op in data.draw(transactions(s, ["cpu"])):
        _apply(s, *op)


test_any_dma_from_any_device_is_carried_or_refused_and_isolation_holds = \
    FUZZ(given(st.data())(dma_isolation))
test_any_cpu_access_is_carried_or_refused = FUZZ(given(st.data())(cpu_access))
test_many_dmas_are_carried_or_refused_and_isolation_holds = \
    pytest.mark.slow(MANY(given(st.data())(dma_isolation)))
test_many_cpu_accesses_are_carried_or_refused = pytest.mark.slow(MANY(given(st.data())(cpu_access)))
