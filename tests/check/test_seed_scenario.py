"""The seed's race, found and ruled out on the whole stack (VMD driver, NVMe, IRQ core).

Expected verdicts (issue 5): rfc-v3 uses the freed mapping; kfree-rcu with
descriptors freed at once uses the freed descriptor (the KABOOM of the
review's diagram: CPU1 read the child's virq just before the removal and
calls ``desc->handle_irq``); kfree-rcu with descriptors freed after a grace
period is safe; srcu (Linux today) is safe — checked over every schedule.
"""

from __future__ import annotations

import pytest

from vmdsim.check.explore import explore
from vmdsim.check.scenario import find
from vmdsim.check.schedule import replay

SEED = find("seed-teardown")


@pytest.mark.parametrize("protocol,desc_free,expected,touched", [
    ("rfc-v3", "rcu", "use-after-free", "vmd_irq#"),
    ("kfree-rcu", "immediate", "use-after-free", "irq_desc#"),
    pytest.param("kfree-rcu", "rcu", "safe", None, marks=pytest.mark.slow),  # ~1 min
    ("srcu", "immediate", "safe", None),
    ("srcu", "rcu", "safe", None),
])
def test_the_seed_verdicts(protocol, desc_free, expected, touched):
    assert SEED.expected({"protocol": protocol, "desc_free": desc_free}) == expected
    r = explore(SEED.program(protocol=protocol, desc_free=desc_free))
    assert r.verdict == expected
    if expected == "safe":
        assert r.bound == "every schedule" and r.stats.executions > 1
        assert r.strategy == "optimal" and r.stats.blocked == 0  # one run per trace
        return
    message = str(r.counterexample.failure)
    assert f"read of {touched}" in message
    if touched == "irq_desc#":
        assert ".handle_irq" in message and "freed by free_desc" in message
    # the drawing has the teardown on CPU0 and the handler on CPU1, as the seed's does
    head, *rows = r.drawing(full=True).splitlines()
    assert head.startswith("CPU0") and "CPU1" in head
    assert any("vmd_irq" in row and row.startswith(" ") for row in rows)  # CPU1's column
    # folded, it keeps what races: the free on CPU0 and the use on CPU1, and is shorter
    compact = r.drawing()
    obj = message.split("read of ")[1].split(".")[0]
    assert f"kfree({obj})" in compact and f"read {obj}." in compact and "⋮" in compact
    assert len(compact.splitlines()) < len(rows) // 2
    again = replay(SEED.program(protocol=protocol, desc_free=desc_free), r.schedule)
    assert str(again.failure) == message
