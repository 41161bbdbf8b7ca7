"""The NVMe controller, driven through ECAM, MMIO to BAR0, and observed at the APIC."""

import pytest
from hwrig import NVME_REG_CC, NVME_REG_CSTS, NVME_REG_DBS, NVME_REG_VS, Board, x86_msi

from vmdsim.errors import MmioAccessError
from vmdsim.hw.nvme import NvmeController
from vmdsim.hw.regs import (
    PCI_BASE_ADDRESS_0,
    PCI_CAP_ID_EXP,
    PCI_CAP_ID_MSIX,
    PCI_CAP_ID_PM,
    PCI_CLASS_REVISION,
    PCI_EXT_CAP_ID_ERR,
    PCI_EXT_CAP_ID_LTR,
    PCI_LTR_MAX_SNOOP_LAT,
    PCI_MSIX_FLAGS,
    PCI_MSIX_PBA,
    PCI_MSIX_TABLE,
)

WINDOW = 0xD0000000


def board(nvme="{ queues = 4 }"):
    b = Board.from_toml(f'[[root_port]]\nslot = "1c.0"\nnvme = {nvme}\n')
    rp, drive = b.bring_up_primary_port(0x1C, 1, WINDOW)
    b.drive = drive
    b.nvme = b.m.nvmes[0]
    return b


def vectors_to_cpu(b, n, masked=()):
    """MSI-X entry v -> CPU 1, APIC vector 0x40 + v; then MSI-X on."""
    for v in range(n):
        b.msix_entry(b.drive, v, x86_msi(1), 0x40 + v, masked=v in masked)
    b.msix_enable(b.drive)


# -- identity and BAR0 -------------------------------------------------------------
def test_class_capabilities_and_bar0_sizing():
    b = board()
    d = b.drive
    assert d.read(PCI_CLASS_REVISION) >> 8 == 0x010802
    for cap in (PCI_CAP_ID_EXP, PCI_CAP_ID_MSIX, PCI_CAP_ID_PM):
        assert d.cap(cap)
    assert d.ext_cap(PCI_EXT_CAP_ID_ERR) and d.ext_cap(PCI_EXT_CAP_ID_LTR)
    d.write(0x04, 2, 0)  # decode off while sizing, as an OS does
    d.write(PCI_BASE_ADDRESS_0, 4, 0xFFFFFFFF)
    d.write(PCI_BASE_ADDRESS_0 + 4, 4, 0xFFFFFFFF)
    assert d.read(PCI_BASE_ADDRESS_0) == 0xFFFFC004  # 16 KiB, 64-bit, not prefetchable
    assert d.read(PCI_BASE_ADDRESS_0 + 4) == 0xFFFFFFFF


def test_msix_table_and_pba_live_in_bar0_and_grow_it():
    b = board("{ queues = 4 }")
    pos = b.drive.cap(PCI_CAP_ID_MSIX)
    assert b.drive.read(pos + PCI_MSIX_FLAGS, 2) & 0x7FF == 4  # 5 vectors: admin + 4 I/O
    assert b.drive.read(pos + PCI_MSIX_TABLE) == 0x2000
    assert b.drive.read(pos + PCI_MSIX_PBA) == 0x3000
    big = NvmeController("big", nr_io_queues=8, msix_vectors=300)
    assert big.bars[0].size == 0x8000  # table 0x2000-0x32bf, PBA at 0x4000
    assert big.msix.pba_offset == 0x4000


def test_vs_and_cap_read_through_mmio():
    b = board()
    assert b.read(WINDOW + NVME_REG_VS) == 0x00010400
    cap = b.read(WINDOW, 8)
    assert cap == b.read(WINDOW) | b.read(WINDOW + 4) << 32
    assert cap & 0xFFFF == 1023  # MQES: 1024-entry queues
    assert cap >> 16 & 1 and (cap >> 32) & 0xF == 0  # CQR, doorbell stride 4
    assert cap >> 37 & 1  # NVM command set


def test_enable_ready_disable_and_shutdown():
    b = board()
    assert b.read(WINDOW + NVME_REG_CSTS) == 0
    b.enable_nvme(WINDOW)
    assert b.read(WINDOW + NVME_REG_CC) == 1
    b.write(WINDOW + NVME_REG_CC, 4, 1 | 1 << 14)  # normal shutdown notification
    assert b.read(WINDOW + NVME_REG_CSTS) == 0b1001  # ready, shutdown complete
    b.write(WINDOW + NVME_REG_CC, 4, 0)
    assert b.read(WINDOW + NVME_REG_CSTS) & 1 == 0


def test_bad_register_access_names_the_device_and_offset():
    b = board()
    with pytest.raises(MmioAccessError, match=r"rp0.nvme: NVMe registers .* offset 0x2 "):
        b.read(WINDOW + 2, 2)
    with pytest.raises(MmioAccessError, match="NVMe doorbell"):
        b.read(WINDOW + NVME_REG_DBS, 8)


# -- completions and interrupts ------------------------------------------------------
def test_queue_completion_fires_that_queues_vector():
    b = board()
    b.enable_nvme(WINDOW)
    vectors_to_cpu(b, 5)
    for q in (3, 0, 4):
        assert b.nvme.complete(q)
    assert b.irqs == [(1, 0x43), (1, 0x40), (1, 0x44)]


def test_masked_vector_sets_pba_and_is_delivered_on_unmask():
    b = board()
    b.enable_nvme(WINDOW)
    vectors_to_cpu(b, 5, masked={2})
    b.nvme.complete(2)
    assert b.irqs == []
    assert b.read(WINDOW + 0x3000, 8) == 1 << 2
    b.write(WINDOW + 0x2000 + 16 * 2 + 12, 4, 0)  # unmask entry 2
    assert b.irqs == [(1, 0x42)]
    assert b.read(WINDOW + 0x3000, 8) == 0


def test_has_work_register_counts_unconsumed_entries_and_head_write_consumes():
    b = board()
    b.enable_nvme(WINDOW)
    vectors_to_cpu(b, 5)
    cq_head = [WINDOW + NVME_REG_DBS + 8 * q + 4 for q in range(5)]
    assert [b.read(a) for a in cq_head] == [0] * 5
    b.nvme.complete(1)
    b.nvme.complete(1)
    b.nvme.complete(3)
    assert [b.read(a) for a in cq_head] == [0, 2, 0, 1, 0]
    b.write(cq_head[1], 4, 1)  # consumed one entry
    assert b.read(cq_head[1]) == 1
    b.write(cq_head[1], 4, 2)
    assert b.read(cq_head[1]) == 0  # a handler reading this now knows: not my interrupt
    b.write(cq_head[3], 4, 5)  # past the tail: invalid, ignored
    assert b.read(cq_head[3]) == 1 and b.nvme.invalid_doorbell_writes == 1


def test_admin_queue_depth_comes_from_aqa_and_a_full_queue_refuses():
    b = board()
    b.enable_nvme(WINDOW)  # AQA: 32-entry admin queues
    vectors_to_cpu(b, 5)
    posted = sum(b.nvme.complete(0) for _ in range(40))
    assert posted == 31  # one slot stays empty: head == tail means empty
    assert b.read(WINDOW + NVME_REG_DBS + 4) == 31
    assert len(b.irqs) == 31 and b.nvme.completions_refused == 9
    b.write(WINDOW + NVME_REG_DBS + 4, 4, 31)  # head wraps at 32
    assert b.nvme.complete(0)


def test_a_disabled_controller_completes_nothing():
    b = board()
    vectors_to_cpu(b, 5)
    assert not b.nvme.complete(1)
    assert b.irqs == [] and b.read(WINDOW + NVME_REG_DBS + 12) == 0
    b.enable_nvme(WINDOW)
    b.nvme.complete(1)
    b.write(WINDOW + NVME_REG_CC, 4, 0)  # controller reset drops the queue state
    b.enable_nvme(WINDOW)
    assert b.read(WINDOW + NVME_REG_DBS + 12) == 0


def test_fewer_vectors_than_queues_share_by_modulo():
    b = board("{ queues = 4, msix_vectors = 2 }")
    b.enable_nvme(WINDOW)
    vectors_to_cpu(b, 2)
    for q in range(5):
        b.nvme.complete(q)
    assert [v for _, v in b.irqs] == [0x40, 0x41, 0x40, 0x41, 0x40]
    with pytest.raises(ValueError, match="no queue 5"):
        b.nvme.complete(5)


def test_no_message_with_msix_disabled():
    b = board()
    b.enable_nvme(WINDOW)
    assert b.nvme.complete(1)  # posted, but the interrupt would be INTx: not modelled
    assert b.irqs == [] and b.nvme.msix.dropped == 1


# -- LTR ---------------------------------------------------------------------------------
def test_ltr_max_snoop_latency_as_firmware_left_it_and_writable():
    b = board("{ queues = 1, ltr_max_snoop = 0x1001 }")
    pos = b.drive.ext_cap(PCI_EXT_CAP_ID_LTR)
    assert b.drive.read(pos + PCI_LTR_MAX_SNOOP_LAT, 2) == 0x1001
    b.drive.write(pos + PCI_LTR_MAX_SNOOP_LAT, 4, 0x1003 | 0x1003 << 16)
    assert b.drive.read(pos + PCI_LTR_MAX_SNOOP_LAT) == 0x10031003
    assert NvmeController("x", ltr_max_snoop=None).cfg.capabilities()  # still has the others
    assert not _has_ext(NvmeController("x", ltr_max_snoop=None), PCI_EXT_CAP_ID_LTR)


def _has_ext(fn, cap_id):
    pos = 0x100
    while pos:
        hdr = fn.cfg.read(pos, 4)
        if hdr & 0xFFFF == cap_id:
            return True
        pos = hdr >> 20
    return False


def test_bad_construction_is_rejected():
    with pytest.raises(ValueError, match="I/O queues outside"):
        NvmeController("x", nr_io_queues=0)
    with pytest.raises(ValueError, match="MSI-X table size 0"):
        NvmeController("x", msix_vectors=0)
    with pytest.raises(ValueError, match="LTR"):
        NvmeController("x", ltr_max_snoop=0x8000)
