"""The Intel VMD driver (Linux ``drivers/pci/controller/vmd.c``), against the kernel model.

It sees only registers: it sizes nothing itself, reads VMCAP/VMCONFIG/VMLOCK
and the shadow registers through config space and MEMBAR2, reaches the hidden
domain's config space through CFGBAR, and programs child MSI-X tables through
the MSI core. Modules, named for what they hold:

=============  ===============================================================
``features``   the ID table (per-device features) and register definitions
``dev``        ``vmd_dev``, ``vmd_irq_list``, ``vmd_irq`` and the lookups on them
``cfg``        ``vmd_cfg_read``/``vmd_cfg_write``: config cycles through CFGBAR
``probe``      ``vmd_probe``, ``vmd_enable_domain``, ``vmd_remove``, ``vmd_shutdown``
``msi``        the VMD's own vectors, the parentless MSI domain and child chip
``demux``      the vector handler ``vmd_irq`` and the teardown protocols
``policies``   vector assignment: modulo, least-loaded, affinity, rebalance
``rebalance``  moving a live child IRQ between vectors without losing one
``pm``         ``vmd_suspend``/``vmd_resume``
``module``     ``vmd_init``/``vmd_exit`` and the module parameters
``query``      per-IRQ vector, per-vector load and handler counts
``rfc_v3``     the RFC v3's chained handler, remove and parent domain (options)
=============  ===============================================================

Load it with ``vmd_init(k, protocol="srcu", policy="least-loaded")``.
"""

from vmdsim.drivers.vmd.demux import PROTOCOLS
from vmdsim.drivers.vmd.module import VmdParamError, vmd_exit, vmd_init, vmd_module_of
from vmdsim.drivers.vmd.policies import POLICIES
from vmdsim.drivers.vmd.query import (
    vmd_devices,
    vmd_interrupts_column,
    vmd_irq_vector,
    vmd_show_interrupts,
    vmd_vector_calls,
    vmd_vector_child_calls,
    vmd_vector_children,
    vmd_vector_loads,
)
from vmdsim.drivers.vmd.rebalance import vmd_move, vmd_move_irq, vmd_rebalance

__all__ = [
    "POLICIES",
    "PROTOCOLS",
    "VmdParamError",
    "vmd_devices",
    "vmd_exit",
    "vmd_init",
    "vmd_interrupts_column",
    "vmd_irq_vector",
    "vmd_module_of",
    "vmd_move",
    "vmd_move_irq",
    "vmd_rebalance",
    "vmd_show_interrupts",
    "vmd_vector_calls",
    "vmd_vector_child_calls",
    "vmd_vector_children",
    "vmd_vector_loads",
]
