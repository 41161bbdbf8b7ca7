"""A counterexample drawn as CPU columns, in the style of the seed's diagram.

Each row is one step, in the column of the CPU it ran on: the kernel
function that made the access, and the access (``read vmd_irq#12.virq``,
``kfree(irq_desc#7)``, ``lock(cfg_lock)``). The last row, in the failing
CPU's column, is the bug.
"""

from __future__ import annotations

from vmdsim.check.dependence import dependent
from vmdsim.check.program import Execution
from vmdsim.kernel.controlled import Step
from vmdsim.kernel.shared import (
    ACQUIRE,
    ALLOC,
    FREE,
    RCU_LOCK,
    RCU_UNLOCK,
    READ,
    RELEASE,
    WAIT,
    WRITE,
)

WIDTH = 46


def _section(obj: str, what: str) -> str:
    return f"{what}()" if obj.startswith("Rcu#") else f"s{what}({obj})"


def describe(step: Step) -> str:
    if step.kind == "irq":
        return f"--> interrupt, vector {step.vector}"
    if step.access is None:
        return f"{step.thread} starts"
    obj, field, kind = step.access
    if kind == READ:
        text = f"read {obj}.{field}"
    elif kind == WRITE:
        text = f"write {obj}.{field}"
    elif kind == ACQUIRE:
        text = f"lock({field})"
    elif kind == RELEASE:
        text = f"unlock({field})"
    elif kind == RCU_LOCK:
        text = _section(obj, "rcu_read_lock")
    elif kind == RCU_UNLOCK:
        text = _section(obj, "rcu_read_unlock")
    elif kind == WAIT:
        text = "waits for an RCU grace period" if obj.startswith("Rcu#") else \
            f"waits for readers of {obj}"
    elif kind == FREE:
        text = f"kfree({obj})"
    elif kind == ALLOC:
        text = f"kmalloc() = {obj}"
    else:
        text = f"{kind} {obj}.{field}"
    return f"{step.where}: {text}" if step.where and step.where != step.thread else text


def _cpu_name(cpu: int) -> str:
    return "unbound (devices, kthreads)" if cpu == -2 else f"CPU{cpu}"


def _fit(text: str) -> str:
    return text if len(text) <= WIDTH - 2 else text[: WIDTH - 3] + "…"


def interacting(ex: Execution) -> list[bool]:
    """Which steps matter to the drawing: those dependent on a step of another thread
    (the accesses the race is made of), each thread's first and last step, and the
    failing step. The CPU each step ran on is left out of the test: every step of a CPU
    depends on the interrupt taken there, which would keep them all."""

    trace = ex.trace
    own = [frozenset(a for a in s.accesses if not (a[0].startswith("cpu") and a[1] == ""))
           for s in trace]
    keep = [False] * len(trace)
    for i in range(len(trace)):
        for j in range(i + 1, len(trace)):
            if trace[i].thread != trace[j].thread and dependent(own[i], own[j]):
                keep[i] = keep[j] = True
    seen: set[str] = set()
    for i, s in enumerate(trace):
        if s.thread not in seen or s.kind == "irq":
            keep[i] = True
        seen.add(s.thread)
    last: dict[str, int] = {s.thread: i for i, s in enumerate(trace)}
    for i in last.values():
        keep[i] = True
    if ex.verdict in LOCK_ORDER_VERDICTS:
        for i in _still_held(trace):  # what each CPU holds while it waits for the other's
            keep[i] = True
    return keep


# Verdicts about lock order: their drawing shows where each lock still held was taken.
LOCK_ORDER_VERDICTS = ("deadlock", "circular-locking", "recursive-locking")


def _still_held(trace: list[Step]) -> list[int]:
    """The steps that took a lock no later step of the same thread released."""
    held: dict[tuple[str, str], int] = {}
    for i, s in enumerate(trace):
        if s.access is None:
            continue
        obj, _, kind = s.access
        if kind == ACQUIRE:
            held[(s.thread, obj)] = i
        elif kind == RELEASE:
            held.pop((s.thread, obj), None)
    return sorted(held.values())


def render(ex: Execution, full: bool = False) -> str:
    """The execution as CPU columns, ending with the violation if there is one.

    Unless ``full``, runs of steps that touch nothing another thread touches are
    folded into one ``⋮ N steps`` row: what is left is the race, as the seed's
    diagram draws it."""
    cpus = sorted({s.cpu for s in ex.trace}, key=lambda c: (c < 0, c))
    failed_cpu = None
    for s in reversed(ex.trace):
        if s.thread == ex.failed_thread:
            failed_cpu = s.cpu
            break
    if failed_cpu is not None and failed_cpu not in cpus:
        cpus.append(failed_cpu)
    col = {c: i for i, c in enumerate(cpus)}
    lines = ["".join(_cpu_name(c).ljust(WIDTH) for c in cpus).rstrip()]
    prev_thread: dict[int, str] = {}
    keep = [True] * len(ex.trace) if full else interacting(ex)
    folded: dict[int, int] = {}  # per CPU: steps folded since the last row

    def flush(cpu: int) -> None:
        n = folded.pop(cpu, 0)
        if n:
            cells = [""] * len(cpus)
            cells[col[cpu]] = f"   ⋮ {n} step{'s' if n > 1 else ''}"
            lines.append("".join(c.ljust(WIDTH) for c in cells).rstrip())

    for i, s in enumerate(ex.trace):
        if not keep[i]:
            folded[s.cpu] = folded.get(s.cpu, 0) + 1
            continue
        flush(s.cpu)
        rows = []
        if prev_thread.get(s.cpu) != s.thread and s.kind != "irq":
            rows.append(f"[{s.thread}]")
        prev_thread[s.cpu] = s.thread
        rows.append(describe(s))
        for text in rows:
            cells = [""] * len(cpus)
            cells[col[s.cpu]] = _fit(text)
            lines.append("".join(c.ljust(WIDTH) for c in cells).rstrip())
    for cpu in list(folded):
        flush(cpu)
    if ex.failure is not None:
        first = str(ex.failure).splitlines()[0] if str(ex.failure) else type(ex.failure).__name__
        text = f"<-- {ex.verdict.upper()}: {first}"
        if failed_cpu is None:
            lines.append(text)
        else:
            lines.append(" " * (WIDTH * col[failed_cpu]) + text)
            rest = str(ex.failure).splitlines()[1:]
            lines.extend(" " * (WIDTH * col[failed_cpu] + 4) + line for line in rest)
    return "\n".join(lines)
