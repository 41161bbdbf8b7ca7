"""The 2015 review of the RFC v3 (``../shared/seed``): each point the review made, as a
corpus entry whose "before" is the RFC's code and whose "after" is what the review
asked for (or Linux today).
"""

from __future__ import annotations

import math

from vmdsim.check.scenarios.worlds import small_topology
from vmdsim.drivers.vmd.dev import fast_vectors
from vmdsim.drivers.vmd.query import vmd_devices, vmd_vector_loads
from vmdsim.errors import VmdsimError
from vmdsim.history.corpus import Finding, Regression, Side
from vmdsim.history.probes import booted, explored, failure
from vmdsim.kernel.pci import device_release_driver
from vmdsim.sim.workload import Load, parse_hotplug, run_load

REVIEW = "review"
RFC = "the RFC v3 (Nov 2015)"


def seed_teardown(protocol: str, desc_free: str) -> Finding:
    """The seed-teardown scenario over every schedule."""
    return explored("seed-teardown", protocol=protocol, desc_free=desc_free)


def _unbind_vmd(handler: str, remove: str) -> Finding:
    """Unbind the vmd driver from an idle machine: no error, nothing of vmd's left."""
    s = booted(small_topology(vectors=4), "<rfc-remove>",
               vmd_options={"handler": handler, "remove": remove})
    try:
        device_release_driver(vmd_devices(s.k)[0].dev)
    except VmdsimError as e:
        return failure(e)
    left = s.k.mem.leaks("vmd")
    if left:
        return Finding("leak", f"vmd left {len(left)} objects allocated")
    return Finding("clean", "remove uninstalled every handler and freed the vectors")


def _parent_domain(parent: str) -> Finding:
    """No IRQ domain maps more IRQs than its size (a domain allocation sized)."""
    s = booted(_CROWDED, "<parent-domain>", vmd_options={"parent": parent})
    for vmd in vmd_devices(s.k):
        d = vmd.parent_domain
        if d is not None and d.mapcount > d.revmap_size:
            return Finding("overfull-domain",
                           f"{d.name} (size {d.revmap_size}) maps {d.mapcount} child IRQs: "
                           "allocation never consults it")
    return Finding("clean", "the VMD MSI domain is a root: no parent to overfill")


# Three drives behind a 5-vector VMD (examples/topologies/modulo-crowding.toml).
_CROWDED = """[machine]
cpus = 4

[[vmd]]
device = 0x201D
msix_vectors = 5
""" + "".join(f"""
[[vmd.root_port]]
slot = {i}
hotplug = true
nvme = {{ queues = {q} }}
""" for i, q in enumerate((2, 2, 1)))
_CHURN = "2:remove:vmd0.rp0,4:insert:vmd0.rp0,6:remove:vmd0.rp2,8:insert:vmd0.rp2"


def _crowding(policy: str) -> Finding:
    """After boot and hot-plug churn, no fast vector carries more children than
    ⌈NVMe children / fast vectors⌉."""
    s = booted(_CROWDED, "<modulo-crowding>", policy=policy)
    run_load(s, Load(rate=200.0, duration_ms=10.0, hotplug=parse_hotplug(_CHURN)))
    vmd = vmd_devices(s.k)[0]
    fast = fast_vectors(vmd)
    nvme = sum(1 for c in vmd.children if c.fast)
    floor = math.ceil(nvme / len(fast))
    loads = vmd_vector_loads(vmd)
    worst = max(fast, key=lambda irqs: loads[irqs.index])
    if loads[worst.index] > floor:
        return Finding("crowded", f"vector {worst.index} carries {loads[worst.index]} "
                                  f"children; {nvme} NVMe children on {len(fast)} fast "
                                  f"vectors need at most {floor}")
    return Finding("clean", f"no fast vector carries more than {floor} children")


ENTRIES = [
    Regression(
        "rfc-kfree", REVIEW, "the RFC's msi_free kfree()s a mapping the RCU walk may hold",
        "v4.5 (kfree_rcu)", "no schedule of a child teardown against its vector's walk "
        "touches freed memory (seed-teardown)", seed_teardown,
        Side(RFC, {"protocol": "rfc-v3", "desc_free": "rcu"}),
        Side("v4.5's kfree_rcu", {"protocol": "kfree-rcu", "desc_free": "rcu"}),
        note="both sides on today's IRQ core, which frees descriptors after a grace "
             "period (since v4.14); on the older one see descriptor-freed"),
    Regression(
        "descriptor-freed", REVIEW, "kfree_rcu is not enough: the IRQ descriptor is freed "
        "at once (the drawn race)", "v4.9 (rcu-sync)",
        "no schedule calls into a freed IRQ descriptor (seed-teardown, descriptors "
        "freed immediately as before v4.14)", seed_teardown,
        Side("v4.5's kfree_rcu", {"protocol": "kfree-rcu", "desc_free": "immediate"}),
        Side("Linux today (synchronize_srcu before the free)",
             {"protocol": "srcu", "desc_free": "immediate"})),
    Regression(
        "lock-order", REVIEW, "a spinlock around the walk deadlocks against free_irq "
        "(Keith Busch's answer)", "v4.5 (RCU walk)",
        "no schedule deadlocks (seed-teardown)", seed_teardown,
        Side("the list lock held across the walk", {"protocol": "spinlock",
                                                    "desc_free": "rcu"}),
        Side("Linux today", {"protocol": "srcu", "desc_free": "rcu"})),
    Regression(
        "rfc-remove", REVIEW, "remove leaves the chained handlers and the MSI-X entries",
        "v4.5", "unbinding vmd from an idle machine uninstalls its handlers before "
        "its vectors are freed, and frees all it allocated", _unbind_vmd,
        Side(RFC + ": chained handler, its remove", {"handler": "chained",
                                                      "remove": "rfc-v3"}),
        Side("chained handler, today's remove", {"handler": "chained", "remove": "linux"}),
        note="an interrupt racing the remove is the vmd-remove scenario; it fails with "
             "today's remove too, in the generic IRQ teardown (docs/findings.md)"),
    Regression(
        "parent-domain", REVIEW, "the linear parent domain is never reached by allocation",
        "v4.5 (parentless MSI domain)", "no IRQ domain maps more IRQs than its size",
        _parent_domain,
        Side(RFC + ": linear parent of msix_count", {"parent": "linear"}),
        Side("Linux today: no parent", {"parent": "none"})),
    Regression(
        "modulo-crowding", REVIEW, "virq % msix_count crowds some vectors and leaves others "
        "empty", "v4.5 (fewest-children choice)", "after boot and hot-plug churn no fast "
        "vector carries more than ⌈NVMe children / fast vectors⌉ children", _crowding,
        Side(RFC + ": virq % msix_count", {"policy": "modulo"}),
        Side("Linux: the fast vector with the fewest children", {"policy": "least-loaded"})),
]
