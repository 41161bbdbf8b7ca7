"""Reader-writer semaphores over every schedule: shared reads, exclusive writes, and a
waiting writer served before a new reader (so a nested read can deadlock)."""

from __future__ import annotations

from types import SimpleNamespace

from vmdsim.check.explore import explore
from vmdsim.check.program import Program
from vmdsim.kernel.core import Kernel
from vmdsim.kernel.rwsem import down_read, down_write, rw_semaphore, up_read, up_write
from vmdsim.kernel.shared import KObject, shared


class Room(KObject):
    """Who is inside: one flag per thread (a count would race between the readers)."""

    r1 = shared()
    r2 = shared()
    w = shared()

    def __init__(self) -> None:
        self.__dict__.update(r1=False, r2=False, w=False)


def _setup() -> SimpleNamespace:
    return SimpleNamespace(k=Kernel(3), sem=rw_semaphore("sem"), room=Room(), seen=set())


def _read(w: SimpleNamespace, me: str) -> None:
    down_read(w.sem)
    setattr(w.room, me, True)
    assert not w.room.w, "a reader is in with a writer"
    w.seen.add(w.room.r1 + w.room.r2)
    setattr(w.room, me, False)
    up_read(w.sem)


def _write(w: SimpleNamespace) -> None:
    down_write(w.sem)
    w.room.w = True
    assert not (w.room.r1 or w.room.r2), "a writer is in with a reader"
    w.room.w = False
    up_write(w.sem)


def test_readers_share_and_a_writer_is_alone_in_every_schedule():
    seen: set[int] = set()

    def check(w: SimpleNamespace) -> None:
        seen.update(w.seen)

    program = Program("rwsem", _setup, lambda w: [(0, lambda: _read(w, "r1"), "r1"),
                                                  (1, lambda: _read(w, "r2"), "r2"),
                                                  (2, lambda: _write(w), "w")], check)
    r = explore(program, "dpor")
    assert r.verdict == "safe", r.as_dict()["message"]
    assert seen == {1, 2}  # some schedule has both readers inside at once


def test_a_nested_read_deadlocks_behind_a_writer_that_queued_between():
    def nested(w: SimpleNamespace) -> None:
        down_read(w.sem)
        down_read(w.sem)  # a writer queued since waits for the outer read; this waits for it
        up_read(w.sem)
        up_read(w.sem)

    program = Program("nested-read", _setup, lambda w: [(0, lambda: nested(w), "nested"),
                                                        (1, lambda: _write(w), "w")])
    r = explore(program, "dpor")
    assert r.verdict == "deadlock"
    message = r.as_dict()["message"]
    assert "nested on CPU0 waits for sem for reading" in message
    assert "w on CPU1 waits for sem for writing" in message
