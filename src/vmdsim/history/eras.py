"""Kernel eras: ``--kernel VERSION`` runs the driver and IRQ core of that release.

An era is today's model with what that release did differently: module and
IRQ-core options (the demux protocol, descriptor freeing, the RFC's handler,
remove and parent domain, its vector choice) and the code before each fix the
release did not have yet — the ``before`` side of corpus entries, applied as
variants. Each era also says which VMD device IDs its driver knew (a machine
with another part is refused, as that kernel would leave it unbound) and, in
``differs``, what of the release the model does not reproduce.

Each era also runs its release's interrupt-domain scheme (``sim/release.py``):
x86's global PCI-MSI domain before v6.2, per-device MSI domains after; the
VMD's legacy MSI domain before v6.17, the VMD as an MSI parent after.

Only releases whose differences the corpus and the public history pin down
are offered; a release the model cannot represent honestly is refused with the
reason.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from vmdsim.errors import VmdsimError
from vmdsim.history.corpus import Regression, select
from vmdsim.sim.release import settings_for
from vmdsim.variants import Variant

SERVER_201D = 0x201D  # Sky Lake-SP: the only part v4.5 to v4.17 knew


class EraError(VmdsimError):
    """An unknown or unmodelled ``--kernel`` release, or options that contradict it."""


@dataclass(frozen=True)
class Era:
    name: str  # what --kernel takes: "4.5", "rfc-v3"
    summary: str
    options: Mapping[str, str] = field(default_factory=dict)  # protocol, desc_free, ...
    before: tuple[str, ...] = ()  # corpus entries whose code before the fix this ran
    device_ids: tuple[int, ...] | None = None  # VMD IDs the driver matched; None: all
    differs: str = ""  # what of the release the model does not reproduce

    @property
    def release(self) -> dict[str, str]:
        """The interrupt-domain scheme the release ran (``sim/release.py``)."""
        return settings_for(self.name)

    def variants(self, corpus: list[Regression]) -> list[Variant]:
        out: list[Variant] = []
        if not self.before:
            return out  # (select() of no names is every entry)
        for entry in select(corpus, self.before):
            out += entry.before.variants
        return out


ERAS: list[Era] = [
    Era("rfc-v3", "the RFC v3 of November 2015 (never merged), the seed's code",
        {"protocol": "rfc-v3", "policy": "modulo", "desc_free": "immediate",
         "handler": "chained", "remove": "rfc-v3", "parent": "linear"},
        before=("untracked-irq",), device_ids=(SERVER_201D,),
        differs="what the review text does not show is inferred (drivers/vmd/rfc_v3.py); "
                "resources are attached to the parent's tree as today"),
    Era("4.5", "the first merged driver (arch/x86/pci/vmd.c)",
        {"protocol": "kfree-rcu", "desc_free": "immediate", "policy": "least-loaded"},
        before=("untracked-irq", "msi-sharing"), device_ids=(SERVER_201D,),
        differs="the vector choice is v4.5's own (fewest children over every vector), "
                "whatever --policy says, so only least-loaded is accepted; resources are "
                "attached to the parent's tree, as only from v4.7 on; descriptors are "
                "freed at once, as by every IRQ core before v4.14"),
    Era("4.9", "synchronize_rcu before the free (ee6ee49fd09f), untracked children, MSI "
        "children off the MSI-X vectors",
        {"protocol": "synchronize-rcu", "desc_free": "immediate"},
        before=("detach-resources",), device_ids=(SERVER_201D,),
        differs="v4.8 kept MSI children apart by MSI vs MSI-X; the model's rule is today's "
                "(NVMe by class to the fast vectors), which gives the same split here"),
    Era("6.16", "the last release with the VMD's legacy MSI domain (one PCI/MSI domain "
        "for every child; the VMD itself on a per-device domain, as since v6.2)",
        {"protocol": "srcu", "desc_free": "rcu"}),
    Era("6.17", "the VMD an MSI parent (d7d8ab87e3e7), each child on its own device "
        "domain, VMD-PCI-MSIX-<child> in /proc/interrupts",
        {"protocol": "srcu", "desc_free": "rcu"},
        differs="the VMD's vmd_init_dev_msi_info also overrides irq_startup and "
                "irq_shutdown (e433110eb5bf, v6.18): harmless here, the v6.17 templates "
                "have neither"),
    Era("6.18", "PCI/MSI templates with irq_startup/irq_shutdown (54f45a30c0d0) and the "
        "VMD's own (e433110eb5bf); the model's default",
        {"protocol": "srcu", "desc_free": "rcu"}),
]
DEFAULT_ERA = "6.18"
# What the model runs where an option is not given (and what the scenarios' worlds run).
TODAY = {"protocol": "srcu", "desc_free": "rcu", "policy": "least-loaded",
         "handler": "request-irq", "remove": "linux", "parent": "none"}
UNMODELLED_ERAS = {
    (6, 19): "the newest release the model runs is 6.18; what later releases changed in "
             "the VMD and PCI core (the emulated domain-number allocator, "
             "pci_bus_find_emul_domain_nr, among others) is not modelled",
}


def _version(name: str) -> tuple[int, int] | None:
    parts = name.removeprefix("v").split(".")
    if len(parts) < 2 or not all(p.isdigit() for p in parts[:2]):
        return None
    return int(parts[0]), int(parts[1])


def find_era(name: str) -> Era:
    """The era ``--kernel NAME`` names (``4.5``, ``v4.5``, ``rfc-v3``)."""
    wanted = name.removeprefix("v") if _version(name) else name
    for e in ERAS:
        if e.name == wanted:
            return e
    v = _version(name)
    if v is not None:
        for since, why in UNMODELLED_ERAS.items():
            if v >= since:
                raise EraError(f"--kernel {name}: {why}")
    known = ", ".join(e.name for e in ERAS)
    raise EraError(f"--kernel {name}: not a release the model has; the releases: {known} "
                   "(a release in between runs as the one before it only where the corpus "
                   "pins its differences down, so it is not offered)")


def merge_options(era: Era, given: Mapping[str, str | None]) -> dict[str, str]:
    """The era's options with those given on the command line; one that contradicts the
    era is an error (the release had one behaviour, not the other)."""
    out = dict(era.options)
    for key, value in given.items():
        if value is None:
            continue
        if key in out and out[key] != value:
            flag = key.replace("_", "-")
            raise EraError(f"--{flag} {value} contradicts --kernel {era.name}, which ran "
                           f"{flag} {out[key]}; leave one of them out")
        out[key] = value
    return out


def check_devices(era: Era, device_ids: list[tuple[str, int]]) -> None:
    """Refuse a machine with a VMD the era's driver did not know (name, device ID)."""
    if era.device_ids is None:
        return
    for name, did in device_ids:
        if did not in era.device_ids:
            known = ", ".join(f"8086:{d:04x}" for d in era.device_ids)
            raise EraError(f"--kernel {era.name}: {name} is 8086:{did:04x}, which that "
                           f"release's vmd driver does not match (it knows {known}); the "
                           "part would stay unbound")
