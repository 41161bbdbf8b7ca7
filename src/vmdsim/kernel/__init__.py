"""The OS model, in Linux's shapes: memory, locks, RCU/SRCU, the scheduler, IRQ core, PCI."""
