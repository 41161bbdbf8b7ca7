"""The generic IRQ layer in Linux's shapes (``kernel/irq/``, ``arch/x86/kernel/apic/``).

``k.irq`` (an ``IrqSubsystem``, from ``subsys``) holds one kernel's IRQ state and the
operations that name an IRQ by number (``k.irq.request_irq(...)``,
``k.irq.generic_handle_irq(virq)``); operations on an object take the object,
as in Linux (``handle_edge_irq(desc)``, ``irq_domain_alloc_irqs(domain, ...)``,
``irq_data_get_irq_chip_data(d)``). One module per Linux file:

==============  ===========================================================
``irqdesc``     descriptors, the sparse table, ``desc_free`` modes; the
                ``irq_data`` and ``irq_chip`` structures, ``irqd_*``
                accessors, ``no_irq_chip`` and ``handle_bad_irq``
``chip``        startup/shutdown/mask, handler installation
``flow``        ``handle_edge_irq``, ``handle_simple_irq``,
                ``handle_untracked_irq``, chained enter/exit
``handle``      ``irqaction``, running actions, spurious accounting
``manage``      ``request_irq``, ``free_irq``, ``synchronize_irq``...
``irqdomain``   domains and their hierarchy, activation
``msi``         MSI descriptors, MSI domains and their ops
``affinity``    spreading vectors over CPUs
``matrix``      the per-CPU vector allocator
``x86_vector``  the x86 vector domain and ``common_interrupt``
``x86_msi``     the default PCI-MSI domain
``proc``        ``/proc/interrupts``
==============  ===========================================================

The PCI side (``pci_alloc_irq_vectors`` and MSI/MSI-X programming) is in
``vmdsim.kernel.pci.msi``. Memory is sequentially consistent; weak ordering
is out of scope.

Importing the package imports none of its modules: the IRQ core is below
``pci.msi``, which ``x86_msi`` (and so ``subsys``) uses.
"""
