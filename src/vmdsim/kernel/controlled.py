"""The controlled scheduler: every scheduling point is a choice.

Tasks and interrupt handlers run as greenlets. A context runs until its next
scheduling point, announces the access it is about to make, and hands
control back; a *chooser* then picks what happens next from a list of
:class:`Choice`: run one context one step, or deliver a pending vector on a
CPU whose interrupt flag is set. The same choices replay the same execution.

Each executed :class:`Step` records what the explorer needs for partial-order
reduction: its thread (a context's unique name), its CPU and the set of
accesses it made — the access it had announced, the CPU itself (one CPU's
steps never commute: an interrupt is taken *between* them), and effects that
happen between points, such as raising a vector on another CPU.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from vmdsim.errors import VmdsimError
from vmdsim.kernel.sched import (
    Context,
    Cpu,
    Deadlock,
    SchedError,
    Scheduler,
    kernel_function,
    state,
)
from vmdsim.kernel.shared import ACQUIRE, WRITE, hook, instrument

Access = tuple[str, str, str]  # (object name, field, access kind)


@dataclass(frozen=True)
class Choice:
    """One thing the controlled scheduler may do next; ``label`` names it across runs."""

    kind: str  # "run" or "irq"
    label: str
    ctx: Context | None = None
    cpu: Cpu | None = None
    vector: int = 0


Chooser = Callable[["ControlledScheduler", list[Choice]], int]


@dataclass
class Step:
    """One executed step: thread, CPU, the access it began with, everything it touched."""

    thread: str
    cpu: int
    kind: str  # "run", or "irq" for the delivery of an interrupt
    access: Access | None  # the announced access this step performed (None: a start)
    where: str  # the kernel function that made it
    accesses: frozenset[Access] = field(default_factory=frozenset)
    vector: int = 0


def cpu_key(cpu_id: int) -> Access:
    return (f"cpu{cpu_id}", "", WRITE)


class Livelock(VmdsimError):
    """An execution ran past its step budget: some context never finishes."""

    kind = "livelock"


class ControlledScheduler(Scheduler):
    """Build state free-running, ``k.install_scheduler(this)``, ``spawn`` tasks, ``run()``.

    ``run`` returns when every context has finished, a context raised (the
    exception is in ``failure``), or nothing can run (``Deadlock``).
    """

    controlled = True
    max_steps = 200_000  # a run longer than this has a context that never finishes

    def __init__(self, ncpus: int, chooser: Chooser | None = None) -> None:
        super().__init__(ncpus)
        self.chooser: Chooser = chooser or (lambda s, choices: 0)
        self.root: Any = None
        self.trace: list[Step] = []
        self.failure: BaseException | None = None
        self.failed_ctx: Context | None = None
        self.contexts: list[Context] = []
        self.names: set[str] = set()
        self.unpinned = Cpu(-2, self)  # housekeeping kthreads (rcuop): a CPU of their own
        self.irq_seq: dict[tuple[int, int], int] = {}
        self._effects: list[Access] = []
        self.failing: Context | None = None  # the context whose error is unwinding

    def _note_failure(self, error: BaseException) -> None:
        ctx = state.cur
        if ctx is not None and ctx.glet is not None and self.failing is None:
            self.failing = ctx

    def adopt(self, sched: Scheduler) -> None:
        """Take over a free-running scheduler's CPUs and hooks (the state after setup)."""
        self.cpus = sched.cpus
        for cpu in self.cpus:
            cpu.sched = self
        self.handle_irq = sched.handle_irq
        self.spurious = sched.spurious
        self.quiescent_hooks = sched.quiescent_hooks
        self.rcu = sched.rcu

    def quiesce(self) -> None:
        """RCU callbacks are contexts of their own here (see ``Rcu.call``)."""

    def _unique(self, name: str) -> str:
        if name not in self.names:
            self.names.add(name)
            return name
        n = 2
        while f"{name}#{n}" in self.names:
            n += 1
        self.names.add(f"{name}#{n}")
        return f"{name}#{n}"

    def spawn(self, cpu_id: int | None, fn: Callable[..., Any], *args: Any,
              name: str | None = None) -> Context:
        """A task that runs ``fn(*args)`` on ``cpu_id`` (None: the housekeeping CPU)."""
        cpu = self.unpinned if cpu_id is None else self.cpu(cpu_id)
        ctx = Context(self._unique(name or getattr(fn, "__name__", "task")), cpu, fn, args)
        cpu.tasks.append(ctx)
        self.contexts.append(ctx)
        return ctx

    # -- hooks, called from inside a context ----------------------------------------
    def _point(self, obj: Any, fld: str, kind: str) -> None:
        ctx = state.cur
        if ctx is None or ctx.glet is None or ctx is self.failing:
            return  # setup code in the root greenlet, or a failing context unwinding
        kname = obj.kname() if hasattr(obj, "kname") else str(obj)
        ctx.next = (kname, fld, kind)
        ctx.next_obj = obj
        ctx.where = kernel_function(2)
        self.root.switch()

    def raise_irq(self, cpu_id: int, vector: int) -> None:
        cpu = self.cpus[cpu_id]
        self._effects.append((f"cpu{cpu_id}", "pending", WRITE))
        if vector not in cpu.pending:
            cpu.pending.append(vector)

    def irqs_changed(self, cpu: Cpu) -> None:
        """Delivery is the chooser's decision, made at the next choice."""

    def block_until(self, cond: Callable[[], bool], what: str, *, sleep: bool) -> None:
        if cond():
            return
        ctx = state.cur
        if ctx is None or ctx.glet is None:
            super().block_until(cond, what, sleep=sleep)
            return
        if sleep and ctx.in_irq:
            raise SchedError(f"BUG: scheduling while atomic: {ctx!r} sleeps waiting for {what}")
        ctx.wait, ctx.waiting_for, ctx.sleeping = cond, what, sleep
        # Resuming re-reads what the wait reads: the access that led here.
        ctx.next = ctx.performing or (what, "", "wait")
        if sleep:
            ctx.cpu.curr = None
        self.root.switch()
        ctx.wait, ctx.sleeping = None, False

    # -- the loop -------------------------------------------------------------------
    @staticmethod
    def _ready(ctx: Context) -> bool:
        """A context may run unless it waits, or is about to take a lock someone holds
        (spinning changes nothing, so the attempt is not a step of its own)."""
        if ctx.wait is not None and not ctx.wait():
            return False
        nxt = ctx.next
        if nxt is not None and nxt[2] == ACQUIRE:
            owner = ctx.next_obj.owner
            if owner is not None and owner is not ctx:
                ctx.waiting_for = f"{nxt[1]} (held by {owner.name})"
                return False
        return True

    def choices(self) -> list[Choice]:
        out: list[Choice] = []
        for cpu in [*self.cpus, self.unpinned]:
            top = cpu.top
            if top is not None:
                if self._ready(top):
                    out.append(Choice("run", top.name, ctx=top))
            else:
                for t in cpu.tasks:
                    if t.state == "new" and (t.wait is None or t.wait()):
                        out.append(Choice("run", t.name, ctx=t))
                    elif t.sleeping and t.wait is not None and t.wait():
                        out.append(Choice("run", t.name, ctx=t))
            if cpu.pending and cpu.irqs_enabled:
                for v in cpu.pending:
                    n = self.irq_seq.get((cpu.id, v), 0) + 1
                    label = f"irq{v}@cpu{cpu.id}" + (f"#{n}" if n > 1 else "")
                    out.append(Choice("irq", label, cpu=cpu, vector=v))
        return out

    def unfinished(self) -> list[Context]:
        return [c for c in self.contexts if c.state != "done"]

    def run(self) -> bool:
        """Run to the end; True if every context finished without failure."""
        from greenlet import getcurrent

        self.root = getcurrent()
        if self.rcu is not None:
            self.rcu.adopt_callbacks(self)
        hook.fn = self._point
        VmdsimError.on_raise = self._note_failure
        instrument(True)
        try:
            while self.failure is None:
                choices = self.choices()
                if not choices:
                    stuck = self.unfinished()
                    if stuck:
                        self.failure = Deadlock("no context can run: " + "; ".join(
                            f"{c.name} on CPU{c.cpu.id} waits for {c.waiting_for}"
                            for c in stuck))
                    break
                if len(self.trace) >= self.max_steps:
                    busy = ", ".join(c.name for c in self.unfinished())
                    self.failure = Livelock(f"still running after {self.max_steps} steps: "
                                            f"{busy}")
                    break
                i = self.chooser(self, choices)
                if i is None:
                    break  # the chooser abandons this execution
                self.step(choices[i])
        finally:
            instrument(False)
            VmdsimError.on_raise = None
            hook.fn = None
            state.cur = None
        return self.failure is None

    def step(self, choice: Choice) -> None:
        if choice.kind == "irq":
            cpu = choice.cpu
            cpu.pending.remove(choice.vector)
            key = (cpu.id, choice.vector)
            self.irq_seq[key] = self.irq_seq.get(key, 0) + 1
            ctx = Context(choice.label, cpu, self.handle_irq, (choice.vector,), kind="irq")
            self.names.add(ctx.name)
            self.contexts.append(ctx)
            ctx.saved_flag = cpu.irqs_enabled  # type: ignore[attr-defined]
            cpu.irq_stack.append(ctx)
            cpu.irqs_enabled = False
            acc = (f"cpu{cpu.id}", "pending", WRITE)
            self.trace.append(Step(ctx.name, cpu.id, "irq", acc, "interrupt",
                                   frozenset({acc, cpu_key(cpu.id)}), choice.vector))
            return
        ctx = choice.ctx
        if ctx.kind == "task" and ctx.cpu.curr is None:
            ctx.cpu.curr = ctx
        self._resume(ctx)

    def _resume(self, ctx: Context) -> None:
        from greenlet import greenlet

        if ctx.glet is None:
            ctx.glet = greenlet(self._body, parent=self.root)
            ctx.state = "running"
        performed, where = ctx.next, ctx.where
        ctx.performing = performed
        self._effects = []
        state.cur = ctx
        ctx.next = None
        ctx.glet.switch(ctx)
        state.cur = None
        ctx.steps += 1
        accesses = {cpu_key(ctx.cpu.id), *self._effects}
        if performed is not None:
            accesses.add(performed)
        self.trace.append(Step(ctx.name, ctx.cpu.id, "run", performed, where or ctx.name,
                               frozenset(accesses)))

    def _body(self, ctx: Context) -> None:
        try:
            ctx.result = ctx.fn(*ctx.args)
            if ctx.kind == "task":
                self.check_task_exit(ctx)
        except BaseException as e:  # noqa: BLE001 - every failure is a verdict
            if self.failure is None:
                self.failure, self.failed_ctx = e, ctx
            ctx.error = e
        ctx.state = "done"
        ctx.next = None
        cpu = ctx.cpu
        if ctx.kind == "irq":
            cpu.irq_stack.remove(ctx)
            cpu.irqs_enabled = ctx.saved_flag  # type: ignore[attr-defined]
        elif cpu.curr is ctx:
            cpu.curr = None
