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
    for q in (3, 1, 4):
        assert b.nvme.complete(q)
    assert b.irqs == [(1, 0x43), (1, 0x41), (1, 0x44)]


def test_admin_commands_complete_in_ram_with_phase_tags_and_signal_entry_0():
    b = board()
    b.enable_nvme(WINDOW, io_queues=None)
    vectors_to_cpu(b, 5)
    # Set Features, Number of Queues: asked for 2 pairs, granted all 4 (0-based in DW0)
    assert b.nvme_admin(WINDOW, 0x09, 0x07, 1 | 1 << 16) == (0, 3 | 3 << 16)
    assert b.irqs == [(1, 0x40)]
    assert b.nvme_admin(WINDOW, 0x7F) == (0x001, 0)  # Invalid Command Opcode
    assert b.nvme.admin_commands == 2


def test_create_queue_errors_are_the_specs_status_codes():
    b = board("{ queues = 4, msix_vectors = 2 }")
    b.enable_nvme(WINDOW, io_queues=None)
    create_cq = 0x05
    assert b.nvme_admin(WINDOW, create_cq, 5 | 15 << 16, 3) == (0x101, 0)  # QID beyond 4
    assert b.nvme_admin(WINDOW, create_cq, 1 | 1024 << 16, 3) == (0x102, 0)  # > MQES
    assert b.nvme_admin(WINDOW, create_cq, 1 | 15 << 16, 3 | 2 << 16) == (0x108, 0)  # IV 2
    assert b.nvme_admin(WINDOW, create_cq, 1 | 15 << 16, 2) == (0x002, 0)  # PC = 0, CQR
    assert b.nvme_admin(WINDOW, 0x01, 1 | 15 << 16, 1 | 1 << 16) == (0x100, 0)  # no CQ 1
    assert b.nvme_admin(WINDOW, create_cq, 1 | 15 << 16, 3 | 1 << 16) == (0, 0)
    assert b.nvme_admin(WINDOW, 0x01, 1 | 15 << 16, 1 | 1 << 16) == (0, 0)
    assert b.nvme_admin(WINDOW, 0x04, 1) == (0x10C, 0)  # its SQ still uses it
    assert b.nvme_admin(WINDOW, 0x00, 1) == (0, 0)
    assert b.nvme_admin(WINDOW, 0x04, 1) == (0, 0)
    assert not b.nvme.complete(1)  # deleted: nothing completes there any more


def test_an_event_completes_an_outstanding_async_event_request():
    b = board()
    b.enable_nvme(WINDOW)
    vectors_to_cpu(b, 5)
    assert not b.nvme.complete(0)  # no Asynchronous Event Request outstanding
    b.nvme_admin(WINDOW, 0x0C, cid=31, reap=False)
    assert b.irqs == []  # an event request completes only when something happens
    assert b.nvme.complete(0)
    assert b.irqs == [(1, 0x40)]
    assert b.nvme_reap(WINDOW) == (0, 0x040002)  # Notice: Namespace Attribute Changed


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


def test_admin_queue_depth_comes_from_aqa_and_a_full_queue_stalls_the_fetch():
    b = board()
    b.enable_nvme(WINDOW, io_queues=None)  # AQA: 32-entry admin queues
    vectors_to_cpu(b, 5)
    get_features = 0x0A
    for _ in range(31):
        b.nvme_admin(WINDOW, get_features, 0x07, reap=False)
    assert b.nvme.admin_commands == 31 and len(b.irqs) == 31  # the completion queue is full
    b.nvme_admin(WINDOW, get_features, 0x07, reap=False)  # the tail wraps to 0
    assert b.nvme.admin_commands == 31  # no room for its completion: not fetched yet
    assert b.nvme_reap(WINDOW) == (0, 3 | 3 << 16)  # the host frees one entry...
    assert b.nvme.admin_commands == 32 and len(b.irqs) == 32  # ...and the fetch resumes
    for _ in range(31):
        assert b.nvme_reap(WINDOW) is not None
    assert b.nvme_reap(WINDOW) is None and b.nvme_phase == 0  # wrapped: phase inverted


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


def test_each_queue_signals_the_vector_its_create_command_named():
    b = board("{ queues = 4, msix_vectors = 2 }")
    b.enable_nvme(WINDOW, vector=lambda q: 0 if q == 4 else (None if q == 3 else 1))
    vectors_to_cpu(b, 2)
    for q in range(1, 5):
        assert b.nvme.complete(q)
    assert [v for _, v in b.irqs] == [0x41, 0x41, 0x40]  # queue 3: interrupts off (IEN 0)
    with pytest.raises(ValueError, match="no queue 5"):
        b.nvme.complete(5)


def test_no_message_with_msix_disabled():
    b = board()
    b.enable_nvme(WINDOW)
    dropped = b.nvme.msix.dropped  # the admin commands' completions, before MSI-X was on
    assert b.nvme.complete(1)  # posted, but the interrupt would be INTx: not modelled
    assert b.irqs == [] and b.nvme.msix.dropped == dropped + 1


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
