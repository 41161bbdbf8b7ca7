"""A scenario of your own, in a few lines: the RFC's demux list without the hardware.

CPU0 takes an entry off a vector's list and frees it; CPU1 walks the list
under rcu_read_lock, as the RFC v3 handler did. Run it with

    vmdsim check examples/scenarios/rcu_list.py --opt free=kfree
    vmdsim check examples/scenarios/rcu_list.py --opt free=synchronize_rcu
"""

from types import SimpleNamespace

from vmdsim.check.program import Program
from vmdsim.check.scenario import scenario
from vmdsim.kernel.core import Kernel
from vmdsim.kernel.rcu import (
    rcu_read_lock,
    rcu_read_unlock,
    synchronize_rcu,
)
from vmdsim.kernel.rculist import (
    list_add_tail_rcu,
    list_del_rcu,
    list_for_each_entry_rcu,
    list_head,
)
from vmdsim.kernel.shared import shared


class vmd_irq(list_head):
    virq = shared()

    def __init__(self, virq):
        super().__init__()
        self.virq = virq


@scenario("rcu-list", "CPU0 deletes and frees a list entry while CPU1 walks the list",
          options={"free": ("kfree", "synchronize_rcu", "kfree_rcu")},
          expect={"kfree": "use-after-free", "synchronize_rcu": "safe", "kfree_rcu": "safe"})
def rcu_list(free="kfree"):
    def setup():
        k = Kernel(2)
        head = list_head()
        for virq in (33, 34):
            list_add_tail_rcu(k.mem.kzalloc(vmd_irq, virq, owner="vmd"), head)
        return SimpleNamespace(k=k, head=head)

    def remove(w):
        victim = w.head.next
        list_del_rcu(victim)
        if free == "synchronize_rcu":
            synchronize_rcu()
        (w.k.mem.kfree_rcu if free == "kfree_rcu" else w.k.mem.kfree)(victim)

    def walk(w):
        rcu_read_lock()
        for irq in list_for_each_entry_rcu(w.head):
            irq.virq  # noqa: B018 - generic_handle_irq(irq->virq)
        rcu_read_unlock()

    return Program("rcu-list", setup,
                   lambda w: [(0, lambda: remove(w), "remove"), (1, lambda: walk(w), "walk")])
