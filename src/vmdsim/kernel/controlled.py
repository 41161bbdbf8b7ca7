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
from typing import Any, cast

from greenlet import getcurrent, greenlet

from vmdsim.errors import VmdsimError
from vmdsim.hw.observe import observer
from vmdsim.kernel.io import MMIO
from vmdsim.kernel.sched import (
    Context,
    Cpu,
    Deadlock,
    SchedError,
    Scheduler,
    kernel_function,
    state,
)
from vmdsim.kernel.shared import ACQUIRE, READ, WAIT, WRITE, hook, instrument

Access = tuple[str, str, str]  # (object name, field, access kind)


@dataclass(frozen=True)
class Choice:
    """One thing the controlled scheduler may do next; ``label`` names it across runs."""

    kind: str  # "run" or "irq"
    label: str
    ctx: Context | None = None
    cpu: Cpu | None = None
    vector: int = 0


# Returns the index of the choice to make, or None to abandon the execution.
Chooser = Callable[["ControlledScheduler", list[Choice]], "int | None"]


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
    # What enabled it, for the explorer's race analysis (indices into the trace):
    # The steps that made it possible, if it had to wait: the one after which its wait
    # condition came true, and the one after which its thread could run at all.
    enablers: tuple[int, ...] = ()
    needs: tuple[str, ...] = ()  # resources it must find free: "lock NAME", "cpuN", "irqflagN"
    releases: dict[str, int] = field(default_factory=dict)  # resource -> step that took it
    # Pending steps: the step that took the resource it waits for; WAITS_ON_CONDITION if
    # it waits for a condition (it can run before nothing: no race).
    holder: int = -1
    # What the step might touch in another order, if more than ``accesses``: a cmpxchg
    # that failed here only read, but where it succeeds it writes.
    may: frozenset[Access] | None = None

    @property
    def footprint(self) -> frozenset[Access]:
        return self.accesses if self.may is None else self.may


WAITS_ON_CONDITION = -2
_MMIO = MMIO.kname()

# A failing step ends the execution: it disables every other context's next step, so
# it is dependent on each of them (the explorer must also try them before it).
FAILURE_WRITE: Access = ("execution", "failure", WRITE)
FAILURE_READ: Access = ("execution", "failure", READ)


def _needs(ctx: Context) -> tuple[str, ...]:
    """What a context's next step must find free: its CPU (nothing else on top of it)
    and, for an acquisition, the lock."""
    nxt = ctx.next
    if nxt is not None and nxt[2] == ACQUIRE:
        return (ctx.cpu.key, f"lock {nxt[0]}")
    return (ctx.cpu.key,)


def _reset_spin(ctx: Context) -> None:
    ctx.spin_wait = None
    ctx.spin_seen.clear()
    ctx.spin_reads.clear()
    ctx.spin_repeats = 0


def _meets(write: tuple[str, str], reads: set[tuple[str, str]]) -> bool:
    """A written (object, field) is one of ``reads``, or either side is the whole object."""
    obj, fld = write
    return write in reads or (obj, "*") in reads or (
        fld == "*" and any(r[0] == obj for r in reads))


def cpu_key(cpu: Cpu) -> Access:
    """Written by every step on ``cpu``: one CPU's steps never commute."""
    return cpu.written


class Livelock(VmdsimError):
    """An execution ran past its step budget: some context never finishes."""

    kind = "livelock"


# What schedules use to separate items (,) and counts (*), what only interrupt labels have
# (irq34@cpu1), and white space.
_NOT_IN_NAMES = frozenset(",*@\t\n\r ")


class ControlledScheduler(Scheduler):
    """Build state free-running, ``k.install_scheduler(this)``, ``spawn`` tasks, ``run()``.

    ``run`` returns when every context has finished, a context raised (the
    exception is in ``failure``), or nothing can run (``Deadlock``).
    """

    controlled = True
    max_steps = 200_000  # a run longer than this has a context that never finishes
    # A context that repeats read-only steps this many times, writing nothing, spins: it
    # waits (as GenMC's spin-assume does) until another step writes what it read, and is
    # a livelock if nothing left to run can.
    spin_limit = 100

    def __init__(self, ncpus: int, chooser: Chooser | None = None) -> None:
        super().__init__(ncpus)
        self.chooser: Chooser = chooser or (lambda s, choices: 0)
        self.root: Any = None
        self.trace: list[Step] = []
        self.failure: BaseException | None = None
        self.failed_ctx: Context | None = None
        self.contexts: list[Context] = []
        self.names: set[str] = set()
        # Unbound contexts (device acts, RCU callbacks, work items): each has a pseudo-CPU
        # of its own (id -2), as kthreads and devices run concurrently.
        self.unbound: list[Cpu] = []
        self.irq_seq: dict[tuple[int, int], int] = {}
        self._effects: list[Access] = []
        self._hw_touched = False  # the running step made a device's logic act
        self._device_may: tuple[Access, ...] = ((_MMIO, "*", WRITE), *(
            (f"cpu{i}", "pending", WRITE) for i in range(ncpus)))
        self._released: dict[str, int] = {}
        self.failing: Context | None = None  # the context whose error is unwinding
        # When each choice became able to run, and what held it back before that.
        self._ready_since: dict[str, int] = {}
        self._last_step: dict[str, int] = {}
        self._was_ready: set[str] = set()
        self._cond_true: dict[str, bool] = {}
        self._cond_since: dict[str, int] = {}
        # Contexts stopped in block_until, and whether each one's condition held when the
        # choices were last listed (every condition is evaluated once per step).
        self._waiting: list[Context] = []
        self._spinners = 0  # contexts with a spin_wait: a write may wake them
        self._performed: Access | None = None  # what the running step really did
        self._cond_now: dict[Context, bool] = {}
        # Each Choice is made once: running a context (by its name), delivering a vector
        # (by its label; the handler's context then runs under the same name).
        self._run_choice_of: dict[str, Choice] = {}
        self._irq_choice_of: dict[str, Choice] = {}

    def _note_failure(self, error: BaseException) -> None:
        ctx = state.cur
        if ctx is not None and ctx.glet is not None and self.failing is None:
            self.failing = ctx
            # A freed object raises on any access, before a scheduling point could
            # announce it: the failing step still touched the object.
            obj = getattr(error, "object", None)
            if obj is not None and hasattr(obj, "kname"):
                kind = WRITE if getattr(error, "access", "") == "write" else READ
                self._effects.append((obj.kname(), "*", kind))

    def adopt(self, sched: Scheduler) -> None:
        """Take over a free-running scheduler's CPUs and hooks (the state after setup)."""
        self.cpus = sched.cpus
        for cpu in self.cpus:
            cpu.sched = self
        self.handle_irq = sched.handle_irq
        self.spurious = sched.spurious
        self.quiescent_hooks = sched.quiescent_hooks
        self.rcu = sched.rcu
        self.lockdep = sched.lockdep

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

    def defer(self, fn: Callable[..., Any], *args: Any, name: str) -> bool:
        """Deferred work (an RCU callback, a work item) becomes a context of its own on the
        housekeeping CPU, once exploring has begun; before that (setup, free-running under
        this scheduler) it is left to the caller's queue, which :meth:`adopt` hands over."""
        if self.root is None:
            return False
        self.spawn(None, fn, *args, name=name)
        return True

    def spawn(self, cpu_id: int | None, fn: Callable[..., Any], *args: Any,
              name: str | None = None) -> Context:
        """A task that runs ``fn(*args)`` on ``cpu_id`` (None: the housekeeping CPU)."""
        base = name or cast(str, getattr(fn, "__name__", "task"))
        bad = set(base) & _NOT_IN_NAMES
        if not base or bad or not base.isprintable():
            shown = " ".join(sorted(c for c in _NOT_IN_NAMES if c.isprintable() and c != " "))
            raise SchedError(f"thread name {base!r}: a name is printable and has none of "
                             f"{shown} or white space (it is written into replay tokens)")
        parent = state.cur if state.cur is not None and state.cur.glet is not None else None
        if parent is not None:
            # Named after its spawner, so that it has the same name in every execution
            # whatever other contexts were spawned before it.
            base = f"{parent.name}>{base}"
        unique = self._unique(base)
        if cpu_id is None:
            cpu = Cpu(-2, self)
            cpu.key = f"cpu-2:{unique}"  # named after its context: stable across runs
            self.unbound.append(cpu)
        else:
            cpu = self.cpu(cpu_id)
        ctx = Context(unique, cpu, fn, args)
        cpu.tasks.append(ctx)
        self.contexts.append(ctx)
        if parent is not None:
            # Spawned by a running step: its start depends on that step.
            ctx.spawn_key = (f"spawn {ctx.name}", "", WRITE)
            self._effects.append(ctx.spawn_key)
        return ctx

    # -- what the explorer needs to know of enabling ----------------------------------
    def now(self) -> int:
        return len(self.trace)

    def note_release(self, resource: str, taken_at: int) -> None:
        self._released[resource] = taken_at

    def note_effect(self, access: Access) -> None:
        self._effects.append(access)

    def note_performed(self, access: Access) -> None:
        self._performed = access

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

    def _device_access(self, lo: int, hi: int, kind: str) -> None:
        """A device's logic read or changed registers at [lo, hi] (``hw/observe.py``):
        an access of the running step, which caused it."""
        ctx = state.cur
        if ctx is None or ctx.glet is None or ctx is self.failing:
            return
        self._effects.append((_MMIO, f"{lo:#x}-{hi:#x}", kind))
        self._hw_touched = True

    def raise_irq(self, cpu_id: int, vector: int) -> None:
        cpu = self.cpus[cpu_id]
        self._effects.append((f"cpu{cpu_id}", "pending", WRITE))
        if vector not in cpu.pending:
            # This raise creates the delivery: it is the one its delivery depends on.
            self._effects.append((f"raise {self._irq_label(cpu, vector)}", "", WRITE))
            cpu.pending.append(vector)

    def irqs_changed(self, cpu: Cpu) -> None:
        """Delivery is the chooser's decision, made at the next choice."""

    def block_until(self, cond: Callable[[], bool], what: str, *, sleep: bool,
                    access: Access | None = None) -> None:
        if access is not None:
            self._effects.append(access)  # the check reads it, whether it waits or not
        if cond():
            return
        ctx = state.cur
        if ctx is None or ctx.glet is None:
            super().block_until(cond, what, sleep=sleep)
            return
        if sleep and ctx.in_irq:
            raise SchedError(f"BUG: scheduling while atomic: {ctx!r} sleeps waiting for {what}")
        ctx.wait, ctx.waiting_for, ctx.sleeping = cond, what, sleep
        self._waiting.append(ctx)
        # Resuming re-reads what the wait reads: by default the access that led here.
        ctx.next = access or ctx.performing or (what, "", WAIT)
        if sleep:
            ctx.cpu.curr = None
            self.note_release(ctx.cpu.key, ctx.holds_cpu_since)
        self.root.switch()
        self._waiting.remove(ctx)
        ctx.wait, ctx.sleeping = None, False

    def sleep_until(self, cond: Callable[[], bool], what: str, *,
                    access: Access | None = None) -> bool:
        """Under the explorer a timed wait has no clock: it blocks until some schedule
        makes ``cond()`` hold, and one that never does is reported as a deadlock."""
        self.block_until(cond, what, sleep=True, access=access)
        return True

    # -- the loop -------------------------------------------------------------------
    def _ready(self, ctx: Context) -> bool:
        """A context may run unless it waits, or is about to take a lock someone holds
        (spinning changes nothing, so the attempt is not a step of its own)."""
        if ctx.wait is not None and not self._cond_now[ctx]:
            return False
        if ctx.spin_wait is not None:
            return False
        nxt = ctx.next
        if nxt is not None and nxt[2] == ACQUIRE:
            owner = ctx.next_obj.owner
            if owner is not None and owner is not ctx:
                ctx.waiting_for = f"{nxt[1]} (held by {owner.name})"
                return False
        return True

    def choices(self) -> list[Choice]:
        # (a context is in _waiting only while block_until has set its wait)
        cond = self._cond_now = {c: cast(Callable[[], bool], c.wait)() for c in self._waiting}
        made, irqs = self._run_choice_of, self._irq_choice_of
        out: list[Choice] = []
        for cpu in (*self.cpus, *self.unbound):
            top = cpu.top
            if top is not None:
                if self._ready(top):
                    out.append(made.get(top.name) or self._run_choice(top))
            else:
                for t in cpu.tasks:
                    # A new task has no wait yet; a sleeper runs once its condition holds.
                    if t.state == "new" or (t.sleeping and cond.get(t, False)):
                        out.append(made.get(t.name) or self._run_choice(t))
            if cpu.pending and cpu.irqs_enabled:
                for v in cpu.pending:
                    label = self._irq_label(cpu, v)
                    c = irqs.get(label)
                    if c is None:
                        c = irqs[label] = Choice("irq", label, cpu=cpu, vector=v)
                    out.append(c)
        return out

    def _run_choice(self, ctx: Context) -> Choice:
        c = self._run_choice_of[ctx.name] = Choice("run", ctx.name, ctx=ctx)
        return c

    def pending_steps(self) -> list[Step]:
        """The step each unfinished context would take next and did not: what it
        announced, on its CPU. One that could run was cut off by a failure (which
        therefore depends on it); one that could not waits for a held resource (its
        ``holder``) or for a condition."""
        failed = self.failure is not None and not isinstance(self.failure, Deadlock)
        final = self.choices()
        self._track_ready(final)
        ready = {c.label for c in final}
        out = []
        for c in self.unfinished():
            if c is self.failed_ctx or (c.name in ready and not failed):
                continue
            acc = {cpu_key(c.cpu)}
            if c.next is not None:
                acc.add(c.next)
            if c.state == "new" and c.spawn_key is not None:
                acc.add((c.spawn_key[0], "", READ))
            enablers: tuple[int, ...] = ()
            if c.name in ready:
                acc.add(FAILURE_READ)
                holder = -1
                enablers = self._enablers(c.name)  # the failure may have enabled it too
            else:
                holder = self._holder(c)
            out.append(Step(c.name, c.cpu.id, "run", c.next, c.where or c.name,
                            frozenset(acc), needs=_needs(c), holder=holder,
                            enablers=enablers))
        return out

    def _holder(self, ctx: Context) -> int:
        """The step that took what ``ctx`` waits for: a lock, or its CPU;
        WAITS_ON_CONDITION for a wait (a grace period, a handler finishing)."""
        if ctx.wait is not None and not ctx.wait():
            return WAITS_ON_CONDITION
        nxt = ctx.next
        if nxt is not None and nxt[2] == ACQUIRE:
            owner = ctx.next_obj.owner
            if owner is not None and owner is not ctx:
                return ctx.next_obj.taken_at
        top = ctx.cpu.top
        if top is not None and top is not ctx:
            return top.holds_cpu_since
        return -1

    def _track_ready(self, choices: list[Choice]) -> None:
        """Note when each choice became able to run, and when each wait's condition came
        true (the enablers of :class:`Step`)."""
        n = len(self.trace)
        ready = {c.label for c in choices}
        for lab in ready - self._was_ready:
            self._ready_since[lab] = n
        for c, true in self._cond_now.items():
            if true and not self._cond_true.get(c.name, False):
                self._cond_since[c.name] = n
            self._cond_true[c.name] = true
        self._was_ready = ready

    def _irq_label(self, cpu: Cpu, v: int) -> str:
        n = self.irq_seq.get((cpu.id, v), 0) + 1
        return f"irq{v}@cpu{cpu.id}" + (f"#{n}" if n > 1 else "")

    def unfinished(self) -> list[Context]:
        return [c for c in self.contexts if c.state != "done"]

    def run(self) -> bool:
        """Run to the end; True if every context finished without failure."""
        self.root = getcurrent()
        if self.rcu is not None:
            self.rcu.adopt_callbacks(self)
        hook.fn = self._point
        observer.fn = self._device_access
        VmdsimError.on_raise = self._note_failure
        instrument(True)
        try:
            while self.failure is None:
                choices = self.choices()
                if not choices:
                    stuck = self.unfinished()
                    spinning = [c for c in stuck if c.spin_wait is not None]
                    if spinning:
                        self.failure = Livelock("; ".join(
                            f"{c.name} spins re-reading "
                            f"{', '.join(sorted(f'{o}.{f}' for o, f in c.spin_wait or ()))} "
                            f"({self.spin_limit} repeated steps) and nothing left to run "
                            "writes them" for c in spinning))
                    elif stuck:
                        self.failure = Deadlock("no context can run: " + "; ".join(
                            f"{c.name} on CPU{c.cpu.id} waits for {c.waiting_for}"
                            for c in stuck))
                    break
                if len(self.trace) >= self.max_steps:
                    busy = ", ".join(c.name for c in self.unfinished())
                    self.failure = Livelock(f"still running after {self.max_steps} steps: "
                                            f"{busy}")
                    break
                self._track_ready(choices)
                i = self.chooser(self, choices)
                if i is None:
                    break  # the chooser abandons this execution
                self.step(choices[i])
                self._annotate(choices[i].label)
        finally:
            instrument(False)
            VmdsimError.on_raise = None
            hook.fn = None
            observer.fn = None
            state.cur = None
        return self.failure is None

    def _annotate(self, label: str) -> None:
        """Record on the step just taken what enabled it (see :class:`Step`)."""
        n = len(self.trace) - 1
        self.trace[n].enablers = self._enablers(label)
        self._last_step[label] = n
        self._cond_since.pop(label, None)

    def _enablers(self, label: str) -> tuple[int, ...]:
        last = self._last_step.get(label, -1)
        out = []
        since = self._ready_since.get(label, 0)
        if since > last + 1:
            out.append(since - 1)
        cond = self._cond_since.get(label)
        if cond is not None and cond > last + 1:
            out.append(cond - 1)
        return tuple(out)

    def step(self, choice: Choice) -> None:
        if choice.kind == "irq":
            cpu = cast(Cpu, choice.cpu)  # an "irq" choice has its CPU
            cpu.pending.remove(choice.vector)
            key = (cpu.id, choice.vector)
            self.irq_seq[key] = self.irq_seq.get(key, 0) + 1
            ctx = Context(choice.label, cpu, self.handle_irq, (choice.vector,), kind="irq")
            self.names.add(ctx.name)
            self.contexts.append(ctx)
            ctx.saved_flag = cpu.irqs_enabled
            cpu.irq_stack.append(ctx)
            n = len(self.trace)
            ctx.holds_cpu_since = n
            cpu.irqs_enabled = False
            cpu.irqs_off_at = n
            acc = (f"cpu{cpu.id}", "pending", WRITE)
            made = (f"raise {ctx.name}", "", READ)
            self.trace.append(Step(ctx.name, cpu.id, "irq", acc, "interrupt",
                                   frozenset({acc, made, cpu_key(cpu)}), choice.vector,
                                   needs=(f"irqflag{cpu.id}",)))
            return
        ctx = cast(Context, choice.ctx)  # a "run" choice has its context
        if ctx.kind == "task" and ctx.cpu.curr is None:
            ctx.cpu.curr = ctx
            ctx.holds_cpu_since = len(self.trace)
        self._resume(ctx, _needs(ctx))

    def _resume(self, ctx: Context, needs: tuple[str, ...] = ()) -> None:
        if ctx.glet is None:
            ctx.glet = greenlet(self._body, parent=self.root)
            ctx.state = "running"
        performed, where = ctx.next, ctx.where
        ctx.performing = performed
        self._effects = []
        self._released = {}
        self._performed = None
        self._hw_touched = False
        hook.silent = False
        if ctx.steps == 0 and ctx.spawn_key is not None:
            self._effects.append((ctx.spawn_key[0], "", READ))
        state.cur = ctx
        ctx.next = None
        ctx.glet.switch(ctx)
        state.cur = None
        ctx.steps += 1
        own = self._effects  # what the step touched besides its CPU
        may = None
        if self._performed is not None:
            may = frozenset((ctx.cpu.written, *own, performed))
            performed = self._performed
        if performed is not None:
            own.append(performed)
        if self._hw_touched:
            # What a device's logic does depends on the values it reads: in another
            # order the same step may send a message it did not send here, or touch
            # other registers. Until it has run in a state, the explorer takes it for
            # all device memory and every CPU's pending vectors.
            may = frozenset((*(may or ()), ctx.cpu.written, *own, *self._device_may))
        self.trace.append(Step(ctx.name, ctx.cpu.id, "run", performed, where or ctx.name,
                               frozenset((ctx.cpu.written, *own)), needs=needs,
                               releases=self._released, may=may))
        self._spin_check(ctx, where, performed, own, hook.silent)

    def _spin_check(self, ctx: Context, where: str, performed: Access | None,
                    accesses: list[Access], silent: bool) -> None:
        """Count a context's repeated steps that change nothing (reads, and writes of the
        value a field already holds); wake spinners on a write that may change something."""
        writes = [(a[0], a[1]) for a in accesses
                  if a[2] not in (READ, WAIT) and not (a[1] == "" and a[0].startswith("cpu"))
                  and not (silent and a is performed)]
        if writes:
            if ctx.spin_seen or ctx.spin_wait is not None:
                _reset_spin(ctx)
            if self._spinners:
                for c in self.contexts:
                    if c.spin_wait is not None and any(_meets(w, c.spin_wait)
                                                       for w in writes):
                        _reset_spin(c)
                self._spinners = sum(c.spin_wait is not None for c in self.contexts)
            return
        key = (where, performed)
        if key in ctx.spin_seen:
            ctx.spin_repeats += 1
        else:
            ctx.spin_seen.add(key)
        ctx.spin_reads.update((a[0], a[1]) for a in accesses if a[2] in (READ, WAIT))
        if ctx.spin_repeats >= self.spin_limit and ctx.spin_reads:
            ctx.spin_wait = set(ctx.spin_reads)
            self._spinners += 1
            ctx.waiting_for = "a write to what it spins on"

    def _body(self, ctx: Context) -> None:
        try:
            ctx.result = cast(Callable[..., Any], ctx.fn)(*ctx.args)  # spawned: it has one
            if ctx.kind == "task":
                self.check_task_exit(ctx)
        except BaseException as e:  # noqa: BLE001 - every failure is a verdict
            if self.failure is None:
                self.failure, self.failed_ctx = e, ctx
                self._effects.append(FAILURE_WRITE)
            ctx.error = e
        ctx.state = "done"
        ctx.next = None
        cpu = ctx.cpu
        if ctx.kind == "irq":
            cpu.irq_stack.remove(ctx)
            self.note_release(cpu.key, ctx.holds_cpu_since)
            if ctx.saved_flag:
                self.note_release(f"irqflag{cpu.id}", ctx.holds_cpu_since)
            cpu.irqs_enabled = ctx.saved_flag
        elif cpu.curr is ctx:
            cpu.curr = None
            self.note_release(cpu.key, ctx.holds_cpu_since)
