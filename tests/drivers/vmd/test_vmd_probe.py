"""Binding a VMD, as VMD-FACTS.md walks the probe: what the kernel then sees through config
space, and what removal leaves behind (nothing)."""

from __future__ import annotations

import pytest
from vmd_testbed import (
    ROOMY_DEFAULT,
    boot_vmd,
    bound_queues,
    load_vmd,
    machine_text,
    vmd_block,
)

import vmdsim
from vmdsim.drivers.vmd import vmd_devices, vmd_exit, vmd_init, vmd_irq_vector
from vmdsim.drivers.vmd.cfg import vmd_cfg_read, vmd_cfg_write
from vmdsim.hw.fabric import RootComplex
from vmdsim.hw.firmware import bios_assign_resources
from vmdsim.hw.rootport import RootPort
from vmdsim.hw.vmd import Vmd
from vmdsim.kernel.boot import boot
from vmdsim.kernel.core import Kernel
from vmdsim.kernel.errno import EFAULT
from vmdsim.kernel.irq.x86_msi import x86_pci_msi_default_domain
from vmdsim.kernel.pci import (
    PCI_DEVFN,
    pci_find_ext_capability,
    pci_name,
    pci_read_config_dword,
    pci_read_config_word,
    pcie_capability_read_word,
)
from vmdsim.kernel.pci.pci_h import PCI_CLASS_STORAGE_EXPRESS, pci_is_bridge

DOMAIN = 0x10000
PCI_REG_VMCONFIG = 0x44
VMCONFIG_MSI_REMAP = 0x2
PCI_MEMORY_BASE = 0x20
PCI_PREF_MEMORY_BASE = 0x24
PCI_PREF_BASE_UPPER32 = 0x28
PCI_EXP_LNKCTL = 0x10
PCI_EXP_LNKCTL_ASPMC = 0x3
PCI_EXT_CAP_ID_LTR = 0x18


def vmconfig(w) -> int:
    return pci_read_config_word(w.k.pci.devices[1], PCI_REG_VMCONFIG)[1]


def vmd_pdev(k, n=0):
    return [d for d in k.pci.devices if d.vendor == 0x8086 and d.class_ == 0x010400][n]


def snapshot(k):
    """What a clean unbind must return to: live objects, IRQs, domains, MSI domains (x86's
    default PCI-MSI domain is among them: it exists from the kernel's creation on)."""
    assert x86_pci_msi_default_domain(k) in k.irq.irq_domain_list
    return ({id(o) for o in k.mem.leaks()}, k.irq.active_irqs(), k.pci.domains(),
            list(k.irq.irq_domain_list))


# -- the default machine --------------------------------------------------------------------
def test_the_default_machine_binds_and_shows_every_port_and_drive_in_domain_10000():
    w = boot_vmd(None, child=False)
    k = w.k
    assert [v.name for v in vmd_devices(k)] == ["vmd0"]
    assert k.pci.domains() == [0, DOMAIN]
    assert [pci_name(d) for d in k.pci.lspci(DOMAIN)] == [
        "10000:00:00.0", "10000:00:01.0", "10000:00:02.0", "10000:00:03.0",
        "10000:01:00.0", "10000:02:00.0", "10000:03:00.0", "10000:04:00.0"]
    for d in k.pci.lspci(DOMAIN):
        want = (0x8086, 0x2030) if d.bus.number == 0 else (0x8086, 0x0A54)
        assert pci_read_config_dword(d, 0)[1] == want[1] << 16 | want[0]
    assert "vmd 0000:00:0e.0: Bound to PCI domain 10000" in k.log.lines()
    assert vmd_pdev(k).dev.links["domain"] is w.vmd.bus.dev
    # 0x201D cannot bypass: remapping stays on, 32 vectors each with a handler
    assert not vmconfig(w) & VMCONFIG_MSI_REMAP
    assert w.vmd.msix_count == 32 and w.vmd.irq_domain is not None
    assert all(k.irq.irq_has_action(irqs.virq) for irqs in w.vmd.irqs)


def _windows(vmd_dev):
    r1, r2 = vmd_dev.resource[2], vmd_dev.resource[4]
    return [(r1.start, r1.end), (r2.start + 0x2000, r2.end)]


@pytest.mark.parametrize("text", [None, ROOMY_DEFAULT], ids=["default", "membar2-32M"])
def test_every_bar_and_bridge_window_lies_inside_the_vmd_windows(text):
    w = boot_vmd(text, child=False)
    k = w.k
    windows = _windows(vmd_pdev(k))

    def inside(lo, hi):
        return any(a <= lo and hi <= b for a, b in windows)

    seen = 0
    for d in k.pci.lspci(DOMAIN):
        if pci_is_bridge(d):
            _, mem = pci_read_config_dword(d, PCI_MEMORY_BASE)
            lo, hi = (mem & 0xFFF0) << 16, (mem >> 16 & 0xFFF0) << 16 | 0xFFFFF
            assert lo > hi or inside(lo, hi), f"{pci_name(d)} window {lo:#x}-{hi:#x}"
            _, pref = pci_read_config_dword(d, PCI_PREF_MEMORY_BASE)
            _, upper = pci_read_config_dword(d, PCI_PREF_BASE_UPPER32)
            plo = upper << 32 | (pref & 0xFFF0) << 16
            phi = (pref >> 16 & 0xFFF0) << 16 | 0xFFFFF
            assert plo > phi or inside(plo, phi), f"{pci_name(d)} pref {plo:#x}-{phi:#x}"
            continue
        _, lo32 = pci_read_config_dword(d, 0x10)
        _, hi32 = pci_read_config_dword(d, 0x14)
        base = hi32 << 32 | lo32 & ~0xF
        assert d.class_ == PCI_CLASS_STORAGE_EXPRESS
        assert base and inside(base, base + 0x3FFF), f"{pci_name(d)} BAR0 {base:#x}"
        seen += 1
    assert seen == 4


def test_two_vmds_get_their_own_domain_and_instance_name():
    text = machine_text([vmd_block(slot="0e.0"), vmd_block(slot="0f.0", device=0x28C0)])
    w = boot_vmd(text, child=False)
    k = w.k
    assert [(v.name, v.sysdata.domain) for v in vmd_devices(k)] == [
        ("vmd0", 0x10000), ("vmd1", 0x10001)]
    assert k.pci.domains() == [0, 0x10000, 0x10001]
    assert {d.bus.domain_nr for d in k.pci.devices if d.bus.domain_nr} == {0x10000, 0x10001}
    # unbinding vmd0 frees its number; binding again takes it back
    from vmdsim.kernel.pci import device_attach, device_release_driver

    first = vmd_pdev(k, 0)
    k.run_on(0, device_release_driver, first)
    assert [v.name for v in vmd_devices(k)] == ["vmd1"]
    assert k.pci.domains() == [0, 0x10001]
    k.run_on(0, device_attach, first)
    assert [(v.name, v.sysdata.domain) for v in vmd_devices(k)] == [
        ("vmd1", 0x10001), ("vmd0", 0x10002)]


# -- per-part features --------------------------------------------------------------------------
@pytest.mark.parametrize("restriction,start", [(0, 0x00), (1, 0x80), (2, 0xE0)])
def test_bus_restriction_moves_the_domain_to_its_first_bus(restriction, start):
    text = machine_text([vmd_block(0x28C0, extra=f"bus_restriction = {restriction}\n")])
    w = boot_vmd(text, child=False)
    names = [pci_name(d) for d in w.k.pci.lspci(DOMAIN)]
    assert names == [f"10000:{start:02x}:00.0", f"10000:{start:02x}:01.0",
                     f"10000:{start + 1:02x}:00.0", f"10000:{start + 2:02x}:00.0"]
    assert w.vmd.busn_start == start


def test_bus_restriction_3_fails_the_probe_and_leaves_nothing():
    text = machine_text([vmd_block(0x28C0, extra="bus_restriction = 3\n")])
    w = boot_vmd(text, child=False)
    k = w.k
    assert vmd_devices(k) == []
    assert "vmd 0000:00:0e.0: Unknown Bus Offset Setting (3)" in k.log.lines()
    assert k.pci.domains() == [0]
    assert vmd_pdev(k).driver is None
    assert k.mem.leaks("vmd") == [] and k.mem.leaks("devres") == []
    assert not vmconfig(w) & VMCONFIG_MSI_REMAP


def test_a_cfgbar_under_1mib_is_refused_with_enomem():
    rc = RootComplex()
    rc.root_bus.attach(Vmd("vmd0", aborts=rc.aborts, cfgbar_size=512 << 10), 0x0E)
    bios_assign_resources(rc)
    k = Kernel(4)
    boot(k, type("M", (), {"rc": rc, "ncpus": 4})())
    before = snapshot(k)
    k.run_on(0, vmd_init, k)
    assert vmd_devices(k) == []
    assert "pci 0000:00:0e.0: probe with driver vmd failed with error -12" in k.log.lines()
    assert snapshot(k) == before


def test_bypass_sets_the_remap_disable_bit_and_remove_turns_remapping_back_on():
    text = machine_text([vmd_block(0x28C0, extra="vmlock = 2\n")])
    w = boot_vmd(text)
    k, vmd = w.k, w.vmd
    assert vmconfig(w) & VMCONFIG_MSI_REMAP
    assert vmd.msix_count == 0 and vmd.irqs == [] and vmd.irq_domain is None
    # children use ordinary x86 vectors: not VMD children, and their chip is their own
    # device domain's on the vector domain (v6.2+)
    queue = bound_queues(w)[0]
    assert vmd_irq_vector(k, queue.virq) is None
    assert k.irq.irq_get_chip(queue.virq).name.startswith("PCI-MSIX-10000:")
    k.run_on(0, vmd_exit, k)
    assert not vmconfig(w) & VMCONFIG_MSI_REMAP


def test_shadow_registers_of_a_guest_give_a_resource_offset_and_keep_remapping_on():
    """0x28C0 passed through: the BARs hold guest addresses, the domain decodes host ones."""
    host = "host_phys = { membar1 = 0x3800000000, membar2 = 0xA0000000 }\n"
    text = machine_text([vmd_block(0x28C0, extra="vmlock = 2\n" + host)])
    w = boot_vmd(text)
    k, vmd = w.k, w.vmd
    assert not vmconfig(w) & VMCONFIG_MSI_REMAP
    assert vmd.msix_count == 32
    pdev = vmd_pdev(k)
    drive = k.pci.lspci(DOMAIN)[-1]
    _, lo = pci_read_config_dword(drive, 0x10)
    _, hi = pci_read_config_dword(drive, 0x14)
    bus_addr = hi << 32 | lo & ~0xF
    # the drive decodes a host-physical address past the shadow registers (+0x2010) ...
    assert 0xA0000000 + 0x2010 <= bus_addr < 0xA0000000 + (32 << 20)
    # ... and the kernel's resource is the same place seen from the guest CPU
    mb2 = pdev.resource[4].start
    assert drive.resource[0].start - mb2 == bus_addr - 0xA0000000
    # which works: the controller came up and its interrupts arrive
    queue = bound_queues(w)[-1]
    assert w.m.nvmes[-1].complete(queue.q)
    assert queue.consumed == 1


def test_the_shdw_capability_of_a_201d_guest_gives_the_offset_too():
    host = "host_phys = { membar1 = 0x3800000000, membar2 = 0xA0000000 }\n"
    text = machine_text([vmd_block(0x201D, extra=host)])
    w = boot_vmd(text)
    drive = w.k.pci.lspci(DOMAIN)[-1]
    _, lo = pci_read_config_dword(drive, 0x10)
    _, hi = pci_read_config_dword(drive, 0x14)
    assert 0xA0000000 + 0x2000 <= (hi << 32 | lo & ~0xF) < 0xA0000000 + (32 << 20)
    queue = bound_queues(w)[-1]
    assert w.m.nvmes[-1].complete(queue.q) and queue.consumed == 1


def test_client_parts_reserve_vector_0_and_apply_the_bios_pm_quirk():
    """0x9A0B: children start at vector 1 (the slow one), NVMe at 2..; the drive whose max
    snoop LTR firmware left at 0 gets 0x1003, the other keeps its own; ASPM everywhere."""
    text = machine_text([
        '[[vmd]]\ndevice = 0x9A0B\nslot = "0e.0"\nmsix_vectors = 4\nmembar2 = "32M"\n',
        "[[vmd.root_port]]\nslot = 0\nnvme = { queues = 4, ltr_max_snoop = 0 }\n",
        "[[vmd.root_port]]\nslot = 1\nnvme = { queues = 4, ltr_max_snoop = 0x1001 }\n"])
    w = boot_vmd(text, queues=3)
    k, vmd = w.k, w.vmd
    assert vmd.first_vec == 1
    for q in bound_queues(w):
        assert vmd_irq_vector(k, q.virq)[1] in (2, 3)
    drives = [d for d in k.pci.lspci(DOMAIN) if d.class_ == PCI_CLASS_STORAGE_EXPRESS]
    ltr = []
    for d in drives:
        pos = pci_find_ext_capability(d, PCI_EXT_CAP_ID_LTR)
        ltr.append(pci_read_config_dword(d, pos + 4)[1])
    assert ltr == [0x10031003, 0x10011001]
    assert "pci 10000:01:00.0: VMD: Default LTR value set by driver" in k.log.lines()
    assert "pci 10000:02:00.0: VMD: Default LTR value set by driver" not in k.log.lines()
    for d in k.pci.lspci(DOMAIN):  # both ends of every root-port link
        _, ctl = pcie_capability_read_word(d, PCI_EXP_LNKCTL)
        assert ctl & PCI_EXP_LNKCTL_ASPMC, pci_name(d)


def test_server_parts_leave_ltr_and_aspm_alone():
    w = boot_vmd(machine_text([vmd_block(0x201D, ports=1, nvme_extra=", ltr_max_snoop = 0")]))
    drive = w.k.pci.lspci(DOMAIN)[-1]
    pos = pci_find_ext_capability(drive, PCI_EXT_CAP_ID_LTR)
    assert pci_read_config_dword(drive, pos + 4)[1] == 0
    _, ctl = pcie_capability_read_word(drive, PCI_EXP_LNKCTL)
    assert not ctl & PCI_EXP_LNKCTL_ASPMC


def test_bridge_windows_firmware_left_are_closed_before_assignment():
    """vmd_domain_reset: after the scan, every root port's I/O, memory and prefetchable
    windows are closed through CFGBAR (what the bridges see, as a bus analyser would),
    then resource assignment programs them afresh."""
    from vmdsim.hw.machine import Machine
    from vmdsim.topology import parse

    m = Machine.build(parse(machine_text([vmd_block(0x201D, ports=2)])))
    port = m.vmds[0].hidden_bus.devices[PCI_DEVFN(1, 0)]
    assert isinstance(port, RootPort)
    port.cfg.hw_write(PCI_MEMORY_BASE, 4, 0xC230C220)  # what a BIOS might leave
    seen: list[tuple[int, int]] = []
    port.cfg.on_write(PCI_MEMORY_BASE, PCI_PREF_BASE_UPPER32 + 8,
                      lambda off, size, value: seen.append((off, value)))
    k = vmdsim.boot(machine=m, drivers=[]).k
    k.run_on(0, vmd_init, k)
    closing = [(PCI_MEMORY_BASE, 0x0000FFF0), (0x2C, 0), (PCI_PREF_MEMORY_BASE, 0x0000FFF0),
               (PCI_PREF_BASE_UPPER32, 0xFFFFFFFF)]
    i = seen.index(closing[0])
    assert seen[i:i + 4] == closing
    rp = k.pci.pci_get_domain_bus_and_slot(DOMAIN, 0, PCI_DEVFN(1, 0))
    _, mem = pci_read_config_dword(rp, PCI_MEMORY_BASE)
    assert mem == seen[-1][1] if seen[-1][0] == PCI_MEMORY_BASE else True
    assert mem != 0xC230C220


# -- config access ----------------------------------------------------------------------------
class _bus:
    def __init__(self, vmd, number):
        self.number = number
        self.sysdata = vmd.sysdata


def test_config_access_outside_cfgbar_is_efault_and_the_last_dword_is_reachable():
    w = boot_vmd(None, child=False)
    vmd = w.vmd
    nbus = 32  # 32 MiB of CFGBAR
    assert vmd_cfg_read(_bus(vmd, nbus), 0, 0, 4) == (-EFAULT, 0xFFFFFFFF)
    assert vmd_cfg_write(_bus(vmd, nbus), 0, 0, 4, 0) == -EFAULT
    assert vmd_cfg_read(_bus(vmd, nbus - 1), 0xFF, 0xFFC, 4) == (0, 0xFFFFFFFF)  # no device
    assert vmd_cfg_read(_bus(vmd, 0), 0, 0, 4) == (0, 0x20308086)


def test_config_accesses_are_serialised_and_writes_read_back():
    """Under the controlled scheduler, a config write is: lock, MMIO write, MMIO read of the
    same register, unlock — with interrupts off."""
    from vmdsim.kernel.controlled import ControlledScheduler
    from vmdsim.kernel.pci import pci_write_config_word

    w = boot_vmd(None, child=False)
    k = w.k
    rp = k.pci.lspci(DOMAIN)[0]
    s = ControlledScheduler(k.ncpus)
    k.install_scheduler(s)
    irqs_off = []

    def writer():
        pci_write_config_word(rp, 0x3C, 0x1FF)

    s.spawn(0, writer, name="writer")
    s.run()
    assert s.failure is None
    steps = [st.access for st in s.trace if st.thread == "writer" and st.access]
    kinds = [(a[0], a[2]) for a in steps]
    i = kinds.index(("raw_spinlock_t#" + str(w.vmd.cfg_lock._kid), "acquire"))
    assert [k_ for _, k_ in kinds[i:i + 4]] == ["acquire", "write", "read", "release"]
    write, read = steps[i + 1], steps[i + 2]
    assert write[0] == read[0] == "mmio" and write[1] == read[1]
    del irqs_off


# -- remove -----------------------------------------------------------------------------------
def test_remove_after_load_leaves_no_leak_irq_descriptor_or_domain():
    w = boot_vmd(ROOMY_DEFAULT, load=False)
    k = w.k
    before = snapshot(k)
    load_vmd(w)
    for nvme in w.m.nvmes:
        for q in range(9):
            assert nvme.complete(q)
    assert all(q.consumed == 1 for q in bound_queues(w))
    assert snapshot(k) != before
    k.run_on(0, vmd_exit, k)
    assert snapshot(k) == before
    assert not vmconfig(w) & VMCONFIG_MSI_REMAP


@pytest.mark.parametrize("device", [0xB60B, 0xB06F, 0xB07F])
def test_the_newest_client_ids_bind_as_client_parts(boot_toml, device):
    s = boot_toml(f"[machine]\ncpus = 2\n\n[[vmd]]\ndevice = {device:#x}\nmsix_vectors = 4\n\n"
                  "[[vmd.root_port]]\nslot = 0\nnvme = { queues = 1 }\n")
    (vmd,) = vmd_devices(s.k)
    assert vmd.first_vec == 1 and not s.unbound
