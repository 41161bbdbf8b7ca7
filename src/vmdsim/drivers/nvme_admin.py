"""The NVMe driver's admin commands (``drivers/nvme/host/core.c`` and ``pci.c``).

Linux sends admin commands as block-layer requests on the admin queue:
``__nvme_submit_sync_cmd`` takes a request (a tag of the preallocated admin
tag set), ``nvme_queue_rq`` copies the 64-byte command into the submission
queue's DMA memory at ``sq_tail`` and rings the tail doorbell, and the
submitter sleeps until the request completes. The admin queue's interrupt
runs ``nvme_irq`` -> ``nvme_poll_cq``, which walks the completion queue in
DMA memory while the phase tag of the entry at ``cq_head`` matches the
queue's ``cq_phase`` (inverted on each wrap), finds each entry's request by
its command identifier (``nvme_handle_cqe``), completes it, and writes the
new head to the completion doorbell.

If no completion arrives within the admin timeout, ``nvme_timeout`` first
polls the queue with its IRQ disabled ("did we miss an interrupt?"): a
completion found that way is logged as "timeout, completion polled" and
the command succeeds; otherwise the command is cancelled (-EINTR) and a
controller still being set up is disabled by the caller's unwind.

The model's simplifications: a tag is the lowest free command identifier (no
blk-mq); the timeout has no clock (see :mod:`vmdsim.kernel.completion`);
Linux's ``dev_warn(ctrl->device, ...)`` lines go to the PCI device's log as
the driver's other messages do.
"""

from __future__ import annotations

from typing import Any

from vmdsim.kernel.completion import (
    complete,
    completion,
    try_wait_for_completion,
    wait_for_completion_timeout,
)
from vmdsim.kernel.errno import EBUSY, EINTR
from vmdsim.kernel.io import readl, writel
from vmdsim.kernel.pci.msi import pci_irq_vector
from vmdsim.kernel.printk import KERN_WARNING, printk


def ctrl_log(dev: Any, level: int, msg: str) -> None:
    """``dev_info``/``dev_warn``/``dev_err`` on ``dev->ctrl.device``: the controller's class
    device, so the line reads ``nvme nvme0: msg``."""
    printk(dev.pdev.k, level, f"nvme {dev.name}: {msg}")


# include/linux/nvme.h
nvme_admin_delete_sq = 0x00
nvme_admin_create_sq = 0x01
nvme_admin_delete_cq = 0x04
nvme_admin_create_cq = 0x05
nvme_admin_set_features = 0x09
nvme_admin_async_event = 0x0C
NVME_AQ_DEPTH = 32
NVME_NR_AEN_COMMANDS = 1
NVME_AQ_BLK_MQ_DEPTH = NVME_AQ_DEPTH - NVME_NR_AEN_COMMANDS  # tags below it; AERs above
NVME_FEAT_NUM_QUEUES = 0x07
NVME_QUEUE_PHYS_CONTIG = 1 << 0
NVME_CQ_IRQ_ENABLED = 1 << 1
NVME_SQ_PRIO_MEDIUM = 2 << 1
NVME_SC_HOST_ABORTED_CMD = 0x371

ADMIN_OPCODE_NAMES = {nvme_admin_delete_sq: "Delete I/O Submission Queue",
                      nvme_admin_create_sq: "Create I/O Submission Queue",
                      nvme_admin_delete_cq: "Delete I/O Completion Queue",
                      nvme_admin_create_cq: "Create I/O Completion Queue",
                      nvme_admin_set_features: "Set Features"}
SQE_SIZE = 64
CQE_SIZE = 16
# nvme_queue.flags (drivers/nvme/host/pci.c; the admin and I/O queues share them)
NVMEQ_ENABLED = 1 << 0
NVMEQ_POLLED = 1 << 3


class nvme_request:
    """One admin command in flight: its tag, and what its completion reported."""

    def __init__(self, tag: int, opcode: int) -> None:
        self.tag = tag
        self.opcode = opcode
        self.status = -1
        self.result = 0
        self.done = completion(f"nvme admin tag {tag}")


def nvme_command(opcode: int, **dwords: int) -> list[int]:
    """A zeroed 16-dword submission entry with ``opcode``; ``cdw10=...`` etc. set the rest
    (``prp1`` fills dwords 6-7)."""
    cmd = [0] * 16
    cmd[0] = opcode
    for name, value in dwords.items():
        if name == "prp1":
            cmd[6], cmd[7] = value & 0xFFFFFFFF, value >> 32
        else:
            cmd[int(name.removeprefix("cdw"))] = value & 0xFFFFFFFF
    return cmd


def nvme_submit_sync_cmd(dev: Any, cmd: list[int]) -> tuple[int, int]:
    """Send ``cmd`` on the admin queue and wait for it: (status, result DW0).

    Status 0 is success, > 0 the controller's status (``SCT << 8 | SC``),
    < 0 an errno (-EINTR: cancelled after a timeout)."""
    nvmeq = dev.queues[0]
    tag = 0
    while tag in dev.admin_tags:
        tag += 1
    if tag >= NVME_AQ_BLK_MQ_DEPTH:
        return -EBUSY, 0  # every admin tag in use (blk-mq would make the caller wait)
    req = nvme_request(tag, cmd[0] & 0xFF)
    dev.admin_tags[tag] = req
    cmd = [(cmd[0] & 0xFFFF) | tag << 16, *cmd[1:]]
    try:
        nvme_sq_copy_cmd(nvmeq, cmd)
        writel(nvmeq.sq_tail, nvmeq.q_db)  # nvme_write_sq_db
        if not wait_for_completion_timeout(dev.k, req.done):
            nvme_timeout(dev, req)
    finally:
        del dev.admin_tags[tag]
    return req.status, req.result


def nvme_sq_copy_cmd(nvmeq: Any, cmd: list[int]) -> None:
    entry = nvmeq.sq_cmds.cpu_addr + nvmeq.sq_tail * SQE_SIZE
    for i, dw in enumerate(cmd):
        writel(dw, entry + 4 * i)
    nvmeq.sq_tail = (nvmeq.sq_tail + 1) % nvmeq.q_depth


def nvme_timeout(dev: Any, req: nvme_request) -> None:
    """The admin timeout passed: poll for a missed completion, else cancel the command."""
    nvmeq = dev.queues[0]
    nvme_poll_irqdisable(nvmeq)
    where = (f"I/O tag {req.tag} ({req.tag:04x}) opcode {req.opcode:#x} "
             f"({ADMIN_OPCODE_NAMES.get(req.opcode, 'Admin Cmd')}) QID 0 timeout")
    if try_wait_for_completion(req.done):
        ctrl_log(dev, KERN_WARNING, f"{where}, completion polled")
        return
    ctrl_log(dev, KERN_WARNING, f"{where}, disable controller")
    req.status = -EINTR


def nvme_poll_irqdisable(nvmeq: Any) -> None:
    """Poll the queue with its IRQ disabled, so its handler cannot run meanwhile."""
    dev = nvmeq.dev
    if not nvmeq.flags & NVMEQ_ENABLED:
        nvme_poll_admin_cq(nvmeq)
        return
    irq = pci_irq_vector(dev.pdev, nvmeq.cq_vector)
    dev.k.irq.disable_irq(irq)
    nvme_poll_admin_cq(nvmeq)
    dev.k.irq.enable_irq(irq)


def nvme_poll_admin_cq(nvmeq: Any) -> int:
    """Walk the admin completion queue by phase tag and complete what is there."""
    found = 0
    while True:
        entry = nvmeq.cqes.cpu_addr + nvmeq.cq_head * CQE_SIZE
        dw3 = readl(entry + 12)
        if (dw3 >> 16) & 1 != nvmeq.cq_phase or dw3 == 0xFFFFFFFF:
            break
        nvme_handle_cqe(nvmeq, dw3 & 0xFFFF, dw3 >> 17, readl(entry))
        found += 1
        head = nvmeq.cq_head + 1
        if head == nvmeq.q_depth:
            head = 0
            nvmeq.cq_phase ^= 1
        nvmeq.cq_head = head
    if found:
        writel(nvmeq.cq_head, nvmeq.q_db + 4)  # nvme_ring_cq_doorbell
        nvmeq.completions += found
    return found


def nvme_pci_submit_async_event(dev: Any) -> None:
    """Post an Asynchronous Event Request with the reserved command id; it completes when
    the controller has an event to report (``nvme_pci_submit_async_event``)."""
    nvmeq = dev.queues[0]
    cmd = nvme_command(nvme_admin_async_event)
    cmd[0] |= NVME_AQ_BLK_MQ_DEPTH << 16
    nvme_sq_copy_cmd(nvmeq, cmd)
    writel(nvmeq.sq_tail, nvmeq.q_db)


def nvme_complete_async_event(dev: Any, status: int, result: int) -> None:
    """An event came: count it and ask for the next one (Linux: from ``async_event_work``;
    the model resubmits at once)."""
    dev.async_events += 1
    if status == 0:
        nvme_pci_submit_async_event(dev)


def nvme_handle_cqe(nvmeq: Any, cid: int, status: int, result: int) -> None:
    dev = nvmeq.dev
    if cid >= NVME_AQ_BLK_MQ_DEPTH:  # nvme_is_aen_req
        nvme_complete_async_event(dev, status, result)
        return
    req = dev.admin_tags.get(cid)
    if req is None or req.status != -1:
        ctrl_log(dev, KERN_WARNING, f"invalid id {cid} completed on queue {nvmeq.qid}")
        return
    req.status, req.result = status, result
    complete(req.done)
