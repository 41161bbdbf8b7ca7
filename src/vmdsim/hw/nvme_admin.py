"""The NVMe controller's admin command set, as far as queue setup needs it (NVMe 1.4).

The host writes 64-byte submission entries into the admin submission queue
in host memory (ASQ) and rings the admin submission tail doorbell; the
controller fetches each entry by DMA, executes it and posts a 16-byte
completion entry into the admin completion queue (ACQ), inverting the phase
tag on each pass through the queue, then signals the admin queue's MSI-X
vector (entry 0). Opcodes and status codes as the spec and Linux's
``include/linux/nvme.h`` name them:

- Set Features / Get Features, *Number of Queues* (FID 07h): CDW11 asks for
  NSQR/NCQR (0-based); the completion's DW0 reports what the controller
  allocated, NSQA in 15:0 and NCQA in 31:16 (0-based). The model allocates
  all its queue pairs whatever was asked (the spec allows more or fewer than
  requested; the host takes the minimum).
- Create I/O Completion Queue (05h): PRP1 the queue's base, CDW10 QID 15:0 and
  QSIZE 31:16 (0-based), CDW11 PC bit 0, IEN bit 1, IV 31:16 — the MSI-X
  entry the queue signals. Invalid Queue Identifier, Invalid Queue Size,
  Invalid Interrupt Vector (IV beyond the MSI-X table) and Invalid Field
  (PC = 0 while CAP.CQR requires contiguous queues) as the spec says.
- Create I/O Submission Queue (01h): CDW11 CQID 31:16; Completion Queue
  Invalid if that CQ does not exist.
- Delete I/O Submission Queue (00h) and Delete I/O Completion Queue (04h);
  deleting a CQ that an SQ still uses is Invalid Queue Deletion.
- Asynchronous Event Request (0Ch): not completed when submitted; the
  controller keeps up to AERL + 1 (4) outstanding and completes one when an
  event occurs (:meth:`NvmeController.complete` on queue 0 stands for a
  Notice: Namespace Attribute Changed, log page 04h). One more is
  Asynchronous Event Request Limit Exceeded.
- Anything else: Invalid Command Opcode.

Status in the completion's DW3: phase tag bit 16, SC bits 24:17, SCT bits
27:25 (Linux reads ``status >> 1`` as ``SCT << 8 | SC``).
"""

from __future__ import annotations

from dataclasses import dataclass

# Admin opcodes (enum nvme_admin_opcode)
nvme_admin_delete_sq = 0x00
nvme_admin_create_sq = 0x01
nvme_admin_delete_cq = 0x04
nvme_admin_create_cq = 0x05
nvme_admin_set_features = 0x09
nvme_admin_get_features = 0x0A
nvme_admin_async_event = 0x0C
NVME_FEAT_NUM_QUEUES = 0x07

# Status values as Linux's nvme_req(req)->status holds them: SCT << 8 | SC.
NVME_SC_SUCCESS = 0x000
NVME_SC_INVALID_OPCODE = 0x001
NVME_SC_INVALID_FIELD = 0x002
NVME_SC_CQ_INVALID = 0x100
NVME_SC_QID_INVALID = 0x101
NVME_SC_QUEUE_SIZE = 0x102
NVME_SC_INVALID_VECTOR = 0x108
NVME_SC_INVALID_QUEUE = 0x10C
NVME_SC_ASYNC_LIMIT = 0x105
NVME_AERL = 3  # Identify Controller AERL (0-based): four outstanding requests at most
# An event's completion DW0: type Notice (2), info Namespace Attribute Changed (0), log 04h
NVME_AER_NOTICE_NS_CHANGED_RESULT = 0x2 | 0x00 << 8 | 0x04 << 16

NVME_QUEUE_PHYS_CONTIG = 1 << 0
NVME_CQ_IRQ_ENABLED = 1 << 1

SQE_SIZE = 64
CQE_SIZE = 16


@dataclass
class IoCq:
    """An I/O completion queue the host created: where it lives, its size, its vector."""

    base: int
    depth: int
    vector: int
    irq_enabled: bool


@dataclass
class IoSq:
    base: int
    depth: int
    cqid: int


class AdminState:
    """What the admin commands set up: the queues that exist and the queue count granted."""

    def __init__(self, nr_io_queues: int, mqes: int, nvec: int) -> None:
        self.nr_io_queues = nr_io_queues
        self.mqes = mqes  # the largest queue size the controller takes (0-based)
        self.nvec = nvec  # MSI-X table size: valid interrupt vectors are 0 .. nvec - 1
        self.cqs: dict[int, IoCq] = {}
        self.sqs: dict[int, IoSq] = {}
        self.granted: int | None = None  # I/O queue pairs allocated by Set Features
        self.aers: list[int] = []  # command ids of outstanding Asynchronous Event Requests

    def execute(self, cmd: list[int]) -> tuple[int, int] | None:
        """Execute one submission entry (16 dwords); (status, DW0 of the completion), or
        None for a command that completes later (an Asynchronous Event Request)."""
        opcode = cmd[0] & 0xFF
        if opcode == nvme_admin_async_event:
            if len(self.aers) > NVME_AERL:
                return NVME_SC_ASYNC_LIMIT, 0
            self.aers.append(cmd[0] >> 16)
            return None
        handler = {
            nvme_admin_set_features: self._set_features,
            nvme_admin_get_features: self._get_features,
            nvme_admin_create_cq: self._create_cq,
            nvme_admin_create_sq: self._create_sq,
            nvme_admin_delete_sq: self._delete_sq,
            nvme_admin_delete_cq: self._delete_cq,
        }.get(opcode)
        if handler is None:
            return NVME_SC_INVALID_OPCODE, 0
        return handler(cmd)

    def _num_queues(self) -> int:
        n = self.nr_io_queues - 1
        return n | n << 16

    def _set_features(self, cmd: list[int]) -> tuple[int, int]:
        if cmd[10] & 0xFF != NVME_FEAT_NUM_QUEUES:
            return NVME_SC_INVALID_FIELD, 0
        if cmd[11] & 0xFFFF == 0xFFFF or cmd[11] >> 16 == 0xFFFF:
            return NVME_SC_INVALID_FIELD, 0  # 65536 queues: the spec's invalid value
        self.granted = self.nr_io_queues
        return NVME_SC_SUCCESS, self._num_queues()

    def _get_features(self, cmd: list[int]) -> tuple[int, int]:
        if cmd[10] & 0xFF != NVME_FEAT_NUM_QUEUES:
            return NVME_SC_INVALID_FIELD, 0
        return NVME_SC_SUCCESS, self._num_queues()

    def _qid_ok(self, qid: int) -> bool:
        return 1 <= qid <= (self.granted if self.granted is not None else self.nr_io_queues)

    def _create_cq(self, cmd: list[int]) -> tuple[int, int]:
        qid, qsize = cmd[10] & 0xFFFF, cmd[10] >> 16
        flags, vector = cmd[11] & 0xFFFF, cmd[11] >> 16
        if not self._qid_ok(qid) or qid in self.cqs:
            return NVME_SC_QID_INVALID, 0
        if qsize == 0 or qsize > self.mqes:
            return NVME_SC_QUEUE_SIZE, 0
        if not flags & NVME_QUEUE_PHYS_CONTIG:
            return NVME_SC_INVALID_FIELD, 0  # CAP.CQR: contiguous queues only
        irq_enabled = bool(flags & NVME_CQ_IRQ_ENABLED)
        if irq_enabled and vector >= self.nvec:
            return NVME_SC_INVALID_VECTOR, 0
        base = cmd[6] | cmd[7] << 32
        self.cqs[qid] = IoCq(base, qsize + 1, vector, irq_enabled)
        return NVME_SC_SUCCESS, 0

    def _create_sq(self, cmd: list[int]) -> tuple[int, int]:
        qid, qsize = cmd[10] & 0xFFFF, cmd[10] >> 16
        flags, cqid = cmd[11] & 0xFFFF, cmd[11] >> 16
        if not self._qid_ok(qid) or qid in self.sqs:
            return NVME_SC_QID_INVALID, 0
        if cqid not in self.cqs:
            return NVME_SC_CQ_INVALID, 0
        if qsize == 0 or qsize > self.mqes:
            return NVME_SC_QUEUE_SIZE, 0
        if not flags & NVME_QUEUE_PHYS_CONTIG:
            return NVME_SC_INVALID_FIELD, 0
        self.sqs[qid] = IoSq(cmd[6] | cmd[7] << 32, qsize + 1, cqid)
        return NVME_SC_SUCCESS, 0

    def _delete_sq(self, cmd: list[int]) -> tuple[int, int]:
        qid = cmd[10] & 0xFFFF
        if qid not in self.sqs:
            return NVME_SC_QID_INVALID, 0
        del self.sqs[qid]
        return NVME_SC_SUCCESS, 0

    def _delete_cq(self, cmd: list[int]) -> tuple[int, int]:
        qid = cmd[10] & 0xFFFF
        if qid not in self.cqs:
            return NVME_SC_QID_INVALID, 0
        if any(sq.cqid == qid for sq in self.sqs.values()):
            return NVME_SC_INVALID_QUEUE, 0
        del self.cqs[qid]
        return NVME_SC_SUCCESS, 0
