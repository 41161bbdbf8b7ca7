"""Exhaustive search with source-DPOR and sleep sets (Abdulla et al., POPL 2014).

Stateless: every execution re-runs the program from its post-setup state,
following a prefix of labels and then choosing freely. After each execution
the races in its trace are found (dependent steps of different threads,
ordered by nothing but each other); for each race (i, j) the explorer makes
sure that some thread able to start ``notdep(i).j`` is in the backtrack set
of the state before step i, so the reversed order is tried. Sleep sets stop
it from re-exploring, after a sibling, what that sibling already covered.

With sleep sets, no two complete executions explored are equivalent
(the same Mazurkiewicz trace); executions that end because every enabled
choice is asleep are counted as ``blocked`` — the waste optimal DPOR would
avoid.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from vmdsim.check.dependence import dependent, execution_races, initials, notdep
from vmdsim.check.program import Execution, Program, World, run_once
from vmdsim.kernel.controlled import Access, ControlledScheduler


@dataclass
class Node:
    """The state before one step of the current execution."""

    enabled: list[str]
    sleep: dict[str, frozenset[Access]]  # inherited: asleep on arrival
    chosen: str = ""
    backtrack: set[str] = field(default_factory=set)
    done: dict[str, frozenset[Access]] = field(default_factory=dict)  # explored siblings
    step: frozenset[Access] = frozenset()  # what the chosen step touched


@dataclass
class Stats:
    executions: int = 0  # complete executions
    blocked: int = 0  # ended because every enabled choice was asleep
    steps: int = 0
    races: int = 0
    cut: int = 0  # ended at the preemption bound (the bounded search's first pass)
    estimate: float = 0.0  # optimal DPOR: the runs it expects in all (0: no estimate)

    def add(self, other: Stats) -> None:
        self.executions += other.executions
        self.blocked += other.blocked
        self.steps += other.steps
        self.races += other.races
        self.cut += other.cut


def dpor(program: Program, *, on_execution: Callable[[Execution], bool] | None = None,
         max_executions: int | None = None, reduce: bool = True,
         only_root: int | None = None, world: World | None = None) -> Stats:
    """Explore every trace of ``program``; ``on_execution`` returns False to stop early.

    The first step is always expanded in full: the subtree under each enabled
    first choice is explored in turn, with the earlier first choices asleep.
    That makes the subtrees independent, so they can be explored by separate
    processes (``only_root`` picks one) with the same counts as one process.
    ``reduce=False`` turns the reduction off (every schedule), for comparison.
    """
    world = world or World(program)
    roots = root_steps(program, world)
    stats = Stats()
    for k, (label, _) in enumerate(roots):
        if only_root is not None and k != only_root:
            continue
        asleep = dict(roots[:k]) if reduce else {}
        root = Node([lab for lab, _ in roots], {}, label, {label}, asleep)
        budget = None if max_executions is None else max_executions - stats.executions
        if _subtree(program, world, root, stats, on_execution, budget, reduce):
            break
    return stats


def root_steps(program: Program, world: World) -> list[tuple[str, frozenset[Access]]]:
    """Each enabled first choice, with what its step touches."""
    labels: list[str] = []

    def first(s: ControlledScheduler, choices: list) -> int | None:
        if s.trace:
            return None
        labels[:] = [c.label for c in choices]
        return 0

    run_once(program, world, first)
    out = []
    for lab in labels:
        def only(s: ControlledScheduler, choices: list, lab: str = lab) -> int | None:
            return None if s.trace else [c.label for c in choices].index(lab)

        out.append((lab, run_once(program, world, only).trace[0].accesses))
    return out


def _subtree(program: Program, world: World, root: Node, stats: Stats,
             on_execution: Callable[[Execution], bool] | None, budget: int | None,
             reduce: bool) -> bool:
    """Explore below ``root``; True if told to stop."""
    nodes: list[Node] = [root]
    prefix: list[str] = [root.chosen]
    done = 0
    while True:
        ex = _execute(program, world, nodes, prefix, reduce)
        stats.steps += len(ex.trace)
        for d in range(len(prefix) - 1, len(ex.trace)):
            nodes[d].step = ex.trace[d].accesses
        if ex.complete:
            stats.executions += 1
            done += 1
        else:
            stats.blocked += 1
        if reduce:
            stats.races += _add_backtracks(ex, nodes)
        else:
            for node in nodes[len(prefix):]:
                node.backtrack = set(node.enabled)
        if on_execution is not None and on_execution(ex) is False:
            return True
        if budget is not None and done >= budget:
            return True
        nxt = _next_prefix(nodes)
        if nxt is None:
            return False
        prefix = nxt


def _execute(program: Program, world: World, nodes: list[Node], prefix: list[str],
             reduce: bool) -> Execution:
    def chooser(s: ControlledScheduler, choices: list) -> int | None:
        d = len(s.trace)
        labels = [c.label for c in choices]
        if d < len(prefix):
            return labels.index(prefix[d])
        sleep: dict[str, frozenset[Access]] = {}
        if reduce and d > 0:
            parent, last = nodes[d - 1], s.trace[d - 1].accesses
            for lab, acc in (*parent.sleep.items(), *parent.done.items()):
                if lab != parent.chosen and not dependent(acc, last):
                    sleep[lab] = acc
        awake = [lab for lab in labels if lab not in sleep]
        node = Node(labels, sleep)
        del nodes[d:]
        nodes.append(node)
        if not awake:
            return None
        node.chosen = awake[0]
        node.backtrack = {awake[0]}
        return labels.index(awake[0])

    return run_once(program, world, chooser)


def _add_backtracks(ex: Execution, nodes: list[Node]) -> int:
    trace, hb, found = execution_races(ex.trace, ex.pending)
    for i, j in found:
        node = nodes[i]
        starts = initials(trace, hb, notdep(hb, i, j, len(ex.trace)))
        if node.backtrack.intersection(starts):
            continue
        for q in starts:
            if q in node.enabled:
                node.backtrack.add(q)
                break
    return len(found)


def _next_prefix(nodes: list[Node]) -> list[str] | None:
    """Mark the deepest choice explored and move to the next one still to try."""
    while len(nodes) > 1:  # the root's choices are the caller's
        node = nodes[-1]
        if node.chosen:
            node.done[node.chosen] = node.step
        todo = [lab for lab in node.enabled
                if lab in node.backtrack and lab not in node.done and lab not in node.sleep]
        if todo:
            node.chosen = todo[0]
            return [n.chosen for n in nodes]
        nodes.pop()
    return None
