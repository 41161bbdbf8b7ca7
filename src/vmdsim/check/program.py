"""What the explorer runs: a *program* (set-up, threads, end checks) and one execution of it.

A :class:`Program` builds its world free-running (boot a machine, bind
drivers, start load), then names the threads that race: ``(cpu, fn, name)``.
Every execution starts from the same post-setup state: the world is set up
once and deep-copied per execution. Object serial numbers start from 1 for
every program and are restored for every execution, so an object has the
same name in every execution and in a replay in another process. A world that cannot be
copied is set up again each time instead.

An execution ends when every thread has finished, one has failed, or none
can run. Its verdict is ``safe`` or the kind of the violation: the
allocator's reports (``use-after-free``, ``double-free``, ``leak``),
``deadlock``, lock and RCU misuse, ``assertion`` for a failed user check, or
a property a scenario states (``lost-interrupt``, ``handler-after-free_irq``)
by raising :class:`vmdsim.errors.Violation`.
"""

from __future__ import annotations

import copy
import gc
import io
import pickle
import traceback
import types
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from vmdsim.check.watchdog import watchdog
from vmdsim.errors import Violation as Violation  # scenario files raise it from here too
from vmdsim.errors import VmdsimError
from vmdsim.kernel.controlled import Chooser, ControlledScheduler, Livelock, Step
from vmdsim.kernel.core import Kernel
from vmdsim.kernel.lockdep import Lockdep
from vmdsim.kernel.sched import SchedError, state
from vmdsim.kernel.shared import peek_serial, reset_serials

Thread = tuple[int | None, Callable[[], Any], str]


@dataclass
class Program:
    """``setup() -> world`` (with ``world.k``), ``threads(world)``, ``check(world)`` at the end."""

    name: str
    setup: Callable[[], Any]
    threads: Callable[[Any], list[Thread]]
    check: Callable[[Any], None] | None = None
    description: str = ""
    # Budgets of one execution: repeated read-only steps before a context counts as
    # spinning (it then waits for a write), and steps in all before ``livelock``.
    spin_limit: int = ControlledScheduler.spin_limit
    max_steps: int = ControlledScheduler.max_steps
    # The lock validator on each execution (kernel/lockdep.py): a lock order that can
    # deadlock is a verdict even in an execution that does not deadlock.
    lockdep: bool = False
    # Wall-clock guards against code that never reaches a scheduling point (see
    # check/watchdog.py): one step, and the setup.
    step_seconds: float = 10.0
    setup_seconds: float = 120.0


def verdict_of(exc: BaseException | None) -> str:
    if exc is None:
        return "safe"
    if isinstance(exc, AssertionError):
        return "assertion"
    kind = getattr(exc, "kind", None)
    return kind if isinstance(kind, str) else "crash"


@dataclass
class Execution:
    """One run: the steps, the labels chosen, and how it ended."""

    trace: list[Step]
    labels: list[str]
    verdict: str
    failure: BaseException | None = None
    failed_thread: str = ""
    complete: bool = True  # False: abandoned by the chooser (sleep-set blocked, bound hit)
    world: Any = field(default=None, repr=False)
    # The next step of each context that could not run when the execution ended (blocked
    # on a lock, a grace period, a busy CPU): never executed, but it races all the same.
    pending: list[Step] = field(default_factory=list)


class _Snapshot(pickle.Pickler):
    """Pickles a world, keeping objects that copy themselves as themselves (static ops
    tables: their ``__deepcopy__`` returns them) by reference, not by value."""

    def __init__(self, file: io.BytesIO, shared: list[Any]) -> None:
        super().__init__(file, protocol=pickle.HIGHEST_PROTOCOL)
        self.shared = shared
        self.index: dict[int, int] = {}

    def persistent_id(self, obj: Any) -> int | None:
        if not hasattr(type(obj), "__deepcopy__") or isinstance(obj, type):
            return None
        key = id(obj)
        if key not in self.index:
            if copy.deepcopy(obj) is not obj:
                return None
            self.index[key] = len(self.shared)
            self.shared.append(obj)
        return self.index[key]


class _Restore(pickle.Unpickler):
    def __init__(self, data: bytes, shared: list[Any]) -> None:
        super().__init__(io.BytesIO(data))
        self.shared = shared

    def persistent_load(self, pid: int) -> Any:
        return self.shared[pid]


class SetupError(VmdsimError):
    """A program's setup failed before anything could be explored."""


class World:
    """Copies of one post-setup state, one per execution.

    The state is pickled once and unpickled per execution (much cheaper than a
    deep copy); a world that does not pickle is deep-copied, and one that a
    closure ties to the original is set up again each time.
    """

    def __init__(self, program: Program) -> None:
        self.program = program
        self._start = 1
        reset_serials(self._start)
        try:
            with watchdog(program.setup_seconds, lambda: 0,
                          lambda: f"{program.name}: its setup did not finish within "
                                  f"{program.setup_seconds:g} s"):
                self._template = program.setup()
        except Livelock as e:
            raise SetupError(str(e)) from None
        except VmdsimError:
            raise
        except Exception as e:  # noqa: BLE001 - a scenario's own setup: say how it failed
            where = traceback.extract_tb(e.__traceback__)[-1]
            raise SetupError(f"{program.name}: its setup raised {type(e).__name__}: {e} "
                             f"({where.filename}:{where.lineno})") from None
        if not isinstance(getattr(self._template, "k", None), Kernel):
            raise SetupError(f"{program.name}: its setup returned {type(self._template).__name__}"
                             ", not a world whose .k is the Kernel its threads run in")
        self._after = peek_serial()
        self._blob: bytes | None = None
        self._shared: list[Any] = []
        try:
            self._copy = copy.deepcopy(self._template)
        except Exception:  # noqa: BLE001 - some worlds hold things deepcopy refuses
            self._copy = None
        if self._copy is not None and shares_state(self._template, self._copy):
            self._copy = None  # a closure would tie the copy to the original
        self.copies = self._copy is not None
        if self.copies:
            buf = io.BytesIO()
            try:
                _Snapshot(buf, self._shared).dump(self._template)
                self._blob = buf.getvalue()
            except (pickle.PicklingError, TypeError, AttributeError):
                self._blob = None  # a lambda somewhere: deep copies it is

    def fresh(self) -> Any:
        if self._copy is not None:
            world, self._copy = self._copy, None
        elif self._blob is not None:
            world = _Restore(self._blob, self._shared).load()
        elif self.copies:
            world = copy.deepcopy(self._template)
        else:
            reset_serials(self._start)
            world = self.program.setup()
        reset_serials(self._after)
        return world


_ATOMS = (type, types.ModuleType, types.CodeType, str, bytes, int, float, bool,
          type(None), types.BuiltinFunctionType)


def _reachable(root: Any) -> dict[int, Any]:
    """Objects reachable from ``root``, following closures but not module globals."""
    seen: dict[int, Any] = {}
    todo = [root]
    while todo:
        obj = todo.pop()
        if isinstance(obj, _ATOMS) or id(obj) in seen:
            continue
        if hasattr(type(obj), "__deepcopy__"):
            continue  # copies itself as it means to (static ops tables return self)
        seen[id(obj)] = obj
        if isinstance(obj, types.FunctionType):
            todo.extend(c.cell_contents for c in obj.__closure__ or () if _filled(c))
            todo.extend(obj.__defaults__ or ())
            todo.extend((obj.__kwdefaults__ or {}).values())
        else:
            todo.extend(gc.get_referents(obj))
    return seen


def _filled(cell: Any) -> bool:
    try:
        cell.cell_contents  # noqa: B018
    except ValueError:
        return False
    return True


def shares_state(template: Any, clone: Any) -> bool:
    """True if anything reachable from ``clone`` is also reachable from ``template``
    and mutable — what deepcopy leaves shared through a function's closure."""
    original = _reachable(template)
    for key, obj in _reachable(clone).items():
        if key in original and not isinstance(obj, (types.FunctionType, tuple, frozenset)):
            return True
    return False


def spawn_threads(program: Program, world: Any, sched: ControlledScheduler) -> None:
    """Start ``program``'s threads: each (CPU number or None, function, name)."""
    try:
        threads = list(program.threads(world))
    except Exception as e:  # noqa: BLE001 - a scenario's own code: say how it failed
        raise SetupError(f"{program.name}: listing its threads raised {type(e).__name__}: "
                         f"{e}") from None
    if not threads:
        raise SetupError(f"{program.name}: it has no threads to explore")
    for i, t in enumerate(threads):
        if not (isinstance(t, tuple) and len(t) == 3 and callable(t[1])
                and (t[0] is None or type(t[0]) is int) and isinstance(t[2], str)):
            raise SetupError(f"{program.name}: thread {i} is {t!r:.60}, not (CPU number or "
                             "None, function, name)")
        if t[0] is not None and not 0 <= t[0] < len(sched.cpus):
            raise SetupError(f"{program.name}: thread {i} ({t[2]}) is on CPU {t[0]}, but its "
                             f"kernel has CPUs 0-{len(sched.cpus) - 1}")
        try:
            sched.spawn(t[0], t[1], name=t[2])
        except SchedError as e:
            raise SetupError(f"{program.name}: {e}") from None


def run_once(program: Program, world_source: World, chooser: Chooser) -> Execution:
    """Run ``program`` once from a fresh post-setup state, choices made by ``chooser``."""
    world = world_source.fresh()
    k = world.k
    sched = ControlledScheduler(k.ncpus, chooser)
    sched.spin_limit, sched.max_steps = program.spin_limit, program.max_steps
    k.install_scheduler(sched)
    if program.lockdep:  # a fresh graph per execution: a report belongs to its schedule
        sched.lockdep = Lockdep(k, raise_reports=True)
    spawn_threads(program, world, sched)
    labels: list[str] = []
    inner = sched.chooser

    def recording(s: ControlledScheduler, choices: list) -> int | None:
        i = inner(s, choices)
        if i is not None:
            labels.append(choices[i].label)
        return i

    sched.chooser = recording

    def stalled() -> str:
        running = state.cur.name if state.cur is not None else "the scheduler"
        return (f"{running} ran for {program.step_seconds:g} s without reaching a scheduling "
                "point (a loop that touches no shared state?)")

    try:
        with watchdog(program.step_seconds, lambda: len(sched.trace), stalled):
            sched.run()
    except Livelock as e:  # raised in the scheduler's own code, not in a context
        sched.failure = e
    pending = sched.pending_steps()
    complete = sched.failure is not None or not sched.unfinished()
    failure = sched.failure
    failed = sched.failed_ctx.name if sched.failed_ctx is not None else ""
    if complete and failure is None and program.check is not None:
        try:
            program.check(world)
        except BaseException as e:  # noqa: BLE001 - the check's failure is the verdict
            failure, failed = e, "end of execution"
    return Execution(sched.trace, labels, verdict_of(failure), failure, failed, complete, world,
                     pending)
