"""The two fixes of the VMD's switch to an MSI parent domain (d7d8ab87e3e7, v6.17-rc1).

d5c647b08ee0 "PCI: vmd: Fix wrong kfree() in vmd_msi_free()" (v6.17): with the
VMD's domain no longer the top of a child IRQ's hierarchy, ``vmd_msi_free`` still
found its ``vmd_irq`` with ``irq_get_chip_data(virq)``, which returns the top
(device) level's chip data. That level's data has just been reset when the
parent's free runs (and PCI device domains have none), so the driver followed
a NULL pointer the first time a child gave a vector back: at boot, when the
NVMe driver frees its one admin vector to allocate its queues' (reported as
"early-stage reboots" on a Dell XPS 9320). The fix reads the VMD level's own
``irq_data``.

e433110eb5bf "PCI: vmd: Override irq_startup()/irq_shutdown() in
vmd_init_dev_msi_info()" (v6.18): 54f45a30c0d0 gave the PCI/MSI templates
``irq_startup``/``irq_shutdown`` (v6.18-rc1). ``__irq_startup`` calls a chip's
``irq_startup`` instead of ``irq_enable``, so the VMD's ``irq_enable`` override,
which puts the child on its vector's list, never ran: every child interrupt
reached the VMD vector's handler and found an empty list, and the machine hung
at boot (the same reporter). The fix overrides startup and shutdown too.
"""

from __future__ import annotations

from typing import Any

from vmdsim.check.scenarios.worlds import small_topology
from vmdsim.drivers.irqchip.irq_msi_lib import msi_lib_init_dev_msi_info
from vmdsim.drivers.nvme import nvme_core_of
from vmdsim.drivers.vmd.dev import vmd_dev, vmd_irq
from vmdsim.drivers.vmd.msi_parent import vmd_pci_msi_disable, vmd_pci_msi_enable
from vmdsim.errors import VmdsimError
from vmdsim.history.corpus import Finding, Regression, Side
from vmdsim.history.probes import booted, failure
from vmdsim.kernel.irq.irqdomain import irq_domain
from vmdsim.kernel.irq.msi import msi_domain_info
from vmdsim.kernel.mem import NullPointerDereference
from vmdsim.sim.bindings import unbound_devices
from vmdsim.sim.workload import Load, run_load
from vmdsim.variants import variant


@variant("vmdsim.drivers.vmd.msi_parent.vmd_msi_free")
def vmd_msi_free(domain: irq_domain, virq: int, nr_irqs: int) -> None:
    """d7d8ab87e3e7's: the vmd_irq looked up with irq_get_chip_data (the top level's)."""
    vmd: vmd_dev = domain.host_data
    for i in range(nr_irqs):
        vmdirq: vmd_irq | None = domain.k.irq.irq_get_chip_data(virq + i)
        if vmdirq is None:
            raise NullPointerDereference(f"vmd_irq of IRQ {virq + i}", "vmd_msi_free")
        vmd.protocol.msi_free(vmd, vmdirq)
        vmd.policy.after_free(vmd)


@variant("vmdsim.drivers.vmd.msi_parent.vmd_init_dev_msi_info")
def vmd_init_dev_msi_info(dev: Any, domain: irq_domain, real_parent: irq_domain,
                          info: msi_domain_info) -> bool:
    """v6.17's: only enable and disable are overridden."""
    if not msi_lib_init_dev_msi_info(dev, domain, real_parent, info):
        return False
    chip = info.chip
    assert chip is not None  # a template's copy has its chip
    chip.irq_enable = vmd_pci_msi_enable
    chip.irq_disable = vmd_pci_msi_disable
    return True


def _boots_and_frees() -> Finding:
    """Boot a VMD with a drive: the NVMe driver gives its admin vector back once."""
    try:
        s = booted(small_topology(), "<vmd-msi-free>")
    except VmdsimError as e:
        return failure(e)
    if unbound_devices(s):
        return Finding("unbound", ", ".join(str(u) for u in unbound_devices(s)))
    return Finding("clean", "the drive's vectors were freed and allocated again at boot")


def _children_get_interrupts() -> Finding:
    """Boot, then let the drive complete I/O: every completion must be handled."""
    try:
        s = booted(small_topology(), "<vmd-irq-startup>")
    except VmdsimError as e:
        return failure(e)
    unbound = unbound_devices(s)
    if unbound:
        return Finding("unbound", f"{unbound[0]} (no child interrupt reached its handler: "
                                  "the NVMe admin queue timed out)")
    r = run_load(s, Load(rate=200.0, duration_ms=2.0))
    if r.lost:
        return Finding("lost-interrupt", f"{r.lost} completion(s) never handled")
    devs = nvme_core_of(s.k).devices
    return Finding("clean", f"{len(devs)} drive(s) bound, every completion handled")


ENTRIES = [
    Regression(
        "vmd-msi-free", "d5c647b08ee0", "PCI: vmd: Fix wrong kfree() in vmd_msi_free()",
        "v6.17-rc1",
        "a child giving a vector back (the NVMe driver at boot) frees the vmd_irq the "
        "VMD level allocated", _boots_and_frees,
        Side("v6.17-rc1: irq_get_chip_data(virq), the device level's", variants=(vmd_msi_free,)),
        Side("irq_domain_get_irq_data(domain, virq)->chip_data (Linux since the fix)"),
        note="the device level's chip data is NULL in the model and in Linux, so the oops "
             "comes from the dereference before the wrong kfree"),
    Regression(
        "vmd-irq-startup", "e433110eb5bf",
        "PCI: vmd: Override irq_startup()/irq_shutdown() in vmd_init_dev_msi_info()",
        "v6.18-rc2",
        "with the v6.18 PCI/MSI templates (irq_startup, 54f45a30c0d0), a child's interrupts "
        "reach its handler: the drive binds and its completions are handled",
        _children_get_interrupts,
        Side("v6.17's vmd_init_dev_msi_info: irq_enable/irq_disable only",
             variants=(vmd_init_dev_msi_info,)),
        Side("startup and shutdown overridden too (Linux since the fix)"),
        note="before the fix the model shows the hang's first sign and what follows it: the "
             "admin queue's first command times out ('I/O tag 0 ... QID 0 timeout, "
             "completion polled'); the polling's disable_irq/enable_irq runs the VMD's "
             "irq_enable, which puts the child on its list, and the template's "
             "irq_shutdown never takes it off, so free_irq leaves a freed vmd_irq on the "
             "list for the next VMD interrupt to walk (the report saw the hang)"),
]
