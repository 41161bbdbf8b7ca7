"""ee6ee49fd09f "x86/PCI: VMD: Synchronize with RCU freeing MSI IRQ descs" (v4.9).

v4.5 freed a child's ``vmd_irq`` with ``kfree_rcu``, which keeps the mapping
alive for a walker that already holds it — but the IRQ core frees (or, without
SPARSE_IRQ, resets to ``handle_bad_irq``) the child's descriptor as soon as
``msi_free`` returns, and a CPU that read the child's IRQ number from the
mapping just before calls ``generic_handle_irq`` on it. The fix (v4.9-rc1)
waits for the walkers first: ``synchronize_rcu()`` in ``msi_free``, then
``kfree``. (Linux later moved the wait to a per-vector SRCU, and the IRQ core
to freeing descriptors after a grace period in v4.14.)

Both sides are module options (``--protocol kfree-rcu`` and
``--protocol synchronize-rcu``) on an IRQ core that frees descriptors at once,
as the v4.9 core did.
"""

from __future__ import annotations

from vmdsim.history.corpus import Regression, Side
from vmdsim.history.review import seed_teardown

ENTRIES = [
    Regression(
        "rcu-sync", "ee6ee49fd09f", "x86/PCI: VMD: Synchronize with RCU freeing MSI IRQ "
        "descs", "v4.9", "no schedule of a child teardown against its vector's walk calls "
        "into a freed IRQ descriptor (seed-teardown, descriptors freed at once)",
        seed_teardown,
        Side("v4.5-v4.8: kfree_rcu", {"protocol": "kfree-rcu", "desc_free": "immediate"}),
        Side("v4.9: synchronize_rcu, then kfree", {"protocol": "synchronize-rcu",
                                                   "desc_free": "immediate"}),
        note="the model's descriptor freeing is SPARSE_IRQ's (kfree); without it Linux "
             "resets the descriptor to handle_bad_irq instead"),
]
