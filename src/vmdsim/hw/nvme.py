"""An NVMe controller, as far as a driver's probe, interrupts and hot-plug need one.

What the model has, as the NVMe 1.4 and PCIe specs say:

- A PCIe endpoint of class 0x010802 (NVM Express) with a 64-bit BAR0
  (16 KiB, more for large MSI-X tables), PCI power management, AER and,
  unless ``ltr_max_snoop`` is None, the LTR extended capability whose Max
  Snoop / Max No-Snoop Latency registers firmware may have left at 0 (what
  the VMD driver's BIOS power-management quirk looks for).
- BAR0 controller registers (names as Linux's ``include/linux/nvme.h``):
  CAP (MQES = queue depth - 1, CQR, TO, DSTRD = 0, CSS = NVM), VS = 1.4,
  INTMS/INTMC, CC, CSTS, AQA, ASQ, ACQ. Writing CC.EN = 1 makes the
  controller ready (CSTS.RDY) at once; CC.EN = 0 resets it, dropping every
  queue's state; a shutdown notification (CC.SHN) completes at once
  (CSTS.SHST = complete). Registers take aligned dword or qword accesses.
- MSI-X with its table at BAR0 + 0x2000 and PBA after it; ``msix_vectors``
  entries (default: one per queue).
- Queues: queue 0 is the admin queue, queues 1..N the I/O queues. Their
  doorbells are at 0x1000 + 8q (submission tail) and 0x1004 + 8q
  (completion head).

Queues are set up as on real controllers. CC.EN = 1 brings up the admin
queues at ASQ/ACQ (sizes from AQA); the host then issues admin commands
through them (:mod:`vmdsim.hw.nvme_admin`: Set Features Number of Queues,
Create/Delete I/O Completion and Submission Queue): entries are fetched from
and posted to host memory by DMA, with phase tags, and each admin completion
signals MSI-X entry 0. An I/O completion queue signals the interrupt vector
its Create I/O Completion Queue command named, and only if that command set
IEN.

Interrupts: :meth:`complete` is the controller finishing a command on I/O
queue q (the hardware side: a test or a workload), or, on queue 0, an
asynchronous event completing an outstanding Asynchronous Event Request. It
posts a completion entry and sends the vector of that completion queue. A
queue that was not created (or was deleted, or a controller that is not
ready) refuses.

Does I/O queue q have work? A real driver looks at the phase tag of the
next completion entry in host memory. The model keeps no I/O queue memory
and offers the same fact through MMIO: a *read* of queue q's completion head
doorbell returns the number of posted entries the driver has not consumed
(real controllers leave doorbell reads undefined). The driver consumes
entries as on real hardware, by writing the new head index to that
doorbell. A vector's handler that reads 0 was called for a shared vector's
other users, not for this queue. (The admin queue has no such shortcut: its
entries are in host memory.)

Simplifications: I/O commands are not fetched or executed (I/O submission
doorbell writes are recorded and ignored; I/O completions come only from
:meth:`complete`, and their entries are not written to host memory). Admin
commands complete at once, in the doorbell write that submits them. No
controller memory buffer, namespaces, Identify, interrupt coalescing, MSI or
INTx (INTMS/INTMC are plain registers, as the spec says they must not be
used with MSI-X), no power-state effects.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import cast

from vmdsim.hw.aer import AerCapability, send_message, signal_error
from vmdsim.hw.function import Bar, PciFunction
from vmdsim.hw.msix import MsixCapability
from vmdsim.hw.nvme_admin import (
    CQE_SIZE,
    NVME_AER_NOTICE_NS_CHANGED_RESULT,
    SQE_SIZE,
    AdminState,
    nvme_admin_create_cq,
    nvme_admin_create_sq,
    nvme_admin_delete_cq,
    nvme_admin_delete_sq,
)
from vmdsim.hw.observe import DEVICE_READ, DEVICE_WRITE, device_access, observer
from vmdsim.hw.regs import (
    PCI_CAP_ID_PM,
    PCI_CLASS_STORAGE_EXPRESS,
    PCI_EXP_TYPE_ENDPOINT,
    PCI_EXT_CAP_ID_LTR,
    PCI_EXT_CAP_LTR_SIZEOF,
    PCI_LTR_MAX_SNOOP_LAT,
    PCI_LTR_SCALE_MASK,
    PCI_LTR_VALUE_MASK,
    PCI_MSIX_ENTRY_SIZE,
    PCI_PM_CAP_PME_D0,
    PCI_PM_CTRL,
    PCI_PM_CTRL_NO_SOFT_RESET,
    PCI_PM_CTRL_PME_ENABLE,
    PCI_PM_CTRL_PME_STATUS,
    PCI_PM_CTRL_STATE_MASK,
    PCI_PM_PMC,
    PCI_PM_SIZEOF,
    PCI_VENDOR_ID_INTEL,
    PCI_PM_CAP_PME_D3hot,
)

# Controller registers (include/linux/nvme.h)
NVME_REG_CAP = 0x0000
NVME_REG_VS = 0x0008
NVME_REG_INTMS = 0x000C
NVME_REG_INTMC = 0x0010
NVME_REG_CC = 0x0014
NVME_REG_CSTS = 0x001C
NVME_REG_NSSR = 0x0020
NVME_REG_AQA = 0x0024
NVME_REG_ASQ = 0x0028
NVME_REG_ACQ = 0x0030
NVME_REG_DBS = 0x1000
NVME_CC_ENABLE = 1 << 0
NVME_CC_SHN_MASK = 3 << 14
NVME_CC_WMASK = 0x00FFFFF1  # EN, CSS, MPS, AMS, SHN, IOSQES, IOCQES
NVME_CSTS_RDY = 1 << 0
NVME_CSTS_CFS = 1 << 1
NVME_CSTS_SHST_CMPLT = 2 << 2
NVME_CSTS_SHST_MASK = 3 << 2
NVME_AQA_WMASK = 0x0FFF0FFF
NVME_VS_1_4 = 0x00010400

PCI_DEVICE_ID_INTEL_NVME_P4500 = 0x0A54
NVME_MSIX_TABLE = 0x2000
NVME_BAR0_MIN = 0x4000
NVME_MAX_QUEUES = 512  # doorbell pairs that fit between 0x1000 and the MSI-X table
NVME_TIMEOUT_500MS = 20  # CAP.TO: 10 s


def _cap(queue_depth: int) -> int:
    return ((queue_depth - 1)  # MQES
            | 1 << 16  # CQR: queues must be physically contiguous
            | NVME_TIMEOUT_500MS << 24
            | 1 << 37)  # CSS: NVM command set


class NvmeController(PciFunction):
    """One NVMe drive: ``nr_io_queues`` I/O queues plus the admin queue."""

    msix: MsixCapability  # every NVMe controller has MSI-X (set in the constructor)

    def __init__(
        self,
        name: str,
        *,
        nr_io_queues: int = 8,
        msix_vectors: int | None = None,
        vendor: int = PCI_VENDOR_ID_INTEL,
        device_id: int = PCI_DEVICE_ID_INTEL_NVME_P4500,
        ltr_max_snoop: int | None = 0,
        queue_depth: int = 1024,
        revision: int = 0,
    ) -> None:
        nq = nr_io_queues + 1
        if not 1 <= nr_io_queues < NVME_MAX_QUEUES:
            raise ValueError(f"{name}: {nr_io_queues} I/O queues outside "
                             f"1..{NVME_MAX_QUEUES - 1} (doorbells end at {NVME_MSIX_TABLE:#x})")
        nvec = nq if msix_vectors is None else msix_vectors
        if not 1 <= nvec <= 2048:
            raise ValueError(f"{name}: MSI-X table size {nvec} outside 1..2048")
        if not 2 <= queue_depth <= 0x10000:
            raise ValueError(f"{name}: queue depth {queue_depth} outside 2..65536 (CAP.MQES)")
        if ltr_max_snoop is not None and ltr_max_snoop & ~(PCI_LTR_VALUE_MASK
                                                           | PCI_LTR_SCALE_MASK):
            raise ValueError(f"{name}: LTR max snoop latency {ltr_max_snoop:#x} has bits "
                             "outside value (9:0) and scale (12:10)")
        pba = NVME_MSIX_TABLE + ((nvec * PCI_MSIX_ENTRY_SIZE + 0xFFF) & ~0xFFF)
        bar0 = max(NVME_BAR0_MIN, 1 << (pba + (nvec + 63) // 64 * 8 - 1).bit_length())
        super().__init__(name, vendor, device_id, PCI_CLASS_STORAGE_EXPRESS,
                         bars=(Bar(0, bar0),), subsystem=(vendor, device_id), interrupt_pin=1,
                         revision=revision)
        self.nr_io_queues = nr_io_queues
        self.nr_queues = nq
        self.queue_depth = queue_depth
        self.add_pcie_capability(PCI_EXP_TYPE_ENDPOINT, ltr=ltr_max_snoop is not None)
        self.msix = MsixCapability(self, nvec, 0, NVME_MSIX_TABLE, 0, pba)
        self._add_pm_capability()
        self.aer = AerCapability(self)
        if ltr_max_snoop is not None:
            pos = self.cfg.add_ext_capability(PCI_EXT_CAP_ID_LTR, 1, PCI_EXT_CAP_LTR_SIZEOF)
            lat_mask = PCI_LTR_VALUE_MASK | PCI_LTR_SCALE_MASK
            self.cfg.init(pos + PCI_LTR_MAX_SNOOP_LAT, 4, ltr_max_snoop | ltr_max_snoop << 16,
                          wmask=lat_mask | lat_mask << 16)
        self.finalize()
        self._cap = _cap(queue_depth)
        self.lost_messages = 0  # PME/error messages with no root port above
        # I/O completions: every one posted is consumed (the host moved the head past it),
        # discarded (the queue went away with it: controller reset, queue deleted), or
        # still pending: completions = consumed + discarded + pending on I/O queues.
        self.completions = 0  # I/O entries posted
        self.consumed = 0
        self.discarded = 0
        self.events = 0  # asynchronous events reported (admin completions of AERs)
        self.admin_posted = 0  # admin completion entries written (commands and events)
        self.signalled = 0  # I/O completions that fired their queue's vector (IEN set)
        self.completions_refused = 0  # complete() while not ready, no such queue, or full
        self.admin_commands = 0  # admin submission entries executed
        self.invalid_doorbell_writes = 0
        self._tail, self._head = [0] * nq, [0] * nq  # empty: the first reset discards nothing
        self.reset_state()

    def _add_pm_capability(self) -> None:
        cfg = self.cfg
        self.pm_cap = pos = cfg.add_capability(PCI_CAP_ID_PM, PCI_PM_SIZEOF)
        cfg.init(pos + PCI_PM_PMC, 2, 0x3 | PCI_PM_CAP_PME_D0 | PCI_PM_CAP_PME_D3hot)
        cfg.init(pos + PCI_PM_CTRL, 2, PCI_PM_CTRL_NO_SOFT_RESET,
                 wmask=PCI_PM_CTRL_STATE_MASK | PCI_PM_CTRL_PME_ENABLE,
                 w1c=PCI_PM_CTRL_PME_STATUS)

    # -- what the controller's own logic consults, as the CPU addresses it --------------
    def _report(self, off: int, size: int, kind: str) -> None:
        """A register of BAR0 read or changed by the controller itself (``hw/observe.py``).
        State with no register of its own is reported at the register that shows it:
        readiness at CSTS; a queue's existence, vector, head and tail at its doorbells."""
        base = self.bar_address(0)
        if base:
            device_access(base + off, size, kind)

    def _report_queue(self, q: int, kind: str) -> None:
        self._report(NVME_REG_DBS + 8 * q, 8, kind)

    def _drop_entries(self, queues: Iterable[int]) -> None:
        """Queues go away (a reset, a deletion): their unconsumed I/O entries are discarded
        and their heads and tails start again at 0."""
        for q in queues:
            if q:
                self.discarded += self.pending(q)
            self._tail[q] = self._head[q] = 0

    def _delete_all_queues(self) -> None:
        nq = self.nr_queues
        if observer.fn is not None:
            self._report(NVME_REG_DBS, 8 * nq, DEVICE_WRITE)
        self._drop_entries(range(nq))
        # _tail: where the controller posts the next completion; _head: what the driver
        # last wrote to the head doorbell
        self._sq_tail = [0] * nq
        self._asq_head = 0  # the next admin submission entry to fetch
        self._acq_phase = 1
        self.admin = AdminState(self.nr_io_queues, self.queue_depth - 1, self.msix.nvec)

    def reset_state(self) -> None:
        self._cc = self._csts = self._aqa = self._asq = self._acq = self._intm = 0
        self._ready = False
        self._depth = [self.queue_depth] * self.nr_queues
        self._asq_depth = 0
        self._delete_all_queues()

    # -- the hardware side ----------------------------------------------------------
    def queue_vector(self, q: int) -> int | None:
        """The MSI-X entry completion queue ``q`` signals: 0 for the admin queue, the IV
        its Create I/O Completion Queue named; None if it does not exist or has IEN clear."""
        if q == 0:
            return 0 if self._ready else None
        cq = self.admin.cqs.get(q)
        return cq.vector if cq is not None and cq.irq_enabled else None

    def queue_exists(self, q: int) -> bool:
        """I/O queue pair ``q`` was created (both its completion and submission queue)."""
        return self._ready and q in self.admin.cqs and q in self.admin.sqs

    def complete(self, q: int) -> bool:
        """A command on queue ``q`` completes: post an entry and send the queue's vector.

        On an I/O queue, some I/O command finished; on the admin queue (0), an
        asynchronous event occurred and completes an outstanding Asynchronous
        Event Request. Returns False, and posts nothing, while the controller is
        not ready, when the host has not created queue ``q`` (or has no event
        request outstanding), when bus mastering is off (the entry could not reach
        host memory), or when the completion queue is full (the driver has not
        consumed it).
        """
        if not 0 <= q < self.nr_queues:
            raise ValueError(f"{self.name}: no queue {q} (admin 0, I/O 1..{self.nr_io_queues})")
        if observer.fn is not None:
            self._report(NVME_REG_CSTS, 4, DEVICE_READ)
            self._report_queue(q, DEVICE_WRITE)  # its tail moves: what the doorbell reads
        if q == 0:
            depth = self._depth[0]
            if (not self._ready or not self.admin.aers or not self.bus_master_enabled
                    or (self._tail[0] + 1) % depth == self._head[0]):
                self.completions_refused += 1
                return False
            self.events += 1
            self._post_admin(self.admin.aers.pop(0), 0, NVME_AER_NOTICE_NS_CHANGED_RESULT)
            return True
        if not self.queue_exists(q) or not self.bus_master_enabled:
            # (without bus mastering the controller cannot write the entry to host memory)
            self.completions_refused += 1
            return False
        tail = self._tail[q] + 1
        if tail == self._depth[q]:
            tail = 0
        if tail == self._head[q]:
            self.completions_refused += 1
            return False
        self._tail[q] = tail
        self.completions += 1
        vector = self.queue_vector(q)
        if vector is not None:
            self.signalled += 1
            self.msix.fire(vector)
        return True

    def pending(self, q: int) -> int:
        """Posted entries of queue ``q`` not yet consumed (what the head doorbell reads)."""
        return (self._tail[q] - self._head[q]) % self._depth[q]

    def signal_pme(self) -> bool:
        """The drive wants service: PME Status, and a PM_PME message if PME_En is set."""
        cfg, pos = self.cfg, self.pm_cap + PCI_PM_CTRL
        cfg.hw_set(pos, 2, PCI_PM_CTRL_PME_STATUS)
        if not cfg.hw_read(pos, 2) & PCI_PM_CTRL_PME_ENABLE:
            return False
        return send_message(self, "receive_pme")

    def report_error(self, bit: int, *, correctable: bool) -> bool:
        """The drive detects AER error ``bit`` (a PCI_ERR_UNC_* or PCI_ERR_COR_* bit)."""
        return signal_error(self, self.aer, bit, correctable=correctable)

    # -- BAR0 -------------------------------------------------------------------------
    def mmio_read(self, bar: int, off: int, size: int) -> int:
        if self.msix.claims(bar, off):
            return self.msix.mmio_read(bar, off, size)
        self._check(off, size)
        if size == 8:
            return self._read32(off) | self._read32(off + 4) << 32
        return self._read32(off)

    def mmio_write(self, bar: int, off: int, size: int, value: int) -> None:
        if self.msix.claims(bar, off):
            self.msix.mmio_write(bar, off, size, value)
            return
        self._check(off, size)
        self._write32(off, value & 0xFFFFFFFF)
        if size == 8:
            self._write32(off + 4, value >> 32)

    def _check(self, off: int, size: int) -> None:
        if size not in (4, 8) or off % size:
            raise self.mmio_error("NVMe registers", off, size,
                                  "access must be an aligned dword or qword")
        if size == 8 and off >= NVME_REG_DBS:
            raise self.mmio_error("NVMe doorbell", off, size, "access must be a dword")

    def _read32(self, off: int) -> int:
        if off < NVME_REG_DBS:
            regs = {
                NVME_REG_CAP: self._cap & 0xFFFFFFFF, NVME_REG_CAP + 4: self._cap >> 32,
                NVME_REG_VS: NVME_VS_1_4, NVME_REG_INTMS: self._intm,
                NVME_REG_INTMC: self._intm, NVME_REG_CC: self._cc, NVME_REG_CSTS: self._csts,
                NVME_REG_AQA: self._aqa, NVME_REG_ASQ: self._asq & 0xFFFFFFFF,
                NVME_REG_ASQ + 4: self._asq >> 32, NVME_REG_ACQ: self._acq & 0xFFFFFFFF,
                NVME_REG_ACQ + 4: self._acq >> 32,
            }
            return regs.get(off, 0)
        q, which = divmod(off - NVME_REG_DBS, 8)
        if q < self.nr_queues and which == 4:
            return self.pending(q)
        return 0

    def _write32(self, off: int, value: int) -> None:
        if off == NVME_REG_CC:
            self._cc_written(value & NVME_CC_WMASK)
        elif off == NVME_REG_INTMS:
            self._intm |= value
        elif off == NVME_REG_INTMC:
            self._intm &= ~value
        elif off == NVME_REG_AQA:
            self._aqa = value & NVME_AQA_WMASK
        elif off in (NVME_REG_ASQ, NVME_REG_ASQ + 4, NVME_REG_ACQ, NVME_REG_ACQ + 4):
            name = "_asq" if off < NVME_REG_ACQ else "_acq"
            old = getattr(self, name)
            if off & 4:
                new = (old & 0xFFFFFFFF) | value << 32
            else:
                new = (old & ~0xFFFFFFFF) | (value & ~0xFFF)  # 4 KiB aligned
            setattr(self, name, new)
        elif off >= NVME_REG_DBS:
            self._doorbell(off, value)

    def _cc_written(self, cc: int) -> None:
        if observer.fn is not None:
            self._report(NVME_REG_CSTS, 4, DEVICE_WRITE)
        old, self._cc = self._cc, cc
        if cc & NVME_CC_ENABLE and not old & NVME_CC_ENABLE:
            self._delete_all_queues()
            self._depth = [((self._aqa >> 16) & 0xFFF) + 1] + [self.queue_depth] * (
                self.nr_queues - 1)
            self._asq_depth = (self._aqa & 0xFFF) + 1
            self._csts |= NVME_CSTS_RDY
            self._ready = True
        elif old & NVME_CC_ENABLE and not cc & NVME_CC_ENABLE:
            self._csts = 0  # controller reset: not ready, every queue deleted
            self._ready = False
            self._delete_all_queues()
        if cc & NVME_CC_SHN_MASK:
            self._csts = (self._csts & ~NVME_CSTS_SHST_MASK) | NVME_CSTS_SHST_CMPLT

    def _doorbell(self, off: int, value: int) -> None:
        q, which = divmod(off - NVME_REG_DBS, 8)
        if q >= self.nr_queues or not self._ready:
            return  # no such queue, or the controller is disabled: ignored
        if q and (q not in self.admin.cqs if which else q not in self.admin.sqs):
            self.invalid_doorbell_writes += 1  # a queue the host never created
            return
        if which == 0:
            depth = self._asq_depth if q == 0 else self.admin.sqs[q].depth
            if value >= depth:
                self.invalid_doorbell_writes += 1
            else:
                self._sq_tail[q] = value
                if q == 0:
                    self._fetch_admin()
            return
        depth = self._depth[q]
        if value >= depth or (value - self._head[q]) % depth > self.pending(q):
            self.invalid_doorbell_writes += 1  # a real controller reports an async event
            return
        if q:
            self.consumed += (value - self._head[q]) % depth
        self._head[q] = value
        if q == 0:
            self._fetch_admin()  # room again in a full admin completion queue

    # -- admin commands -----------------------------------------------------------------
    def _fetch_admin(self) -> None:
        """Fetch, execute and complete admin entries up to the submission tail, while the
        admin completion queue has room (a full one stalls the fetch, as the spec says)."""
        depth = self._depth[0]
        while self._ready and self._asq_head != self._sq_tail[0]:
            if (self._tail[0] + 1) % depth == self._head[0]:
                return
            base = self._asq + self._asq_head * SQE_SIZE
            fetched = [self.bus_master_read(base + 4 * i, 4) for i in range(16)]
            if any(dw is None for dw in fetched):
                self._csts |= NVME_CSTS_CFS  # a failed DMA fetch: controller fatal status
                return
            cmd = cast(list[int], fetched)  # every dword arrived
            self._asq_head = (self._asq_head + 1) % self._asq_depth
            self.admin_commands += 1
            done = self.admin.execute(cmd)
            if done is None:
                continue  # an Asynchronous Event Request: completes when an event occurs
            status, result = done
            if observer.fn is not None and cmd[0] & 0xFF in (
                    nvme_admin_create_cq, nvme_admin_delete_cq, nvme_admin_create_sq,
                    nvme_admin_delete_sq):
                self._report_queue(cmd[10] & 0xFFFF, DEVICE_WRITE)
            if not status and cmd[0] & 0xFF in (nvme_admin_create_cq, nvme_admin_delete_cq):
                qid = cmd[10] & 0xFFFF
                self._drop_entries([qid])
                if qid in self.admin.cqs:
                    self._depth[qid] = self.admin.cqs[qid].depth
            elif not status and cmd[0] & 0xFF == nvme_admin_create_sq:
                self._sq_tail[cmd[10] & 0xFFFF] = 0
            self._post_admin(cmd[0] >> 16, status, result)

    def _post_admin(self, cid: int, status: int, result: int) -> None:
        if observer.fn is not None:
            self._report_queue(0, DEVICE_WRITE)
        entry = self._acq + self._tail[0] * CQE_SIZE
        dw3 = cid | self._acq_phase << 16 | status << 17
        for i, dw in enumerate((result, 0, self._asq_head, dw3)):  # DW3 (phase) last
            self.bus_master_write(entry + 4 * i, 4, dw)
        self._tail[0] = (self._tail[0] + 1) % self._depth[0]
        if self._tail[0] == 0:
            self._acq_phase ^= 1
        self.admin_posted += 1
        self.msix.fire(0)
