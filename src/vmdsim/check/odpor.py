"""Optimal DPOR with wakeup trees (Abdulla, Aronis, Jonsson, Sagonas, JACM 2017).

Exactly one complete execution per Mazurkiewicz trace, and no execution
abandoned because every enabled thread was asleep: where source-DPOR adds
one thread to a backtrack set and hopes its continuation reverses the race,
optimal DPOR records the whole reversing sequence ``v = notdep(e).e'`` in a
*wakeup tree* at the state before ``e`` and replays it, so the explorer
never starts a continuation that a sleeping thread would block.

Stateless, as the source-DPOR explorer: every execution re-runs the program
from its post-setup state along the labels of the current branch, then
follows the branch's wakeup subtree, then chooses freely. After each
execution its races are found (:func:`vmdsim.check.dependence.races`, which
also turns a release/acquire pair into the swap of two critical sections
and counts the pending steps of blocked threads) and each reversal is
inserted into the wakeup tree of the state before its first step, unless a
thread asleep there already covers it (a *weak initial* of ``v``).

If a branch of a wakeup tree asks for a thread that cannot run, the
dependence relation has lied (an enabling was not declared as a dependence):
the explorer stops with :class:`ExplorerError` rather than guess.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from vmdsim.check.dependence import (
    ExplorerError,
    HappensBefore,
    dependent,
    execution_races,
    notdep,
)
from vmdsim.check.dpor import Stats
from vmdsim.check.program import Execution, Program, World, run_once
from vmdsim.kernel.controlled import Access, ControlledScheduler, Step


@dataclass
class WNode:
    """A node of a wakeup tree: the next step of thread ``label`` and what it touches —
    exactly, once it has run in this state; before that, all it might touch (a step
    recorded in another order may do more here: a cmpxchg that failed there)."""

    label: str
    accesses: frozenset[Access]
    children: list[WNode] = field(default_factory=list)


@dataclass
class ONode:
    """The state before one step of the current execution."""

    enabled: list[str]
    sleep: dict[str, frozenset[Access]]  # asleep on arrival
    wut: list[WNode]  # branches still to explore here, the one being explored first
    done: dict[str, frozenset[Access]] = field(default_factory=dict)  # explored: asleep now
    step: frozenset[Access] = frozenset()  # what the chosen step touched
    pruned: bool = False  # the chosen step was not taken (see ``prune``)

    @property
    def chosen(self) -> str:
        return self.wut[0].label if self.wut else ""


Prune = Callable[[ControlledScheduler, list[str], str], bool]


def odpor(program: Program, *, on_execution: Callable[[Execution], bool] | None = None,
          max_executions: int | None = None, world: World | None = None,
          prune: Prune | None = None, stats: Stats | None = None) -> Stats:
    """Explore every Mazurkiewicz trace of ``program`` once; ``on_execution`` returns False
    to stop early.

    ``prune(scheduler, enabled labels, label)`` True: do not take that step; the
    execution ends there (counted as ``cut``) and nothing below it is explored. That
    gives up the guarantee of covering every trace: it is how the bounded search and
    the counterexample minimiser look for schedules with few preemptions, never what
    a verdict of ``safe`` rests on.

    ``stats`` (filled in as it goes, so that a caller's ``on_execution`` can read it)
    carries :func:`estimate` of the runs in all after each one."""
    world = world or World(program)
    stats = stats if stats is not None else Stats()
    nodes: list[ONode] = []
    order = HappensBefore()  # of the last execution: the next one shares a prefix
    while True:
        follow = len(nodes)
        ex = run_once(program, world, _chooser(nodes, prune))
        if nodes and not nodes[-1].wut:
            nodes.pop()  # the state where every enabled thread was asleep
        stats.steps += len(ex.trace)
        for d in range(max(follow - 1, 0), len(ex.trace)):
            node = nodes[d]
            node.step = ex.trace[d].accesses
            node.wut[0].accesses = node.step  # exact now that it ran in this state
        if ex.complete:
            stats.executions += 1
        elif len(nodes) > len(ex.trace) and nodes[-1].pruned:
            stats.cut += 1
        else:
            stats.blocked += 1
        stats.races += _insert_reversals(ex, nodes, order, max(follow - 1, 0),
                                         grouped=prune is not None)
        stats.estimate = estimate(nodes, stats.executions + stats.blocked + stats.cut)
        if on_execution is not None and on_execution(ex) is False:
            return stats
        if max_executions is not None and stats.executions >= max_executions:
            return stats
        if not _next_branch(nodes):
            return stats


def estimate(nodes: list[ONode], runs: int) -> float:
    """How many runs the whole exploration will take, from the runs so far and the share
    of the tree they cover. A random descent that picks each branch of a node with equal
    chance (the branches known now: explored ones and those in its wakeup tree) ends in
    an explored subtree with probability ``share``; ``runs / share`` is the estimate
    (Knuth's estimator, taken over the depth-first stack). Branches that races add
    later are not known yet, so early estimates are low."""
    share = 0.0
    weight = 1.0
    for node in nodes:
        branches = len(node.done) + len(node.wut)
        if branches == 0:
            break
        share += weight * len(node.done) / branches
        weight /= branches
    share += weight  # the run that just ended
    return runs / share


def _chooser(nodes: list[ONode], prune: Prune | None = None
             ) -> Callable[[ControlledScheduler, list], int | None]:
    def choose(s: ControlledScheduler, choices: list) -> int | None:
        d = len(s.trace)
        labels = [c.label for c in choices]
        if d < len(nodes):
            want = nodes[d].chosen
        else:
            parent = nodes[d - 1] if d else None
            sleep: dict[str, frozenset[Access]] = {}
            wut: list[WNode] = []
            if parent is not None:
                last = s.trace[d - 1].accesses
                for lab, acc in (*parent.sleep.items(), *parent.done.items()):
                    if not dependent(acc, last):
                        sleep[lab] = acc
                wut = parent.wut[0].children
            node = ONode(labels, sleep, wut)
            nodes.append(node)
            if not wut:
                awake = [lab for lab in labels if lab not in sleep]
                if not awake:
                    return None  # sleep-set blocked: optimal DPOR should never get here
                pick = awake[0]
                if prune is not None and s.trace and s.trace[-1].thread in awake:
                    pick = s.trace[-1].thread  # a bounded search does not preempt for nothing
                wut.append(WNode(pick, frozenset()))
            want = node.chosen
        if want not in labels:
            raise ExplorerError(
                f"explorer: the schedule asks for {want!r} at step {d}, but only "
                f"{', '.join(labels) or 'nothing'} can run: a dependence the explorer "
                "relies on was not declared, so no verdict is given")
        if prune is not None and prune(s, labels, want):
            nodes[d].pruned = True
            return None
        return labels.index(want)

    return choose


def _next_branch(nodes: list[ONode]) -> bool:
    """Retire the deepest explored branch and move to the next one still to explore."""
    while nodes:
        node = nodes[-1]
        finished = node.wut.pop(0)
        if node.pruned:
            node.pruned = False  # never taken: it covers nothing, so puts nothing to sleep
        else:
            node.done[finished.label] = node.step
        if node.wut:
            return True
        nodes.pop()
    return False


def _insert_reversals(ex: Execution, nodes: list[ONode], order: HappensBefore,
                      shared: int, grouped: bool = False) -> int:
    trace, hb, found = execution_races(ex.trace, ex.pending, order, shared)
    for i, j in found:
        node = nodes[i]
        v = notdep(hb, i, j, len(ex.trace))
        if grouped:
            v = _grouped(trace, hb, v)
        mask = 0
        for k in v:
            mask |= 1 << k
        if any(_weak_initial(trace, hb, v, mask, lab, acc)
               for lab, acc in (*node.sleep.items(), *node.done.items())):
            continue  # a sleeping thread already covers this reversal
        _insert(trace, hb, node.wut, v, mask)
    return len(found)


def _grouped(trace: Sequence[Step], hb: list[int], v: list[int]) -> list[int]:
    """The same sequence ``v`` up to swapping independent steps, with each thread's steps
    kept together where happens-before allows (greedy: go on with the thread of the
    last step while its next step has nothing left before it in ``v``): fewer
    preemptions, for a search that is cut at a preemption bound."""
    mask = 0
    queues: dict[str, list[int]] = {}
    for k in v:
        mask |= 1 << k
        queues.setdefault(trace[k].thread, []).append(k)
    heads = dict.fromkeys(queues, 0)
    placed = 0
    out: list[int] = []
    cur = ""
    while len(out) < len(v):
        q = queues.get(cur)
        if q is None or heads[cur] == len(q) or hb[q[heads[cur]]] & mask & ~placed:
            cur = min((t for t, q in queues.items() if heads[t] < len(q)
                       and not hb[q[heads[t]]] & mask & ~placed),
                      key=lambda t: queues[t][heads[t]])
            q = queues[cur]
        k = q[heads[cur]]
        heads[cur] += 1
        out.append(k)
        placed |= 1 << k
    return out


def _weak_initial(trace: Sequence[Step], hb: list[int], v: list[int], mask: int,
                  label: str, accesses: frozenset[Access]) -> bool:
    """``label`` is a weak initial of ``v``: its first step in ``v`` has no predecessor
    in ``v``, or it has no step in ``v`` and its next step commutes with all of ``v``."""
    for k in v:
        if trace[k].thread == label:
            return not hb[k] & mask
    return not any(dependent(accesses, trace[k].footprint) for k in v)


def _insert(trace: Sequence[Step], hb: list[int], tree: list[WNode], v: list[int],
            mask: int) -> None:
    """Insert the sequence ``v`` into the wakeup tree ``tree``, unless a branch there
    already starts a sequence equivalent to it."""
    v = list(v)
    children = tree
    while True:
        for child in children:
            if _weak_initial(trace, hb, v, mask, child.label, child.accesses):
                if not child.children:
                    return  # a leaf that v extends: exploring it will reach v
                for n, k in enumerate(v):
                    if trace[k].thread == child.label:
                        del v[n]
                        mask &= ~(1 << k)
                        break
                if not v:
                    return
                children = child.children
                break
        else:
            chain = children
            for k in v:
                node = WNode(trace[k].thread, trace[k].footprint)
                chain.append(node)
                chain = node.children
            return
