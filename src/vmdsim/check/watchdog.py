"""A guard against code that never reaches a scheduling point.

The explorer takes control back only at a scheduling point (a shared access,
a lock, a wait). A thread that loops without touching shared state never
gives it back, and no step budget can end that run. The watchdog is a
periodic timer signal: when the count it watches has not moved for
``seconds``, it raises :class:`~vmdsim.kernel.controlled.Livelock` in
whatever is running, which ends the execution with that verdict (or a
setup with an error). Wall-clock time decides only *that* something hangs,
never the schedule, so a run that ends normally is the same with or without
it. Signals exist only in the main thread; elsewhere the guard does nothing.
"""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from vmdsim.kernel.controlled import Livelock

TICK = 0.5  # seconds between checks


@contextmanager
def watchdog(seconds: float, progress: Callable[[], int],
             message: Callable[[], str]) -> Iterator[None]:
    """Raise ``Livelock(message())`` if ``progress()`` stays the same for ``seconds``."""
    if threading.current_thread() is not threading.main_thread() or seconds <= 0:
        yield
        return
    seen = [progress(), time.monotonic()]

    def tick(signum: int, frame: object) -> None:
        now, count = time.monotonic(), progress()
        if count != seen[0]:
            seen[0], seen[1] = count, now
        elif now - seen[1] >= seconds:
            seen[1] = now  # once per stall
            raise Livelock(message())

    old = signal.signal(signal.SIGALRM, tick)
    signal.setitimer(signal.ITIMER_REAL, TICK, TICK)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)
