"""The RFC v3's code as options (``drivers/vmd/rfc_v3.py``): its chained flow handler, its
remove that tears the handlers down nowhere, and its linear parent domain."""

from __future__ import annotations

import pytest

import vmdsim
from vmdsim.check.explore import explore
from vmdsim.check.scenario import find
from vmdsim.drivers.nvme import nvme_core_of
from vmdsim.drivers.vmd import VmdParamError, vmd_devices
from vmdsim.drivers.vmd.rfc_v3 import vmd_flow_handler
from vmdsim.errors import VmdsimError
from vmdsim.kernel.irq.chip import chained_action
from vmdsim.kernel.irq.flags import IrqError
from vmdsim.kernel.mem import UseAfterFree
from vmdsim.kernel.pci import device_release_driver
from vmdsim.sim.system import drive_of


def first_io_queue(s: vmdsim.System):
    dev = nvme_core_of(s.k).devices[0]
    q = next(q for q in dev.queues[1:] if q is not None)
    return dev, q


def test_the_chained_flow_handler_demultiplexes_as_the_requested_one_does():
    s = vmdsim.boot(vmd_options={"handler": "chained"})
    vmd = vmd_devices(s.k)[0]
    for irqs in vmd.irqs:
        desc = s.k.irq.irq_to_desc(irqs.virq)
        assert desc.handle_irq is vmd_flow_handler and desc.action is chained_action
        assert s.k.irq.irq_get_handler_data(irqs.virq) is irqs
    dev, q = first_io_queue(s)
    drive = drive_of(s, dev.pdev)
    before = sum(i.calls for i in vmd.irqs)
    assert drive.complete(q.qid)
    assert sum(i.calls for i in vmd.irqs) == before + 1


def test_today_s_remove_uninstalls_chained_handlers_before_the_lists_are_freed():
    s = vmdsim.boot(vmd_options={"handler": "chained"})
    vmd = vmd_devices(s.k)[0]
    device_release_driver(vmd.dev)
    assert not s.k.mem.leaks("vmd")


def test_the_rfc_remove_frees_msix_vectors_with_the_chained_handlers_installed():
    s = vmdsim.boot(vmd_options={"handler": "chained", "remove": "rfc-v3"})
    vmd = vmd_devices(s.k)[0]
    virqs = [irqs.virq for irqs in vmd.irqs]
    with pytest.raises(IrqError, match="still has a handler"):
        device_release_driver(vmd.dev)
    # devres freed the lists first: the handler data of every vector is freed memory,
    # and a VMD vector taken now runs the handler on it
    desc = s.k.irq.irq_to_desc(virqs[0])
    assert desc.handle_irq is vmd_flow_handler
    with pytest.raises(UseAfterFree, match="in vmd_flow_handler"):
        s.machine.vmds[0].msix.fire(0)  # MSI-X is still enabled: the message goes up


def test_unknown_rfc_options_are_refused_with_the_valid_ones():
    with pytest.raises(VmdParamError, match="valid handlers: request-irq, chained"):
        vmdsim.boot(vmd_options={"handler": "chaind"})
    with pytest.raises(VmdsimError, match="the options are handler, remove, parent"):
        vmdsim.boot(vmd_options={"handlr": "chained"})


@pytest.mark.parametrize("handler,remove,want", [
    ("chained", "rfc-v3", "irq-misuse"),
    ("chained", "linux", "null-pointer-dereference"),
    ("request-irq", "linux", "null-pointer-dereference"),
])
def test_vmd_remove_scenario_verdicts(handler, remove, want):
    prog = find("vmd-remove").program(handler=handler, remove=remove)
    r = explore(prog, "dpor")
    assert r.verdict == want
    assert r.stats.blocked == 0


CROWDED = "examples/topologies/modulo-crowding.toml"


def test_the_rfc_parent_domain_maps_more_child_irqs_than_its_size_and_costs_an_irq_data_each():
    from vmdsim.views.irq_domains import irq_domains

    s = vmdsim.boot(CROWDED, vmd_options={"parent": "linear", "msi_domain": "legacy"})
    vmd = vmd_devices(s.k)[0]
    parent = vmd.parent_domain
    assert vmd.irq_domain.parent is parent and parent.revmap_size == vmd.msix_count
    children = len(vmd.children)
    assert parent.mapcount == vmd.irq_domain.mapcount == children > vmd.msix_count
    # every child IRQ has a level at the parent, which no lookup ever reaches
    for c in vmd.children:
        d = s.k.irq.irq_get_irq_data(c.virq)
        assert d.domain is vmd.irq_domain and d.parent_data.domain is parent
    text = irq_domains(s.k)
    assert f" parent: {parent.name}\n    name:   {parent.name}\n" \
           f"     size:   {vmd.msix_count}\n     mapped: {children}\n" in text
    assert f"{children - vmd.msix_count} more than its size" in text
    assert f"{children} irq_data" in text


def test_without_the_parent_the_vmd_msi_domain_is_a_root():
    s = vmdsim.boot(CROWDED)
    vmd = vmd_devices(s.k)[0]
    assert vmd.parent_domain is None and vmd.irq_domain.parent is None


def test_today_s_remove_removes_the_parent_and_the_rfc_remove_leaks_it():
    s = vmdsim.boot(CROWDED, vmd_options={"parent": "linear", "msi_domain": "legacy"})
    device_release_driver(vmd_devices(s.k)[0].dev)
    assert not s.k.mem.leaks("vmd")
    s = vmdsim.boot(CROWDED, vmd_options={"parent": "linear", "remove": "rfc-v3",
                                          "msi_domain": "legacy"})
    parent = vmd_devices(s.k)[0].parent_domain
    device_release_driver(vmd_devices(s.k)[0].dev)
    assert s.k.mem.leaks("vmd") == [parent]
