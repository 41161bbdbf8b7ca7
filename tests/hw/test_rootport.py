"""Root ports: slot registers, hot-plug, PME and AER messages, driven through ECAM and MMIO."""

from itertools import product

import pytest
from hwrig import MEM_EN, Board, x86_msi

from vmdsim.hw.aer import ERR_COR
from vmdsim.hw.nvme import NvmeController
from vmdsim.hw.regs import (
    PCI_BASE_ADDRESS_0,
    PCI_CAP_ID_EXP,
    PCI_CAP_ID_MSI,
    PCI_CAP_ID_PM,
    PCI_CLASS_REVISION,
    PCI_COMMAND,
    PCI_ERR_COR_BAD_TLP,
    PCI_ERR_COR_MASK,
    PCI_ERR_COR_STATUS,
    PCI_ERR_ROOT_CMD_COR_EN,
    PCI_ERR_ROOT_CMD_FATAL_EN,
    PCI_ERR_ROOT_CMD_NONFATAL_EN,
    PCI_ERR_ROOT_COMMAND,
    PCI_ERR_ROOT_COR_RCV,
    PCI_ERR_ROOT_ERR_SRC,
    PCI_ERR_ROOT_FATAL_RCV,
    PCI_ERR_ROOT_FIRST_FATAL,
    PCI_ERR_ROOT_MULTI_COR_RCV,
    PCI_ERR_ROOT_MULTI_UNCOR_RCV,
    PCI_ERR_ROOT_NONFATAL_RCV,
    PCI_ERR_ROOT_STATUS,
    PCI_ERR_ROOT_UNCOR_RCV,
    PCI_ERR_UNC_COMP_TIME,
    PCI_ERR_UNC_MALF_TLP,
    PCI_ERR_UNCOR_STATUS,
    PCI_EXP_DEVCTL,
    PCI_EXP_DEVCTL_CERE,
    PCI_EXP_DEVCTL_FERE,
    PCI_EXP_DEVCTL_NFERE,
    PCI_EXP_DEVSTA,
    PCI_EXP_FLAGS,
    PCI_EXP_FLAGS_SLOT,
    PCI_EXP_LNKCAP,
    PCI_EXP_LNKCAP_DLLLARC,
    PCI_EXP_LNKSTA,
    PCI_EXP_LNKSTA_DLLLA,
    PCI_EXP_RTCTL,
    PCI_EXP_RTCTL_PMEIE,
    PCI_EXP_RTSTA,
    PCI_EXP_RTSTA_PENDING,
    PCI_EXP_RTSTA_PME,
    PCI_EXP_SLTCAP,
    PCI_EXP_SLTCAP_ABP,
    PCI_EXP_SLTCAP_AIP,
    PCI_EXP_SLTCAP_HPC,
    PCI_EXP_SLTCAP_HPS,
    PCI_EXP_SLTCAP_PIP,
    PCI_EXP_SLTCTL,
    PCI_EXP_SLTCTL_ABPE,
    PCI_EXP_SLTCTL_ATTN_IND_BLINK,
    PCI_EXP_SLTCTL_CCIE,
    PCI_EXP_SLTCTL_DLLSCE,
    PCI_EXP_SLTCTL_HPIE,
    PCI_EXP_SLTCTL_PDCE,
    PCI_EXP_SLTCTL_PWR_IND_ON,
    PCI_EXP_SLTSTA,
    PCI_EXP_SLTSTA_ABP,
    PCI_EXP_SLTSTA_CC,
    PCI_EXP_SLTSTA_DLLSC,
    PCI_EXP_SLTSTA_PDC,
    PCI_EXP_SLTSTA_PDS,
    PCI_EXP_TYPE_ROOT_PORT,
    PCI_EXT_CAP_ID_ERR,
    PCI_HEADER_TYPE,
    PCI_PM_CTRL,
    PCI_PM_CTRL_PME_ENABLE,
    PCI_PM_CTRL_PME_STATUS,
    PCI_SEC_STATUS,
    PCI_STATUS_SIG_SYSTEM_ERROR,
)
from vmdsim.hw.rootport import SLTCTL_HOTPLUG_WMASK

TOPOLOGY = """
[[root_port]]
slot = "1c.0"
slot_number = 5
nvme = { queues = 2 }

[[root_port]]
slot = "1d.0"
slot_number = 6
irq = "msix"

[[root_port]]
slot = "1e.0"
slot_number = 7
hotplug = false
"""
WINDOW = 0xD0000000
RP_MSIX_BAR = 0xD8000000
PORT_VECTOR = 0x50  # APIC vector the ports' MSI is programmed with, on CPU 2
HP_EVENTS = PCI_EXP_SLTSTA_PDC | PCI_EXP_SLTSTA_DLLSC


class Port:
    """One root port seen through ECAM, with its PCIe capability offset."""

    def __init__(self, b, slot, bus):
        self.b = b
        self.cfg, self.drive = b.bring_up_primary_port(slot, bus, WINDOW + (bus << 20))
        self.pos = self.cfg.cap(PCI_CAP_ID_EXP)
        self.hw = b.m.by_name[f"rp{slot - 0x1C}"]

    def read(self, reg, size=2):
        return self.cfg.read(self.pos + reg, size)

    def write(self, reg, size, value):
        self.cfg.write(self.pos + reg, size, value)

    def msi_on(self):
        self.b.msi_enable(self.cfg, x86_msi(2), PORT_VECTOR)

    def clear_slot_events(self):
        self.write(PCI_EXP_SLTSTA, 2, 0xFFFF)


@pytest.fixture
def b():
    return Board.from_toml(TOPOLOGY)


@pytest.fixture
def rp(b):
    return Port(b, 0x1C, 1)  # populated at power-on, MSI


@pytest.fixture
def empty(b):
    return Port(b, 0x1D, 2)  # empty, MSI-X


# -- identity and slot capabilities -------------------------------------------------
def test_type1_root_port_with_a_hot_plug_slot(rp):
    assert rp.cfg.read(PCI_HEADER_TYPE, 1) == 1
    assert rp.cfg.read(PCI_CLASS_REVISION) >> 8 == 0x060400
    flags = rp.read(PCI_EXP_FLAGS)
    assert (flags >> 4) & 0xF == PCI_EXP_TYPE_ROOT_PORT and flags & PCI_EXP_FLAGS_SLOT
    sltcap = rp.read(PCI_EXP_SLTCAP, 4)
    for bit in (PCI_EXP_SLTCAP_ABP, PCI_EXP_SLTCAP_AIP, PCI_EXP_SLTCAP_PIP, PCI_EXP_SLTCAP_HPS,
                PCI_EXP_SLTCAP_HPC):
        assert sltcap & bit
    assert sltcap >> 19 == 5  # physical slot number
    assert rp.read(PCI_EXP_LNKCAP, 4) & PCI_EXP_LNKCAP_DLLLARC
    assert rp.cfg.ext_cap(PCI_EXT_CAP_ID_ERR)


def test_presence_and_link_follow_the_card_from_power_on(rp, empty):
    assert rp.read(PCI_EXP_SLTSTA) == PCI_EXP_SLTSTA_PDS  # no change events latched
    assert rp.read(PCI_EXP_LNKSTA) & PCI_EXP_LNKSTA_DLLLA
    assert rp.drive.read(0) == 0x0A548086
    assert empty.read(PCI_EXP_SLTSTA) == 0
    assert not empty.read(PCI_EXP_LNKSTA) & PCI_EXP_LNKSTA_DLLLA
    assert empty.drive.read(0) == 0xFFFFFFFF  # nothing answers below an empty slot


def test_slot_without_hot_plug_has_read_only_slot_control(b):
    port = Port(b, 0x1E, 3)
    assert not port.read(PCI_EXP_SLTCAP, 4) & PCI_EXP_SLTCAP_HPC
    assert not port.read(PCI_EXP_LNKCAP, 4) & PCI_EXP_LNKCAP_DLLLARC
    port.write(PCI_EXP_SLTCTL, 2, 0xFFFF)
    assert port.read(PCI_EXP_SLTCTL) == 0 and port.read(PCI_EXP_SLTSTA) == 0


# -- Slot Control and Slot Status semantics ------------------------------------------
def test_slot_control_is_rw_on_implemented_bits_and_every_write_completes_a_command(rp):
    rp.write(PCI_EXP_SLTCTL, 2, 0xFFFF)
    assert rp.read(PCI_EXP_SLTCTL) == SLTCTL_HOTPLUG_WMASK
    assert rp.read(PCI_EXP_SLTSTA) & PCI_EXP_SLTSTA_CC
    rp.write(PCI_EXP_SLTCTL, 2, 0)
    assert rp.read(PCI_EXP_SLTCTL) == 0


def test_slot_status_event_bits_are_rw1c_and_presence_is_read_only(empty):
    empty.hw.populate(NvmeController("new"))
    assert empty.read(PCI_EXP_SLTSTA) == PCI_EXP_SLTSTA_PDS | HP_EVENTS
    empty.write(PCI_EXP_SLTSTA, 2, 0)  # writing zeros clears nothing
    empty.write(PCI_EXP_SLTSTA, 2, PCI_EXP_SLTSTA_PDS)  # read-only
    assert empty.read(PCI_EXP_SLTSTA) == PCI_EXP_SLTSTA_PDS | HP_EVENTS
    empty.write(PCI_EXP_SLTSTA, 2, PCI_EXP_SLTSTA_PDC)
    assert empty.read(PCI_EXP_SLTSTA) == PCI_EXP_SLTSTA_PDS | PCI_EXP_SLTSTA_DLLSC


def test_indicators_follow_slot_control(rp):
    assert (rp.hw.attention_indicator, rp.hw.power_indicator) == ("off", "off")
    rp.write(PCI_EXP_SLTCTL, 2, PCI_EXP_SLTCTL_ATTN_IND_BLINK | PCI_EXP_SLTCTL_PWR_IND_ON)
    assert (rp.hw.attention_indicator, rp.hw.power_indicator) == ("blink", "on")


# -- hot-plug interrupts -----------------------------------------------------------------
@pytest.mark.parametrize("hpie, pdce, msi", list(product([False, True], repeat=3)))
def test_presence_change_raises_msi_only_with_hpie_pdce_and_msi_enabled(b, rp, hpie, pdce, msi):
    if msi:
        rp.msi_on()
    rp.write(PCI_EXP_SLTCTL, 2, (PCI_EXP_SLTCTL_HPIE if hpie else 0)
             | (PCI_EXP_SLTCTL_PDCE if pdce else 0))
    rp.clear_slot_events()  # the Command Completed of that write
    b.irqs.clear()
    rp.hw.unpopulate()
    assert rp.read(PCI_EXP_SLTSTA) & PCI_EXP_SLTSTA_PDC
    assert b.irqs == ([(2, PORT_VECTOR)] if hpie and pdce and msi else [])
    if hpie and pdce and not msi:
        assert rp.hw.intx_dropped == 1


def test_an_event_while_another_is_uncleared_raises_nothing_new(b, rp):
    rp.msi_on()
    rp.write(PCI_EXP_SLTCTL, 2, PCI_EXP_SLTCTL_HPIE | PCI_EXP_SLTCTL_PDCE)
    rp.clear_slot_events()
    card = rp.hw.unpopulate()
    rp.hw.populate(card)  # PDC still set from the removal
    assert b.irqs == [(2, PORT_VECTOR)]
    rp.clear_slot_events()
    rp.hw.unpopulate()
    assert b.irqs == [(2, PORT_VECTOR)] * 2


def test_enabling_with_an_event_pending_raises_one_message(b, rp):
    rp.msi_on()
    rp.hw.unpopulate()
    assert b.irqs == []
    rp.write(PCI_EXP_SLTCTL, 2, PCI_EXP_SLTCTL_HPIE | PCI_EXP_SLTCTL_PDCE)
    assert b.irqs == [(2, PORT_VECTOR)]


def test_link_change_attention_button_and_command_completed_have_their_own_enables(b, rp):
    rp.msi_on()
    rp.write(PCI_EXP_SLTCTL, 2, PCI_EXP_SLTCTL_HPIE | PCI_EXP_SLTCTL_DLLSCE)
    rp.clear_slot_events()
    rp.hw.press_attention_button()  # ABPE off
    assert b.irqs == []
    rp.hw.unpopulate()
    assert b.irqs == [(2, PORT_VECTOR)] and rp.read(PCI_EXP_SLTSTA) & PCI_EXP_SLTSTA_DLLSC
    rp.clear_slot_events()
    rp.write(PCI_EXP_SLTCTL, 2, PCI_EXP_SLTCTL_HPIE | PCI_EXP_SLTCTL_ABPE)
    rp.clear_slot_events()
    rp.hw.press_attention_button()
    assert rp.read(PCI_EXP_SLTSTA) & PCI_EXP_SLTSTA_ABP and len(b.irqs) == 2
    rp.clear_slot_events()
    rp.write(PCI_EXP_SLTCTL, 2, PCI_EXP_SLTCTL_HPIE | PCI_EXP_SLTCTL_CCIE)  # completes at once
    assert rp.read(PCI_EXP_SLTSTA) == PCI_EXP_SLTSTA_CC and len(b.irqs) == 3


def test_populate_attaches_a_fresh_card_and_unpopulate_detaches_it(b, rp):
    assert rp.drive.bar(0) == WINDOW + (1 << 20)
    card = rp.hw.unpopulate()
    assert rp.drive.read(0) == 0xFFFFFFFF
    assert not rp.read(PCI_EXP_SLTSTA) & PCI_EXP_SLTSTA_PDS
    assert not rp.read(PCI_EXP_LNKSTA) & PCI_EXP_LNKSTA_DLLLA
    with pytest.raises(ValueError, match="slot 5 is empty"):
        rp.hw.unpopulate()
    rp.hw.populate(card)
    assert rp.drive.read(0) == 0x0A548086
    assert rp.drive.read(PCI_BASE_ADDRESS_0) == 0x4  # powered up afresh: unassigned
    with pytest.raises(ValueError, match="already holds rp0.nvme"):
        rp.hw.populate(NvmeController("other"))


def test_reset_keeps_presence_but_restores_slot_control(rp):
    rp.write(PCI_EXP_SLTCTL, 2, PCI_EXP_SLTCTL_HPIE)
    rp.hw.reset()  # a conventional reset of the port (hardware act)
    assert rp.read(PCI_EXP_SLTCTL) == 0x03C0  # indicators off, nothing enabled
    assert rp.read(PCI_EXP_SLTSTA) == PCI_EXP_SLTSTA_PDS
    assert rp.read(PCI_EXP_LNKSTA) & PCI_EXP_LNKSTA_DLLLA


# -- PME -----------------------------------------------------------------------------------
def pme_ready(rp):
    pm = rp.drive.cap(PCI_CAP_ID_PM)
    rp.drive.write(pm + PCI_PM_CTRL, 2, PCI_PM_CTRL_PME_ENABLE)
    rp.msi_on()
    rp.write(PCI_EXP_RTCTL, 2, PCI_EXP_RTCTL_PMEIE)
    return pm


def test_pme_from_the_drive_latches_its_requester_and_raises_the_port_msi(b, rp):
    pm = pme_ready(rp)
    nvme = b.m.nvmes[0]
    assert nvme.signal_pme()
    assert rp.drive.read(pm + PCI_PM_CTRL, 2) & PCI_PM_CTRL_PME_STATUS
    assert rp.read(PCI_EXP_RTSTA, 4) == PCI_EXP_RTSTA_PME | 0x0100  # 01:00.0
    assert b.irqs == [(2, PORT_VECTOR)]


def test_a_second_pme_waits_as_pending_until_status_is_cleared(b, rp):
    pme_ready(rp)
    rp.hw.receive_pme(0x0100)
    rp.hw.receive_pme(0x0200)
    assert rp.read(PCI_EXP_RTSTA, 4) == PCI_EXP_RTSTA_PME | PCI_EXP_RTSTA_PENDING | 0x0100
    assert len(b.irqs) == 1
    rp.write(PCI_EXP_RTSTA, 4, PCI_EXP_RTSTA_PME)
    assert rp.read(PCI_EXP_RTSTA, 4) == PCI_EXP_RTSTA_PME | 0x0200
    assert len(b.irqs) == 2
    rp.write(PCI_EXP_RTSTA, 4, PCI_EXP_RTSTA_PME)
    assert rp.read(PCI_EXP_RTSTA, 4) == 0x0200  # requester ID stays, status clear
    assert len(b.irqs) == 2


def test_pme_needs_pme_en_in_the_drive_and_pmeie_in_the_port(b, rp):
    rp.msi_on()
    assert not b.m.nvmes[0].signal_pme()  # PME_En clear: no message
    assert rp.read(PCI_EXP_RTSTA, 4) == 0
    rp.hw.receive_pme(0x0100)  # PMEIE clear: logged, no interrupt
    assert rp.read(PCI_EXP_RTSTA, 4) & PCI_EXP_RTSTA_PME and b.irqs == []


# -- AER -----------------------------------------------------------------------------------
def aer_ready(rp, cmd=PCI_ERR_ROOT_CMD_COR_EN | PCI_ERR_ROOT_CMD_NONFATAL_EN
              | PCI_ERR_ROOT_CMD_FATAL_EN):
    dpos = rp.drive.cap(PCI_CAP_ID_EXP)
    rp.drive.write(dpos + PCI_EXP_DEVCTL, 2, rp.drive.read(dpos + PCI_EXP_DEVCTL, 2)
                   | PCI_EXP_DEVCTL_CERE | PCI_EXP_DEVCTL_NFERE | PCI_EXP_DEVCTL_FERE)
    rp.msi_on()
    aer = rp.cfg.ext_cap(PCI_EXT_CAP_ID_ERR)
    rp.cfg.write(aer + PCI_ERR_ROOT_COMMAND, 4, cmd)
    return aer, dpos


def test_correctable_errors_first_and_multiple(b, rp):
    aer, dpos = aer_ready(rp)
    nvme = b.m.nvmes[0]
    assert nvme.report_error(PCI_ERR_COR_BAD_TLP, correctable=True)
    assert rp.cfg.read(aer + PCI_ERR_ROOT_STATUS) == PCI_ERR_ROOT_COR_RCV
    assert rp.cfg.read(aer + PCI_ERR_ROOT_ERR_SRC) == 0x0100
    assert b.irqs == [(2, PORT_VECTOR)]
    daer = rp.drive.ext_cap(PCI_EXT_CAP_ID_ERR)
    assert rp.drive.read(daer + PCI_ERR_COR_STATUS) == PCI_ERR_COR_BAD_TLP
    assert rp.drive.read(dpos + PCI_EXP_DEVSTA, 2) & 0x1  # Correctable Error Detected
    nvme.report_error(PCI_ERR_COR_BAD_TLP, correctable=True)
    assert rp.cfg.read(aer + PCI_ERR_ROOT_STATUS) == (PCI_ERR_ROOT_COR_RCV
                                                      | PCI_ERR_ROOT_MULTI_COR_RCV)
    assert len(b.irqs) == 1  # the line was already up
    rp.cfg.write(aer + PCI_ERR_ROOT_STATUS, 4, 0x7F)
    nvme.report_error(PCI_ERR_COR_BAD_TLP, correctable=True)
    assert len(b.irqs) == 2


def test_uncorrectable_errors_set_severity_bits_and_the_source(b, rp):
    aer, _ = aer_ready(rp)
    nvme = b.m.nvmes[0]
    nvme.report_error(PCI_ERR_UNC_COMP_TIME, correctable=False)  # non-fatal by default
    nvme.report_error(PCI_ERR_UNC_MALF_TLP, correctable=False)  # fatal by default
    assert rp.cfg.read(aer + PCI_ERR_ROOT_STATUS) & 0x7F == (
        PCI_ERR_ROOT_UNCOR_RCV | PCI_ERR_ROOT_MULTI_UNCOR_RCV | PCI_ERR_ROOT_NONFATAL_RCV
        | PCI_ERR_ROOT_FATAL_RCV)  # not First Fatal: the first was non-fatal
    assert rp.cfg.read(aer + PCI_ERR_ROOT_ERR_SRC) == 0x0100 << 16
    assert rp.cfg.read(PCI_SEC_STATUS, 2) & PCI_STATUS_SIG_SYSTEM_ERROR  # Received System Error
    daer = rp.drive.ext_cap(PCI_EXT_CAP_ID_ERR)
    assert rp.drive.read(daer + PCI_ERR_UNCOR_STATUS) == (PCI_ERR_UNC_COMP_TIME
                                                         | PCI_ERR_UNC_MALF_TLP)
    assert b.irqs == [(2, PORT_VECTOR)]


def test_first_fatal_and_per_class_enables(b, rp):
    aer, _ = aer_ready(rp, cmd=PCI_ERR_ROOT_CMD_NONFATAL_EN)
    rp.hw.receive_error_message("ERR_FATAL", 0x0300)
    assert rp.cfg.read(aer + PCI_ERR_ROOT_STATUS) & 0x7F == (
        PCI_ERR_ROOT_UNCOR_RCV | PCI_ERR_ROOT_FIRST_FATAL | PCI_ERR_ROOT_FATAL_RCV)
    assert b.irqs == []  # fatal reporting not enabled in Root Error Command
    rp.cfg.write(aer + PCI_ERR_ROOT_COMMAND, 4, PCI_ERR_ROOT_CMD_FATAL_EN)
    assert b.irqs == [(2, PORT_VECTOR)]  # enabling with the bit set is a rising edge


def test_masked_or_unreported_errors_send_no_message(b, rp):
    aer, dpos = aer_ready(rp)
    daer = rp.drive.ext_cap(PCI_EXT_CAP_ID_ERR)
    rp.drive.write(daer + PCI_ERR_COR_MASK, 4, PCI_ERR_COR_BAD_TLP)
    assert not b.m.nvmes[0].report_error(PCI_ERR_COR_BAD_TLP, correctable=True)
    assert rp.drive.read(daer + PCI_ERR_COR_STATUS) == 0
    rp.drive.write(daer + PCI_ERR_COR_MASK, 4, 0)
    rp.drive.write(dpos + PCI_EXP_DEVCTL, 2, 0)  # reporting disabled
    assert not b.m.nvmes[0].report_error(PCI_ERR_COR_BAD_TLP, correctable=True)
    assert rp.drive.read(daer + PCI_ERR_COR_STATUS) == PCI_ERR_COR_BAD_TLP  # logged locally
    assert rp.cfg.read(aer + PCI_ERR_ROOT_STATUS) & 0x7F == 0 and b.irqs == []


def test_unknown_error_message_is_refused(rp):
    with pytest.raises(ValueError, match="not an error message"):
        rp.hw.receive_error_message("ERR_SOMETHING", 0)


# -- MSI-X root port --------------------------------------------------------------------
def test_msix_port_sends_hot_plug_on_entry_0_and_aer_on_entry_1(b, empty):
    assert not empty.cfg.cap(PCI_CAP_ID_MSI)
    assert (empty.read(PCI_EXP_FLAGS) >> 9) & 0x1F == 0  # hot-plug/PME message number
    aer = empty.cfg.ext_cap(PCI_EXT_CAP_ID_ERR)
    assert empty.cfg.read(aer + PCI_ERR_ROOT_STATUS) >> 27 == 1  # AER message number
    empty.cfg.set_bar64(0, RP_MSIX_BAR)
    empty.cfg.write(PCI_COMMAND, 2, MEM_EN)
    b.msix_entry(empty.cfg, 0, x86_msi(0), 0x60)
    b.msix_entry(empty.cfg, 1, x86_msi(3), 0x61, masked=True)
    b.msix_enable(empty.cfg)
    empty.write(PCI_EXP_SLTCTL, 2, PCI_EXP_SLTCTL_HPIE | PCI_EXP_SLTCTL_PDCE)
    empty.hw.populate(NvmeController("hot"))
    assert b.irqs == [(0, 0x60)]
    empty.cfg.write(aer + PCI_ERR_ROOT_COMMAND, 4, PCI_ERR_ROOT_CMD_COR_EN)
    empty.hw.receive_error_message(ERR_COR, 0x0200)
    assert b.irqs == [(0, 0x60)]
    assert b.read(RP_MSIX_BAR + 0x1000, 8) == 0b10  # entry 1 pending in the PBA
    b.write(RP_MSIX_BAR + 16 + 12, 4, 0)  # unmask entry 1
    assert b.irqs == [(0, 0x60), (3, 0x61)]
