"""vmd.c through its history: the review's points and merged fixes, each reproduced.

``REGRESSIONS`` is the corpus in the order ``vmdsim regressions`` prints it:
the 2015 review's points first, then the merged fixes by date. Each entry
(``corpus.Regression``) runs one property's probe (``probes``) on the code
before the fix and after it; the code before is expressed as variants of the
functions the fix changed (``vmdsim/variants.py``) and as module or IRQ-core
options, so ``vmdsim run --variant before:NAME`` runs a machine with it.
Modules, named for what they hold:

==================  ============================================================
``corpus``          the entry, its two sides, a probe's finding, running one
``probes``          looking for a bug: exploring a scenario, booting a machine
``review``          the review of the RFC v3 (Nov 2015)
``untracked_irq``   30ce03503813: the spurious detector and shared vectors
``msi_sharing``     9c2053040ca7: MSI children kept off the MSI-X vectors
``vector_parent``   e382dffc904d: a VMD child's data read as the APIC's at CPU offline
``double_disable``  97e923063575: a child taken off its list twice
``list_loop``       21c80c9fefc3: a removed node pointing at itself
``rcu_sync``        ee6ee49fd09f: synchronize_rcu before freeing a mapping
``remove_order``    dc8af3a827df: resources detached before the bus was stopped
``bus_offsets``     e3dffa4f6c36: config addressing with a bus offset
``client_vector0``  f6b7bb847ca8: a client VMD's vector 0 forwards no child MSI
``osc``             04b12ef163d1: the domain's PCIe features follow firmware's _OSC
``soft_reboot``     b61cf04c49c3: remapping back on before a reboot
``aspm_deadlock``   49de0dc87965: pci_bus_sem taken twice for reading
``domain_link``     f24c9bfcd423: the domain link, before udev looks for it
``cpu_offline``     647e9651a011: "set affinity failed" at CPU offline
==================  ============================================================

``UNMODELLED`` lists the fixes the corpus does not reproduce yet, with what
each would take.
"""

from __future__ import annotations

from vmdsim.history import (
    aspm_deadlock,
    bus_offsets,
    client_vector0,
    cpu_offline,
    domain_link,
    double_disable,
    list_loop,
    msi_parent,
    msi_sharing,
    osc,
    rcu_sync,
    remove_order,
    review,
    soft_reboot,
    untracked_irq,
    vector_parent,
)
from vmdsim.history.corpus import (
    Finding,
    Regression,
    RegressionError,
    Result,
    Side,
    Unmodelled,
    run_regression,
    select,
)
from vmdsim.sim.release import settings_for
from vmdsim.variants import Variant, VariantError, load_variant_file

REGRESSIONS: list[Regression] = [*review.ENTRIES, *untracked_irq.ENTRIES, *msi_sharing.ENTRIES,
                                 *vector_parent.ENTRIES, *double_disable.ENTRIES,
                                 *list_loop.ENTRIES,
                                 *rcu_sync.ENTRIES,
                                 *remove_order.ENTRIES,
                                 *bus_offsets.ENTRIES, *client_vector0.ENTRIES,
                                 *osc.ENTRIES, *soft_reboot.ENTRIES, *aspm_deadlock.ENTRIES,
                                 *domain_link.ENTRIES, *cpu_offline.ENTRIES,
                                 *msi_parent.ENTRIES]

UNMODELLED: list[Unmodelled] = [
    Unmodelled("2565e5b69c44", "PCI: vmd: Do not disable MSI-X remapping if interrupt "
               "remapping is enabled by IOMMU.",
               "VT-d interrupt remapping: the IR MSI domain, and the IOMMU blocking "
               "compatibility-format messages (fault reason 0x25)"),
    Unmodelled("886e67100b90", "PCI: vmd: Assign VMD IRQ domain before enumeration",
               "the same IOMMU model: children inheriting the default PCI-MSI domain in bypass"),
    Unmodelled("c94f732e8001", "PCI: vmd: Revert 2565e5b69c44",
               "the same IOMMU model, IR on/off against bypass on/off"),
    Unmodelled("0a584655ef89", "PCI: vmd: Fix secondary bus reset for Intel bridges",
               "the state a passed-through drive keeps across a guest reboot until a "
               "Secondary Bus Reset clears it (the model's SBR and pci_reset_bus exist; what "
               "failed to enumerate without them is not in the commit)"),
]


def resolve_variants(specs: tuple[str, ...] | list[str]) -> list[Variant]:
    """The variants ``--variant`` names: a Python file, or ``before:NAME``, the code
    before the fix of corpus entry NAME."""
    out: list[Variant] = []
    for spec in specs:
        if spec.startswith("before:"):
            name = spec.removeprefix("before:")
            entry = select(REGRESSIONS, (name,))[0]
            if not entry.before.variants:
                opts = " ".join(f"{k}={v}" for k, v in entry.before.options.items())
                raise VariantError(f"--variant {spec}: {entry.name}'s code before the fix is "
                                   f"today's code with options ({opts}), not a variant")
            out += entry.before.variants
        else:
            out += load_variant_file(spec)
    targets = [v.target for v in out]
    dup = sorted({t for t in targets if targets.count(t) > 1})
    if dup:
        raise VariantError(f"--variant: two variants of {dup[0]}")
    return out


def variant_releases(specs: tuple[str, ...] | list[str]) -> dict[str, dict[str, str]]:
    """The interrupt-domain scheme each ``before:NAME`` of ``specs`` belongs to (the release
    its fix shipped in, ``sim/release.py``), by spec: that code runs on no other."""
    out = {}
    for spec in specs:
        if spec.startswith("before:"):
            entry = select(REGRESSIONS, (spec.removeprefix("before:"),))[0]
            out[spec] = settings_for(entry.fixed_in)
    return out


__all__ = ["REGRESSIONS", "UNMODELLED", "Finding", "Regression", "RegressionError", "Result",
           "Side", "Unmodelled", "resolve_variants", "run_regression", "select",
           "variant_releases"]
