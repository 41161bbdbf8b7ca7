"""``struct completion`` (kernel/sched/completion.c): one thread waits until another says done.

``complete(x)`` counts one completion; ``wait_for_completion_timeout(k, x)``
sleeps until there is one and takes it, or gives up when the timeout passes
(Linux returns 0 then). ``done`` is shared state: the waker writes it, the
waiter's check reads it.

How the wait is scheduled is the scheduler's business
(:meth:`~vmdsim.kernel.sched.Scheduler.sleep_until`): free-running, the
sleeper lets the interrupts waiting for other CPUs run, and if that does not
complete it, the timeout has passed (the model has no clock, so the waiting
itself takes no simulated time); under the explorer, the sleeper blocks until
some schedule completes it, and a completion that never comes is a deadlock,
not a timeout.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from vmdsim.kernel.shared import WAIT, KObject, peek, poke, shared

if TYPE_CHECKING:
    from vmdsim.kernel.core import Kernel


class completion(KObject):
    done = shared()

    def __init__(self, name: str = "completion") -> None:
        poke(self, "done", 0)  # not yet visible to another CPU: not a shared access
        self.name = name

    def __repr__(self) -> str:
        return f"<completion {self.name} done={peek(self, 'done', None)}>"


def complete(x: completion) -> None:
    x.done = x.done + 1


def try_wait_for_completion(x: completion) -> bool:
    if not x.done:
        return False
    x.done = x.done - 1
    return True


def wait_for_completion_timeout(k: Kernel, x: completion) -> bool:
    """Sleep until ``x`` is completed and take that completion; False if it timed out."""
    if not k.sched.sleep_until(lambda: bool(peek(x, "done", None)), f"completion {x.name}",
                               access=(x.kname(), "done", WAIT)):
        return False
    x.done = x.done - 1
    return True
