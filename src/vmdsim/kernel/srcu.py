"""Sleepable RCU: one ``srcu_struct`` per protected domain (the VMD keeps one per vector).

``srcu_read_lock(ssp)`` returns a token the matching ``srcu_read_unlock`` must
pass back (Linux returns an index 0/1 into its per-CPU counters; the model's
token names the reader exactly, which is what lets ``synchronize_srcu`` wait
for precisely the readers that began before it). ``synchronize_srcu(ssp)``
returns only once every reader of *that* ``srcu_struct`` that began before the
call has ended; readers of other ``srcu_struct``\\ s and of plain RCU do not
delay it. Readers may sleep.

``cleanup_srcu_struct`` with readers still inside is the bug Linux WARNs
about; using a cleaned-up ``srcu_struct`` is reported the same way.
"""

from __future__ import annotations

import itertools

from vmdsim.kernel.rcu import RcuError
from vmdsim.kernel.sched import Context, current
from vmdsim.kernel.shared import RCU_LOCK, RCU_UNLOCK, WAIT, WRITE, KObject, sched_point


class srcu_struct(KObject):
    """The reader bookkeeping of one SRCU domain."""

    def __init__(self, name: str = "srcu") -> None:
        self.name = name
        self.readers: dict[int, Context] = {}
        self._tokens = itertools.count(1)
        self.initialized = False
        self.gp_completed = 0

    def __repr__(self) -> str:
        return f"<srcu_struct {self.name}>"


def _check(ssp: srcu_struct, what: str) -> None:
    if not ssp.initialized:
        raise RcuError(f"{what}({ssp.name}): srcu_struct not initialised "
                       "(init_srcu_struct missing, or already cleaned up)")


def init_srcu_struct(ssp: srcu_struct) -> int:
    ssp.readers.clear()
    ssp.initialized = True
    return 0


def cleanup_srcu_struct(ssp: srcu_struct) -> None:
    _check(ssp, "cleanup_srcu_struct")
    if ssp.readers:
        names = ", ".join(c.name for c in ssp.readers.values())
        raise RcuError(f"cleanup_srcu_struct({ssp.name}): active readers: {names}")
    ssp.initialized = False


def srcu_read_lock(ssp: srcu_struct) -> int:
    _check(ssp, "srcu_read_lock")
    sched_point(ssp, "readers", RCU_LOCK)
    token = next(ssp._tokens)
    ssp.readers[token] = current()
    return token


def srcu_read_unlock(ssp: srcu_struct, idx: int) -> None:
    _check(ssp, "srcu_read_unlock")
    if idx not in ssp.readers:
        raise RcuError(f"srcu_read_unlock({ssp.name}, {idx}): no such reader")
    sched_point(ssp, "readers", RCU_UNLOCK)
    ctx = ssp.readers.pop(idx)
    # What a grace-period wait for this one reader reads.
    ctx.cpu.sched.note_effect((ssp.kname(), f"reader {ctx.name}", WRITE))


def synchronize_srcu(ssp: srcu_struct) -> None:
    """Wait until every reader of ``ssp`` that began before this call has ended."""
    _check(ssp, "synchronize_srcu")
    ctx = current()
    if ctx in ssp.readers.values():
        raise RcuError(f"{ctx.name}: synchronize_srcu({ssp.name}) inside its own read-side "
                       "section would wait for itself")
    sched_point(ssp, "readers", WAIT)
    # One reader at a time, as synchronize_rcu: each wait is ended by one unlock.
    for tok, reader in sorted(ssp.readers.items()):

        def ended(tok: int = tok) -> bool:
            return tok not in ssp.readers

        ctx.cpu.sched.block_until(ended, f"an SRCU grace period of {ssp.name}", sleep=True,
                                  access=(ssp.kname(), f"reader {reader.name}", WAIT))
    ssp.gp_completed += 1
