"""Atomic read-modify-write of a shared field: ``cmpxchg`` (arch/x86/include/asm/cmpxchg.h).

On x86 ``cmpxchg`` is one ``lock cmpxchg`` instruction: it reads the word,
compares it with ``old``, writes ``new`` if they are equal, and returns what
it read, all at once. Here it is one scheduling point, announced as a write
of the field; an exchange that found another value only read it, and the
step is recorded as a read (two failed exchanges on one word commute, as in
Nidhugg and GenMC, which treat a failing compare-exchange as a load).
"""

from __future__ import annotations

from typing import Any

from vmdsim.kernel.sched import current
from vmdsim.kernel.shared import READ, WRITE, KObject, hook, peek, poke


def cmpxchg(obj: KObject, field: str, old: Any, new: Any) -> Any:
    """If ``obj.field == old`` set it to ``new``; return the value found, atomically."""
    fn = hook.fn
    if fn is not None:
        fn(obj, field, WRITE)
        type(obj)._kasan_check(obj, field, "write")
    cur = peek(obj, field)  # (the step announced itself above)
    if cur == old:
        poke(obj, field, new)
    elif fn is not None:
        current().cpu.sched.note_performed((obj.kname(), field, READ))
    return cur
