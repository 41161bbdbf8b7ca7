"""``k.irq``: the generic IRQ layer's state for one kernel, and its methods.

What Linux keeps in globals lives here: the descriptor table and its lock,
the domain list, the x86 vector matrix and per-CPU ``vector_irq`` tables, the
x86 vector domain and the default PCI-MSI domain (both created here, as
``arch_early_irq_init`` and ``pci_arch_init`` create them at boot, before any
driver), the MSI data of each device,
the log lines the IRQ code prints, and two model switches:

``desc_free``: ``"rcu"`` (default, Linux since 4.14) or ``"immediate"``
    how ``irq_free_descs`` frees a descriptor (see ``irqdesc``).
``hardirq_rcu_reader``: True (default, Linux since 4.20) or False
    whether the x86 interrupt entry counts as an RCU read-side section.
``pci_msi_domains``: ``"per-device-startup"`` (default, Linux since v6.18),
    ``"per-device"`` (v6.2-v6.17) or ``"global"`` (v4.x-v6.1): whether PCI
    devices get device domains on the vector domain (an MSI parent) or share
    x86's global PCI-MSI domain, and whether the PCI templates have
    ``irq_startup`` (``kernel/pci/msi.py``). Set it before any device
    allocates vectors.

The methods, with Linux's names, come from one mixin per Linux file:
``irqdesc`` (``irq_to_desc``, ``irq_alloc_descs``, ``irq_free_descs``,
``generic_handle_irq``), ``chip`` (``irq_set_chip_and_handler``,
``irq_set_chained_handler_and_data``, ``irq_get_chip_data``...), ``manage``
(``request_irq``, ``free_irq``, ``synchronize_irq``, ``disable_irq``,
``enable_irq``, ``irq_set_affinity``, ``devm_request_irq``), ``irqdomain``
(``irq_domain_free_irqs``, the fwnode allocators) and ``x86_vector``
(``common_interrupt``, which is ``k.sched.handle_irq``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from vmdsim.kernel.irq.chip import ChipMixin
from vmdsim.kernel.irq.irqdesc import sparse_irqs
from vmdsim.kernel.irq.irqdomain import DomainMixin, irq_domain
from vmdsim.kernel.irq.manage import ManageMixin
from vmdsim.kernel.irq.msi_parent import IRQ_DOMAIN_FLAG_MSI_PARENT
from vmdsim.kernel.irq.proc import ExtraColumn, show_interrupts
from vmdsim.kernel.irq.x86_msi import native_create_pci_msi_domain, x86_create_pci_msi_domain
from vmdsim.kernel.irq.x86_vector import X86VectorMixin, x86_vector_domain_init
from vmdsim.kernel.locking import mutex, raw_spinlock_t

if TYPE_CHECKING:
    from vmdsim.kernel.core import Kernel

PCI_MSI_DOMAIN_MODES = ("per-device-startup", "per-device", "global")
X86_DYNIRQ_BASE = 24  # the first IRQ above the IO-APIC's 24 GSIs (arch_dynirq_lower_bound)
NR_IRQS_LEGACY = 16
NR_VECTORS = 256


def arch_probe_nr_irqs(ncpus: int, gsi_top: int = X86_DYNIRQ_BASE) -> int:
    """``nr_irqs`` as x86 sizes it at boot (PCI/MSI configured): the GSIs and legacy IRQs,
    8 per CPU, and 16 per GSI for MSI, capped at one per vector of every CPU. The model's
    one IO-APIC has 24 pins (``gsi_top``)."""
    nr = gsi_top + NR_IRQS_LEGACY + 8 * ncpus + gsi_top * 16
    return min(nr, NR_VECTORS * ncpus)


class IrqSubsystem(ChipMixin, ManageMixin, DomainMixin, X86VectorMixin):
    """The IRQ core of one kernel (``k.irq``)."""

    def __init__(self, k: Kernel) -> None:
        k.irq = self  # the domains created below look their kernel's IRQ core up
        self.k = k
        self._desc_free = "rcu"
        self.hardirq_rcu_reader = True
        self.sparse_irqs = sparse_irqs()
        self.sparse_irq_lock = mutex("sparse_irq_lock")
        self.dynirq_base = X86_DYNIRQ_BASE
        self.nr_irqs = arch_probe_nr_irqs(k.ncpus)  # what sizes /proc/interrupts' IRQ column
        self.irq_domain_list: list[irq_domain] = []
        self.irq_domain_mutex = mutex("irq_domain_mutex")
        self.vector_lock = raw_spinlock_t("vector_lock")
        self.spurious_vectors = [0] * k.ncpus
        self.msi_dev_data: dict[Any, Any] = {}
        self.x86_vector_domain = x86_vector_domain_init(k)
        self._pci_msi_domains = PCI_MSI_DOMAIN_MODES[0]  # the newest
        self.x86_pci_msi_default_domain: irq_domain = native_create_pci_msi_domain(k)
        k.sched.handle_irq = self.common_interrupt

    @property
    def pci_msi_domains(self) -> str:
        return self._pci_msi_domains

    @pci_msi_domains.setter
    def pci_msi_domains(self, mode: str) -> None:
        if mode not in PCI_MSI_DOMAIN_MODES:
            raise ValueError(f"pci_msi_domains {mode!r}: one of {', '.join(PCI_MSI_DOMAIN_MODES)}")
        if (mode == "global") != (self._pci_msi_domains == "global"):
            if self.msi_dev_data:
                raise ValueError("pci_msi_domains: set before any device allocates vectors")
            vector = self.x86_vector_domain
            if mode == "global":  # x86_create_pci_msi_domain, as up to v6.1
                vector.flags &= ~IRQ_DOMAIN_FLAG_MSI_PARENT
                vector.msi_parent_ops = None
                self.x86_pci_msi_default_domain = x86_create_pci_msi_domain(self.k)
            else:
                self.irq_domain_list.remove(self.x86_pci_msi_default_domain)
                self.x86_pci_msi_default_domain = native_create_pci_msi_domain(self.k)
        self._pci_msi_domains = mode


    def show_interrupts(self, extra: ExtraColumn | None = None) -> str:
        """``/proc/interrupts`` as text; ``extra(irq, desc)`` adds a column."""
        return show_interrupts(self.k, extra)
