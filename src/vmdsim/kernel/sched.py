"""CPUs, the code that runs on them, and the two schedulers.

A :class:`Cpu` runs one *task* at a time (``cpu.curr``) and, on top of it, a
stack of hard-interrupt contexts. Interrupts arrive through ``raise_irq``
(the interrupt controller's sink); a CPU takes one only while its interrupt
flag is set, otherwise the vector waits in the CPU's request register
(``pending``, one bit per vector as in the local APIC's IRR, so a vector
raised twice while masked is delivered once). A handler runs with
interrupts off; returning restores the flag, and a pending vector is
delivered then.

Two schedulers share that model:

* :class:`Scheduler`, *free-running*: code runs directly on the Python stack.
  ``k.run_on(cpu, fn)`` runs ``fn`` as a task on ``cpu``; an interrupt for a
  CPU whose flag is set is handled at once, nested. Scheduling points cost
  nothing (the hook is unset). A wait whose condition is false can never be
  satisfied here (nothing else runs), so it is reported as a deadlock.
* ``ControlledScheduler`` (``vmdsim.kernel.controlled``): tasks are greenlets;
  every scheduling point stops the running context and hands a list of :class:`Choice` to a
  *chooser* (run this context one step, or deliver that pending vector on
  that CPU). Replaying the same choices reproduces the same execution.

Tasks are not preempted by other tasks (a non-preemptible kernel): a CPU's
task runs until it finishes or sleeps; interrupts preempt anything running
with the flag set. Code called from outside any task (a test, the
simulation harness) runs in the *harness* context on a pseudo-CPU of its
own, numbered -1, that no interrupt targets.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, cast

from vmdsim.errors import VmdsimError

if TYPE_CHECKING:
    from types import FrameType

    from vmdsim.kernel.lockdep import Lockdep
    from vmdsim.kernel.rcu import Rcu


class SchedError(VmdsimError):
    """Misuse of the CPU model (a bug Linux would BUG() or WARN() on)."""


class Deadlock(VmdsimError):
    """No context can make progress, yet some have not finished."""

    kind = "deadlock"


class Cpu:
    """One logical CPU: its interrupt flag, current task, interrupt stack and IRR."""

    def __init__(self, cpu_id: int, sched: Scheduler) -> None:
        self.id = cpu_id
        self.sched = sched
        self.irqs_enabled = True
        self.curr: Context | None = None
        self.irq_stack: list[Context] = []
        self.pending: list[int] = []  # vectors requested while the flag was clear
        self.tasks: list[Context] = []  # tasks pinned here (controlled mode)
        self.irqs_off_at = -1  # explored runs: the step that last cleared the flag
        self.key = f"cpu{cpu_id}"  # how the explorer names it (see ControlledScheduler)

    @property
    def key(self) -> str:
        return self._key

    @key.setter
    def key(self, name: str) -> None:
        self._key = name
        self.written = (name, "", "write")  # what every step on this CPU writes

    @property
    def top(self) -> Context | None:
        """What this CPU is executing now: the innermost interrupt, else the task."""
        return self.irq_stack[-1] if self.irq_stack else self.curr

    def __repr__(self) -> str:
        return f"<CPU{self.id}>"


class Context:
    """A task or a hard-interrupt handler invocation, bound to one CPU."""

    def __init__(self, name: str, cpu: Cpu, fn: Callable[..., Any] | None, args: tuple,
                 kind: str = "task") -> None:
        self.name = name
        self.cpu = cpu
        self.fn = fn
        self.args = args
        self.kind = kind  # "task" or "irq"
        self.state = "new"  # new, running, done
        self.glet: Any = None
        self.wait: Callable[[], bool] | None = None
        self.waiting_for = ""
        self.sleeping = False
        self.next: tuple[Any, str, str] | None = None  # the access it stopped before
        self.where = ""  # the kernel function that made that access
        self.next_obj: Any = None  # the object of that access
        self.performing: tuple[Any, str, str] | None = None  # the access of the current step
        self.result: Any = None
        self.error: BaseException | None = None
        self.locks_held: list[Any] = []
        self.steps = 0
        self.holds_cpu_since = -1  # explored runs: the step at which it took its CPU
        self.spawn_key: tuple[str, str, str] | None = None  # read by its first step
        # Explored runs: a loop that only re-reads (see ControlledScheduler.spin_limit).
        self.spin_seen: set[tuple[str, Any]] = set()
        self.spin_repeats = 0
        self.spin_reads: set[tuple[str, str]] = set()
        self.spin_wait: set[tuple[str, str]] | None = None

    # Explored runs, an interrupt's context only: the interrupt flag it found, restored
    # when it returns (set by ControlledScheduler.step).
    saved_flag: bool

    @property
    def in_irq(self) -> bool:
        return self.kind == "irq"

    def __repr__(self) -> str:
        return f"<{self.kind} {self.name} on CPU{self.cpu.id}>"


class _State:
    __slots__ = ("cur",)

    def __init__(self) -> None:
        self.cur: Context | None = None


state = _State()


def current() -> Context:
    """The running context (``current`` in Linux; interrupts count too)."""
    return state.cur or HARNESS


def this_cpu() -> Cpu:
    return current().cpu


def in_interrupt() -> bool:
    return current().kind == "irq"


# Modules whose frames are machinery, not the kernel code a report should name.
_MACHINERY = {"vmdsim.kernel.shared", "vmdsim.kernel.sched", "vmdsim.kernel.mem",
              "vmdsim.kernel.locking", "vmdsim.kernel.rcu", "vmdsim.kernel.srcu",
              "vmdsim.kernel.controlled"}


def kernel_function(depth: int = 1) -> str:
    """The innermost caller that is kernel code rather than the scheduling machinery."""
    f: FrameType | None = sys._getframe(depth)
    while f is not None and f.f_globals.get("__name__") in _MACHINERY:
        f = f.f_back
    return f.f_code.co_name if f is not None else "?"


class Scheduler:
    """The free-running scheduler (``k.sched``)."""

    controlled = False

    def __init__(self, ncpus: int) -> None:
        if ncpus < 1:
            raise SchedError(f"a kernel needs at least one CPU, not {ncpus}")
        self.cpus = [Cpu(i, self) for i in range(ncpus)]
        # Set by the IRQ core: x86 common_interrupt(vector) on the current CPU.
        self.handle_irq: Callable[[int], None] = self._no_handler
        self.spurious: dict[int, int] = {}
        # Run after every outermost interrupt or task exit (softirq: RCU callbacks).
        self.lockdep: Lockdep | None = None  # the lock validator, when it is on
        self.quiescent_hooks: list[Callable[[], None]] = []
        self.rcu: Rcu | None = None  # the kernel's RCU state, for rcu_read_lock() and friends
        self._settling = False

    def _no_handler(self, vector: int) -> None:
        cpu = this_cpu().id
        self.spurious[cpu] = self.spurious.get(cpu, 0) + 1

    def cpu(self, n: int) -> Cpu:
        if not 0 <= n < len(self.cpus):
            raise SchedError(f"no CPU{n}: this kernel has CPUs 0-{len(self.cpus) - 1}")
        return self.cpus[n]

    # -- tasks -------------------------------------------------------------------
    @contextmanager
    def task(self, cpu_id: int, name: str = "task") -> Iterator[Context]:
        """The body of the ``with`` runs as a task on ``cpu_id``."""
        cpu = self.cpu(cpu_id)
        if cpu.curr is not None or cpu.irq_stack:
            raise SchedError(f"CPU{cpu_id} is busy running {cpu.top!r}")
        ctx = Context(name, cpu, None, ())
        prev, state.cur, cpu.curr = state.cur, ctx, ctx
        ctx.state = "running"
        try:
            yield ctx
            self.check_task_exit(ctx)
        finally:
            state.cur, cpu.curr = prev, None
            ctx.state = "done"
        self.quiesce()

    def run_on(self, cpu_id: int, fn: Callable[..., Any], *args: Any,
               name: str | None = None) -> Any:
        """Run ``fn(*args)`` as a task on ``cpu_id`` now, and return its result."""
        with self.task(cpu_id, name or cast(str, getattr(fn, "__name__", "task"))):
            return fn(*args)

    def defer(self, fn: Callable[..., Any], *args: Any, name: str) -> bool:
        """Run ``fn(*args)`` later in a context of its own, if this scheduler makes such
        contexts: the explorer does (a context on the housekeeping CPU, which it then
        interleaves with everything else). False here: free-running, the caller keeps
        the work for its quiescent hook (RCU callbacks, the system workqueue), which
        runs it when nothing else is running. The one "run this later" decision the
        kernel's deferred work shares."""
        return False

    def check_task_exit(self, ctx: Context) -> None:
        if ctx.locks_held:
            raise SchedError(f"{ctx!r} returned holding {ctx.locks_held}")
        if not ctx.cpu.irqs_enabled:
            raise SchedError(f"{ctx!r} returned with interrupts disabled")
        if self.rcu is not None:
            self.rcu.check_exit(ctx)

    # -- interrupts --------------------------------------------------------------
    def raise_irq(self, cpu_id: int, vector: int) -> None:
        """The interrupt controller requests ``vector`` on ``cpu_id``.

        Taken at once if that CPU's flag is set and nothing else is running, or
        if the code running now is on that CPU (the interrupt nests). Raised by
        code running on another CPU, it waits until that code returns: the two
        CPUs would run side by side, and taking the interrupt in the middle of
        the other CPU's critical section would make the handler wait for a lock
        nothing can release here. Delivering it afterwards is one of the
        interleavings real CPUs allow.
        """
        cpu = self.cpus[cpu_id]
        if vector not in cpu.pending:
            cpu.pending.append(vector)
        cur = state.cur
        if cur is not None and cur.cpu is not cpu and cur.cpu.id >= 0:
            return  # settled when the running code returns to the harness
        if cpu.irqs_enabled:
            self.deliver_pending(cpu)

    def deliver_pending(self, cpu: Cpu) -> None:
        while cpu.pending and cpu.irqs_enabled:
            self._interrupt(cpu, cpu.pending.pop(0))

    def _interrupt(self, cpu: Cpu, vector: int) -> None:
        ctx = Context(f"irq{vector}", cpu, None, (vector,), kind="irq")
        ctx.state = "running"
        prev = state.cur
        cpu.irq_stack.append(ctx)
        cpu.irqs_enabled = False
        state.cur = ctx
        try:
            self.handle_irq(vector)
        finally:
            state.cur = prev
            cpu.irq_stack.pop()
            cpu.irqs_enabled = True
            ctx.state = "done"
        if not cpu.irq_stack:
            self.quiesce()

    def quiesce(self) -> None:
        """A CPU's outermost interrupt or task returned: softirq-time work, and, once
        nothing runs at all, the interrupts that waited for other CPUs' code."""
        for fn in self.quiescent_hooks:
            fn()
        if state.cur is None and not self._settling:
            self._settling = True
            try:
                while self._deliver_waiting():
                    pass
            finally:
                self._settling = False

    def _deliver_waiting(self, sleeper: Cpu | None = None) -> bool:
        """Take the interrupts pending on every CPU that runs nothing (or only the task
        sleeping on ``sleeper``) and has its flag set; False if there were none."""
        idle = [c for c in self.cpus if c.pending and c.irqs_enabled
                and (c.top is None or c is sleeper)]
        for c in idle:
            self.deliver_pending(c)
        return bool(idle)

    def irqs_changed(self, cpu: Cpu) -> None:
        """The interrupt flag was set again: take what is pending."""
        if cpu.pending and cpu.irqs_enabled and cpu.id >= 0:
            self.deliver_pending(cpu)

    # -- waiting -----------------------------------------------------------------
    def now(self) -> int:
        """The index of the step being executed (explored runs); -1 free-running."""
        return -1

    def note_release(self, resource: str, taken_at: int) -> None:
        """The running step frees ``resource`` (a lock, a CPU, the interrupt flag), taken
        at step ``taken_at``: the explorer's record of what enabled what."""

    def note_effect(self, access: tuple[str, str, str]) -> None:
        """The running step also touches ``access`` (beyond the point it announced)."""

    def note_performed(self, access: tuple[str, str, str]) -> None:
        """The running step's own access turned out to be ``access``, weaker than the one
        it announced (a ``cmpxchg`` that found another value only read)."""

    def sleep_until(self, cond: Callable[[], bool], what: str, *,
                    access: tuple[str, str, str] | None = None) -> bool:
        """Sleep until ``cond()`` holds or the timeout passes; False if it timed out.

        Free-running, the sleeper holds no spinlock and its CPU may run others: the
        interrupts that were waiting for the CPUs to be free are taken now (on their
        CPUs), which is what would happen while it slept. If ``cond()`` still fails,
        nothing left could make it hold: the timeout passes.
        """
        while not cond():
            ctx = current()
            spinning = [lk for lk in ctx.locks_held if not getattr(lk, "sleeps", False)]
            if ctx.in_irq or not ctx.cpu.irqs_enabled or spinning:
                raise SchedError(f"BUG: scheduling while atomic: {ctx!r} sleeps waiting "
                                 f"for {what}")
            if not self._deliver_waiting(sleeper=ctx.cpu):
                return False
        return True

    def block_until(self, cond: Callable[[], bool], what: str, *, sleep: bool,
                    access: tuple[str, str, str] | None = None) -> None:
        """Wait (spin, or sleep if ``sleep``) until ``cond()`` holds; ``access`` is what
        the wake-up reads (default: the access that led to the wait)."""
        if cond():
            return
        ctx = current()
        raise Deadlock(f"{ctx.name} on CPU{ctx.cpu.id} would wait forever for {what}: "
                       "nothing else runs while it waits")


HARNESS = Context("harness", Cpu(-1, Scheduler(1)), None, ())


def reset_harness() -> None:
    """Forget what an earlier run left on the harness context when a model error unwound
    it (a report stops a kernel where it stood; Linux does not unwind): the locks it held,
    its interrupt flag, its interrupt stack. Every new kernel starts from a clean one."""
    HARNESS.locks_held.clear()
    HARNESS.cpu.irqs_enabled = True
    HARNESS.cpu.irq_stack.clear()
    HARNESS.cpu.pending.clear()
