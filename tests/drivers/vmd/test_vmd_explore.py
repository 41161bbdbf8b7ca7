"""The explorer's verdicts on the seed's race, per teardown protocol, and a live move that
never loses an interrupt, whatever step of it the interrupt comes at.

``demux_race_program`` (vmd_testbed) is the seed's diagram as a program: CPU0 runs
``driver_exit`` (``free_irq``, ``pci_free_irq_vectors``) for a VMD child while the VMD
vector it is on is pending at CPU1, so the demultiplexing walk can start at any step.
"""

from __future__ import annotations

import pytest
from vmd_testbed import demux_race_program, flush_interrupts, move_queue2, move_world

from vmdsim.check.explore import explore
from vmdsim.check.program import World
from vmdsim.drivers.vmd import vmd_irq_vector, vmd_vector_loads
from vmdsim.kernel.controlled import ControlledScheduler


@pytest.mark.parametrize("protocol,desc_free,verdict,freed", [
    ("rfc-v3", "rcu", "use-after-free", "vmd_irq"),
    ("rfc-v3", "immediate", "use-after-free", "vmd_irq"),
    ("kfree-rcu", "immediate", "use-after-free", "irq_desc"),  # the seed's KABOOM
    ("kfree-rcu", "rcu", "safe", None),
    ("srcu", "immediate", "safe", None),
    ("srcu", "rcu", "safe", None),
])
def test_each_protocol_gets_its_verdict_over_every_schedule(protocol, desc_free, verdict,
                                                             freed):
    program = demux_race_program(protocol, desc_free)
    assert World(program).copies  # the booted world deep-copies cleanly
    report = explore(program, "dpor", minimize=False)
    assert report.verdict == verdict, report.as_dict()
    if freed is not None:
        failure = report.counterexample.failure
        assert type(failure.object).__name__.endswith(freed)
        assert "CPU0" in report.drawing() and "CPU1" in report.drawing()
    else:
        assert report.bound == "every schedule"


def test_srcu_waits_for_the_walk_before_freeing_the_mapping():
    """Deliver the interrupt first and stop the walk just after it picked the child's
    mapping: driver_exit must block in synchronize_srcu until the walk is done."""
    program = demux_race_program("srcu", "immediate")
    world = World(program)
    from vmdsim.check.program import run_once

    state = {"walked": False}

    def chooser(s: ControlledScheduler, choices):
        for i, c in enumerate(choices):
            if c.kind == "irq":
                return i
        for i, c in enumerate(choices):
            if c.kind == "run" and c.ctx.kind == "irq" and not state["walked"]:
                if c.ctx.next and c.ctx.next[1] == "virq":
                    state["walked"] = True
                    break
                return i
        labels = [c.label for c in choices]
        return labels.index("driver_exit") if "driver_exit" in labels else 0

    ex = run_once(program, world, chooser)
    assert ex.verdict == "safe" and state["walked"]
    trace = ex.trace
    wait = next(i for i, st in enumerate(trace) if st.thread == "driver_exit" and st.access
                and st.access[0].startswith("srcu_struct") and st.access[2] == "wait")
    walk_end = next(i for i, st in enumerate(trace) if st.thread.startswith("irq")
                    and st.access and st.access[0].startswith("srcu_struct")
                    and st.access[2] == "rcu_read_unlock")
    free = next(i for i, st in enumerate(trace) if st.thread == "driver_exit" and st.access
                and st.access[0].startswith("vmd_irq#") and st.access[2] == "free")
    assert wait < walk_end < free


def _move_run(world_factory, n: int, late: bool):
    """Run the mover ``n`` steps, then let the drive complete, then (unless ``late``) let
    interrupts in as soon as they come; the mover and everything else run to the end."""
    w = world_factory()
    k = w.k
    s = ControlledScheduler(k.ncpus)
    k.install_scheduler(s)
    s.spawn(0, lambda: move_queue2(w), name="mover")
    s.spawn(1, w.fire, name="drive")
    steps = {"mover": 0}

    def chooser(sched, choices):
        labels = [c.label for c in choices]
        if "mover" in labels and steps["mover"] < n:
            steps["mover"] += 1
            return labels.index("mover")
        if "drive" in labels:
            return labels.index("drive")
        if not late:
            for i, c in enumerate(choices):
                if c.kind == "irq" or (c.ctx is not None and c.ctx.kind == "irq"):
                    return i
        if "mover" in labels:
            steps["mover"] += 1
            return labels.index("mover")
        return 0

    s.chooser = chooser
    s.run()
    assert s.failure is None, s.failure
    flush_interrupts(k)
    return w, steps["mover"]


@pytest.mark.parametrize("late", [False, True], ids=["prompt-delivery", "late-delivery"])
def test_an_interrupt_at_any_step_of_a_live_move_is_delivered(late):
    w, total = _move_run(move_world, 10**6, late)
    assert vmd_irq_vector(w.k, w.queue.virq)[1] == 2
    assert vmd_vector_loads(w.vmd) == [0, 1, 2]
    for n in range(total + 1):
        w, _ = _move_run(move_world, n, late)
        assert w.fire.sent, f"step {n}: the drive could not post"
        assert w.queue.consumed == 1, f"completion at mover step {n} was lost"
        assert vmd_irq_vector(w.k, w.queue.virq)[1] == 2


def test_without_the_replay_a_completion_sent_to_the_old_vector_can_be_lost():
    """What step 6 of the move is for: drop it, and some moment loses the interrupt."""
    lost = []
    w, total = _move_run(lambda: move_world(replay=False), 10**6, True)
    for n in range(total + 1):
        for late in (False, True):
            w, _ = _move_run(lambda: move_world(replay=False), n, late)
            if w.queue.consumed == 0:
                lost.append((n, late))
    assert lost
