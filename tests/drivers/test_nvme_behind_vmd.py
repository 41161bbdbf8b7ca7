"""The NVMe and port drivers behind a VMD: the same calls, a different MSI domain.

The drivers do not know they are in a VMD domain: ``pci_alloc_irq_vectors``
hands out VMD-MSI IRQs (the VMD sets the child's MSI domain), the port
services see the native flags the VMD copied from its host bridge, and a
completion reaches ``nvme_irq`` through the VMD's demultiplexing handler.
The machine is the built-in default with MEMBAR2 large enough for the
hot-plug windows of four slots (the default's 1 MiB is not).
"""

from __future__ import annotations

from importlib import resources

import vmdsim
from vmdsim.drivers.nvme import nvme_core_of, nvme_queue_stats
from vmdsim.drivers.pcieport import (
    PCIE_PORT_SERVICE_AER,
    PCIE_PORT_SERVICE_HP,
    PCIE_PORT_SERVICE_PME,
    pcie_port_bus_of,
)
from vmdsim.hw.aer import ERR_COR
from vmdsim.hw.nvme import NvmeController
from vmdsim.topology import parse


def roomy_default() -> str:
    text = resources.files("vmdsim.topologies").joinpath("default.toml").read_text()
    return text.replace('membar2 = "1M"', 'membar2 = "32M"')


def booted(native: dict[str, bool] | None = None):
    s = vmdsim.boot(parse(roomy_default(), "<roomy default>"),
                    drivers=["vmd", "pcieport", "nvme"], native=native)
    return s.machine, s.k


def rows(k, prefix: str) -> dict[str, dict]:
    return {r["name"]: r for r in nvme_queue_stats(k) if r["name"].startswith(prefix)}


def test_every_drive_binds_in_the_vmd_domain_with_vmd_msi_irqs():
    m, k = booted()
    devs = nvme_core_of(k).devices
    assert [d.name for d in devs] == ["nvme0", "nvme1", "nvme2", "nvme3"]
    assert all(d.pdev.bus.domain_nr == 0x10000 for d in devs)
    assert [d.num_vecs for d in devs] == [5, 5, 5, 5]
    for r in nvme_queue_stats(k):
        # v6.17+: the child's own device domain on the VMD's MSI parent
        assert k.irq.irq_to_desc(r["irq"]).irq_data.chip.name.startswith("VMD-PCI-MSI")
    for port in {d.pdev.bus.self for d in devs}:
        services = {s.service for s in pcie_port_bus_of(k).services_of(port)}
        assert services == {PCIE_PORT_SERVICE_PME, PCIE_PORT_SERVICE_AER, PCIE_PORT_SERVICE_HP}


def test_a_completion_reaches_its_queue_handler_through_the_vmd():
    m, k = booted()
    before = rows(k, "nvme2q")  # the admin queue already took its commands' completions
    for q in range(5):  # queue 0: an event completes the Asynchronous Event Request
        assert m.nvmes[2].complete(q)
    for name, r in rows(k, "nvme2q").items():
        b = before[name]
        assert (r["real"] - b["real"], r["spurious"] - b["spurious"],
                r["completions"] - b["completions"]) == (1, 0, 1), name
    assert all(m.nvmes[2].pending(q) == 0 for q in range(5))


def test_surprise_removal_and_reinsertion_behind_the_vmd_leave_nothing_behind():
    m, k = booted()
    rp = m.by_name["vmd0.rp0"]
    irqs = {r["irq"] for r in rows(k, "nvme0q").values()}
    rp.unpopulate()
    assert [d.name for d in nvme_core_of(k).devices] == ["nvme1", "nvme2", "nvme3"]
    assert not irqs & set(k.irq.active_irqs())
    counts = k.mem.owner_counts()
    for i in range(2):
        card = NvmeController(f"spare{i}", nr_io_queues=8)
        rp.populate(card)
        assert [d.name for d in nvme_core_of(k).devices][-1] == "nvme0"
        card.complete(3)
        assert rows(k, "nvme0q")["nvme0q3"]["real"] == 1
        rp.unpopulate()
        assert k.mem.owner_counts() == counts


def test_port_services_behind_the_vmd_take_aer_and_pme():
    m, k = booted()
    rp = m.by_name["vmd0.rp1"]
    n = len(k.log.lines())
    rp.receive_error_message(ERR_COR, 0x0200)
    rp.receive_pme(0x0200)
    log = list(k.log.lines())[n:]
    assert ("pcieport 10000:00:01.0: AER: Correctable error message received from 10000:02:00.0"
            in log)
    # no PME Status at 02:00.0:
    assert "pcieport 10000:00:01.0: PME: Spurious native interrupt!" in log


def test_the_vmd_domain_inherits_what_firmware_granted_its_host_bridge():
    m, k = booted(native={"pcie_hotplug": False, "aer": False})
    port = nvme_core_of(k).devices[0].pdev.bus.self
    assert {s.service for s in pcie_port_bus_of(k).services_of(port)} == {
        PCIE_PORT_SERVICE_PME}
