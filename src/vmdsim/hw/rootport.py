"""A PCI Express root port: a bridge with a hot-plug slot, AER and PME.

What the model does as the PCIe base spec (7.5.3, 6.7, 6.2, 6.1.6) has it:

- A type-1 header (:class:`~vmdsim.hw.bridge.PciBridge`) with a PCI Express
  capability of type root port, Slot Implemented set, and the slot's
  registers:

  * Slot Capabilities: physical slot number; on a hot-plug slot also the
    attention button, attention and power indicators, Hot-Plug Surprise and
    Hot-Plug Capable; Link Capabilities then report Data Link Layer Link
    Active Reporting.
  * Slot Control (RW): the event enables (ABPE, PDCE, CCIE, DLLSCE), HPIE
    and the two indicator controls. Every write is a hot-plug command that
    completes at once: Command Completed is set after each write.
  * Slot Status: the event bits (Attention Button Pressed, Presence Detect
    Changed, Command Completed, Data Link Layer State Changed) are RW1C;
    Presence Detect State is read-only and follows the card.

- Hot-plug interrupt: a message is sent each time "HPIE set, and some event
  bit set whose enable is set" goes from false to true (6.7.3.4), so an
  event that finds an older one still uncleared raises nothing new.
- PME: a PM_PME message from below latches its requester ID and PME Status
  in Root Status; one arriving while PME Status is set waits (PME Pending)
  until software clears PME Status. A message is sent when "PME Interrupt
  Enable and PME Status" goes from false to true.
- AER: the Advanced Error Reporting capability with the root registers. An
  ERR_COR/ERR_NONFATAL/ERR_FATAL message from below sets Root Error Status
  (first or multiple, first fatal) and the Error Source Identification; a
  message is sent when "an error-received bit whose Root Error Command enable
  is set" goes from false to true. ERR_NONFATAL/ERR_FATAL also set the
  secondary status Received System Error bit.
- Interrupts are memory writes through the port's own MSI (one message, as
  Intel root ports have) or, with ``irq="msix"``, MSI-X with its table and
  PBA in BAR0. With neither enabled the port would assert INTx, which the
  model does not signal: it counts ``intx_dropped``. Hot-plug and PME use
  the vector in the PCIe capability's Interrupt Message Number (0); AER
  uses the one in Root Error Status bits 31:27 (MSI-X entry 1 when there
  are two or more, else 0).

The hardware side (a person at the machine): :meth:`populate` puts a card in
the slot (presence and link come up), :meth:`unpopulate` pulls it out with
no warning (surprise removal), :meth:`press_attention_button` presses the
button; :meth:`receive_pme` and :meth:`receive_error_message` are messages
arriving from below.

Simplifications: no power controller, MRL sensor or electromechanical
interlock; link training is instant; no Link Bandwidth Notification or DPC;
a secondary bus reset raises no link events; the port's own detected errors
and PCI-compatible system errors (Root Control SE*E) are counted, not raised.
"""

from __future__ import annotations

from vmdsim.hw.aer import ERR_COR, ERR_FATAL, ERR_NONFATAL, AerCapability
from vmdsim.hw.bridge import PciBridge
from vmdsim.hw.bus import MasterAbortLog
from vmdsim.hw.function import Bar, PciFunction
from vmdsim.hw.msi import MsiCapability
from vmdsim.hw.msix import MsixCapability
from vmdsim.hw.observe import DEVICE_WRITE, device_spans
from vmdsim.hw.regs import (
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
    PCI_EXP_FLAGS,
    PCI_EXP_FLAGS_SLOT,
    PCI_EXP_LNKCAP,
    PCI_EXP_LNKCAP_DLLLARC,
    PCI_EXP_LNKSTA,
    PCI_EXP_LNKSTA_DLLLA,
    PCI_EXP_RTCTL,
    PCI_EXP_RTCTL_PMEIE,
    PCI_EXP_RTCTL_SECEE,
    PCI_EXP_RTCTL_SEFEE,
    PCI_EXP_RTCTL_SENFEE,
    PCI_EXP_RTSTA,
    PCI_EXP_RTSTA_PENDING,
    PCI_EXP_RTSTA_PME,
    PCI_EXP_SLTCAP,
    PCI_EXP_SLTCAP_ABP,
    PCI_EXP_SLTCAP_AIP,
    PCI_EXP_SLTCAP_HPC,
    PCI_EXP_SLTCAP_HPS,
    PCI_EXP_SLTCAP_PIP,
    PCI_EXP_SLTCAP_PSN_SHIFT,
    PCI_EXP_SLTCTL,
    PCI_EXP_SLTCTL_ABPE,
    PCI_EXP_SLTCTL_AIC,
    PCI_EXP_SLTCTL_ATTN_IND_OFF,
    PCI_EXP_SLTCTL_ATTN_IND_SHIFT,
    PCI_EXP_SLTCTL_CCIE,
    PCI_EXP_SLTCTL_DLLSCE,
    PCI_EXP_SLTCTL_HPIE,
    PCI_EXP_SLTCTL_PDCE,
    PCI_EXP_SLTCTL_PIC,
    PCI_EXP_SLTCTL_PWR_IND_OFF,
    PCI_EXP_SLTSTA,
    PCI_EXP_SLTSTA_ABP,
    PCI_EXP_SLTSTA_CC,
    PCI_EXP_SLTSTA_DLLSC,
    PCI_EXP_SLTSTA_MRLSC,
    PCI_EXP_SLTSTA_PDC,
    PCI_EXP_SLTSTA_PDS,
    PCI_EXP_SLTSTA_PFD,
    PCI_EXP_TYPE_ROOT_PORT,
    PCI_SEC_STATUS,
    PCI_STATUS_SIG_SYSTEM_ERROR,
    PCI_VENDOR_ID_INTEL,
)

PCI_DEVICE_ID_INTEL_SKX_PCIE_RP_A = 0x2030  # Sky Lake-E PCI Express Root Port A
ROOT_PORT_MSIX_BAR_SIZE = 0x2000  # table at 0, PBA at 0x1000
ROOT_PORT_MAX_MSIX = 32  # Interrupt Message Numbers are 5 bits

SLTSTA_EVENTS = (PCI_EXP_SLTSTA_ABP | PCI_EXP_SLTSTA_PFD | PCI_EXP_SLTSTA_MRLSC
                 | PCI_EXP_SLTSTA_PDC | PCI_EXP_SLTSTA_CC | PCI_EXP_SLTSTA_DLLSC)
SLTCTL_HOTPLUG_WMASK = (PCI_EXP_SLTCTL_ABPE | PCI_EXP_SLTCTL_PDCE | PCI_EXP_SLTCTL_CCIE
                        | PCI_EXP_SLTCTL_HPIE | PCI_EXP_SLTCTL_AIC | PCI_EXP_SLTCTL_PIC
                        | PCI_EXP_SLTCTL_DLLSCE)
RTCTL_WMASK = PCI_EXP_RTCTL_SECEE | PCI_EXP_RTCTL_SENFEE | PCI_EXP_RTCTL_SEFEE | PCI_EXP_RTCTL_PMEIE
PCI_EXP_RTSTA_PME_RQID = 0x0000FFFF  # PME Requester ID, bits 15:0
INDICATOR = {1: "on", 2: "blink", 3: "off", 0: "reserved"}


class RootPort(PciBridge):
    """One root port and its slot; ``hotplug`` makes the slot hot-plug capable."""

    def __init__(
        self,
        name: str,
        *,
        aborts: MasterAbortLog,
        vendor: int = PCI_VENDOR_ID_INTEL,
        device_id: int = PCI_DEVICE_ID_INTEL_SKX_PCIE_RP_A,
        slot_number: int = 0,
        hotplug: bool = True,
        irq: str = "msi",
        msix_vectors: int = 2,
        revision: int = 0,
    ) -> None:
        if irq not in ("msi", "msix"):
            raise ValueError(f"{name}: irq must be 'msi' or 'msix', not {irq!r}")
        if not 0 <= slot_number <= 0x1FFF:
            raise ValueError(f"{name}: physical slot number {slot_number} does not fit "
                             "Slot Capabilities bits 31:19 (0..8191)")
        if irq == "msix" and not 1 <= msix_vectors <= ROOT_PORT_MAX_MSIX:
            raise ValueError(f"{name}: {msix_vectors} MSI-X vectors outside "
                             f"1..{ROOT_PORT_MAX_MSIX} (Interrupt Message Numbers are 5 bits)")
        bars = (Bar(0, ROOT_PORT_MSIX_BAR_SIZE),) if irq == "msix" else ()
        super().__init__(name, vendor, device_id, aborts=aborts, bars=bars, revision=revision)
        self.hotplug = hotplug
        self.hp_vector = 0  # PCIe capability Interrupt Message Number: hot-plug and PME
        self.aer_vector = 1 if irq == "msix" and msix_vectors >= 2 else 0
        self.card: PciFunction | None = None
        self.intx_dropped = 0  # interrupts with neither MSI nor MSI-X enabled
        self.system_errors = 0  # Root Control system-error reports (not modelled further)
        self._pme_queue: list[int] = []
        self._hp_asserted = self._pme_asserted = self._aer_asserted = False
        self._build_pcie_cap(slot_number)
        if irq == "msix":
            self.msix = MsixCapability(self, msix_vectors, 0, 0, 0, 0x1000)
        else:
            self.msi = MsiCapability(self, log2_vectors=0)
        self.aer = AerCapability(self, root=True, irq_vector=self.aer_vector)
        a = self.aer.pos
        self.cfg.on_write(a + PCI_ERR_ROOT_COMMAND, a + PCI_ERR_ROOT_STATUS + 4,
                          self._update_aer_irq)
        self.finalize()

    def _build_pcie_cap(self, slot_number: int) -> None:
        cfg = self.cfg
        pos = self.add_pcie_capability(PCI_EXP_TYPE_ROOT_PORT)
        cfg.init(pos + PCI_EXP_FLAGS, 2, cfg.hw_read(pos + PCI_EXP_FLAGS, 2) | PCI_EXP_FLAGS_SLOT
                 | (self.hp_vector << 9))
        sltcap = slot_number << PCI_EXP_SLTCAP_PSN_SHIFT
        sltctl, wmask = 0, 0
        if self.hotplug:
            cfg.init(pos + PCI_EXP_LNKCAP, 4,
                     cfg.hw_read(pos + PCI_EXP_LNKCAP, 4) | PCI_EXP_LNKCAP_DLLLARC)
            sltcap |= (PCI_EXP_SLTCAP_ABP | PCI_EXP_SLTCAP_AIP | PCI_EXP_SLTCAP_PIP
                       | PCI_EXP_SLTCAP_HPS | PCI_EXP_SLTCAP_HPC)
            sltctl = PCI_EXP_SLTCTL_ATTN_IND_OFF | PCI_EXP_SLTCTL_PWR_IND_OFF  # LEDs off
            wmask = SLTCTL_HOTPLUG_WMASK
        cfg.init(pos + PCI_EXP_SLTCAP, 4, sltcap)
        cfg.init(pos + PCI_EXP_SLTCTL, 2, sltctl, wmask=wmask)
        cfg.init(pos + PCI_EXP_SLTSTA, 2, 0, w1c=SLTSTA_EVENTS)
        cfg.init(pos + PCI_EXP_RTCTL, 2, 0, wmask=RTCTL_WMASK)
        cfg.init(pos + PCI_EXP_RTSTA, 4, 0, w1c=PCI_EXP_RTSTA_PME)
        cfg.on_write(pos + PCI_EXP_SLTCTL, pos + PCI_EXP_SLTCTL + 2, self._slot_control_written)
        cfg.on_write(pos + PCI_EXP_SLTSTA, pos + PCI_EXP_SLTSTA + 2, self._update_hp_irq)
        cfg.on_write(pos + PCI_EXP_RTCTL, pos + PCI_EXP_RTCTL + 2, self._update_pme_irq)
        cfg.on_write(pos + PCI_EXP_RTSTA, pos + PCI_EXP_RTSTA + 4, self._root_status_written)

    # -- what a person sees -------------------------------------------------------
    @property
    def slot_number(self) -> int:
        return self.cfg.hw_read(self.pcie_cap + PCI_EXP_SLTCAP, 4) >> PCI_EXP_SLTCAP_PSN_SHIFT

    @property
    def attention_indicator(self) -> str | None:
        """"on", "blink" or "off" as Slot Control drives the LED; None without one."""
        return self._indicator(PCI_EXP_SLTCAP_AIP, PCI_EXP_SLTCTL_ATTN_IND_SHIFT)

    @property
    def power_indicator(self) -> str | None:
        return self._indicator(PCI_EXP_SLTCAP_PIP, PCI_EXP_SLTCTL_ATTN_IND_SHIFT + 2)

    def _indicator(self, cap: int, shift: int) -> str | None:
        if not self.cfg.hw_read(self.pcie_cap + PCI_EXP_SLTCAP, 4) & cap:
            return None
        return INDICATOR[(self.cfg.hw_read(self.pcie_cap + PCI_EXP_SLTCTL, 2) >> shift) & 3]

    # -- the hardware side: a person at the slot ----------------------------------
    def populate(self, card: PciFunction, *, at_power_on: bool = False) -> None:
        """Insert ``card``: it powers up, presence is detected and the link trains.

        A hot insertion latches Presence Detect Changed and Data Link Layer State
        Changed and may raise the hot-plug interrupt; ``at_power_on`` is a card
        that was already in the slot when the machine was switched on: no events.
        """
        if self.card is not None:
            raise ValueError(f"{self.name}: slot {self.slot_number} already holds "
                             f"{self.card.name}")
        if card.bus is not None:
            raise ValueError(f"{card.name} is already plugged in at {card.bdf}")
        card.reset()  # power applied: the card starts from its power-on state
        self.secondary.attach(card, 0)
        self.card = card
        device_spans(card.register_spans(), DEVICE_WRITE)  # its registers appear
        self._presence(True, event=not at_power_on)

    def unpopulate(self) -> PciFunction:
        """Pull the card out with no warning (surprise removal); returns it."""
        card = self.card
        if card is None:
            raise ValueError(f"{self.name}: slot {self.slot_number} is empty")
        device_spans(card.register_spans(), DEVICE_WRITE)  # its registers vanish
        self.secondary.detach(card)
        self.card = None
        self._presence(False, event=True)
        return card

    def press_attention_button(self) -> None:
        if not self.cfg.hw_read(self.pcie_cap + PCI_EXP_SLTCAP, 4) & PCI_EXP_SLTCAP_ABP:
            raise ValueError(f"{self.name}: slot {self.slot_number} has no attention button")
        self.cfg.hw_set(self.pcie_cap + PCI_EXP_SLTSTA, 2, PCI_EXP_SLTSTA_ABP)
        self._update_hp_irq()

    def _presence(self, present: bool, *, event: bool) -> None:
        cfg, pos = self.cfg, self.pcie_cap
        op = cfg.hw_set if present else cfg.hw_clear
        op(pos + PCI_EXP_SLTSTA, 2, PCI_EXP_SLTSTA_PDS)
        op(pos + PCI_EXP_LNKSTA, 2, PCI_EXP_LNKSTA_DLLLA)
        if event:
            bits = PCI_EXP_SLTSTA_PDC
            if cfg.hw_read(pos + PCI_EXP_LNKCAP, 4) & PCI_EXP_LNKCAP_DLLLARC:
                bits |= PCI_EXP_SLTSTA_DLLSC
            cfg.hw_set(pos + PCI_EXP_SLTSTA, 2, bits)
            self._update_hp_irq()

    # -- hot-plug controller --------------------------------------------------------
    def _slot_control_written(self, off: int, size: int, value: int) -> None:
        if self.hotplug:  # the command completes at once
            self.cfg.hw_set(self.pcie_cap + PCI_EXP_SLTSTA, 2, PCI_EXP_SLTSTA_CC)
        self._update_hp_irq()

    def _update_hp_irq(self, *_: int) -> None:
        cfg, pos = self.cfg, self.pcie_cap
        ctl = cfg.hw_read(pos + PCI_EXP_SLTCTL, 2)
        sta = cfg.hw_read(pos + PCI_EXP_SLTSTA, 2)
        enabled = (ctl & 0x1F) | ((ctl & PCI_EXP_SLTCTL_DLLSCE) >> 4)  # enable bit -> event bit
        line = bool(ctl & PCI_EXP_SLTCTL_HPIE and sta & enabled)
        if line and not self._hp_asserted:
            self._hp_asserted = True  # before the message: a handler may run inside the send
            self._signal(self.hp_vector)  # and clear the status, which updates this line itself
            return
        self._hp_asserted = line

    # -- PME --------------------------------------------------------------------------
    def receive_pme(self, requester: int) -> None:
        """A PM_PME message from ``requester`` (bus << 8 | devfn) arrives from below."""
        cfg, off = self.cfg, self.pcie_cap + PCI_EXP_RTSTA
        if cfg.hw_read(off, 4) & PCI_EXP_RTSTA_PME:
            self._pme_queue.append(requester)
            cfg.hw_set(off, 4, PCI_EXP_RTSTA_PENDING)
        else:
            cfg.hw_write(off, 4, PCI_EXP_RTSTA_PME | (requester & PCI_EXP_RTSTA_PME_RQID))
        self._update_pme_irq()

    def _root_status_written(self, *_: int) -> None:
        cfg, off = self.cfg, self.pcie_cap + PCI_EXP_RTSTA
        if not cfg.hw_read(off, 4) & PCI_EXP_RTSTA_PME and self._pme_queue:
            # the falling edge first, so that the next PME is a new rising one
            self._update_pme_irq()
            rid = self._pme_queue.pop(0)
            pending = PCI_EXP_RTSTA_PENDING if self._pme_queue else 0
            cfg.hw_write(off, 4, PCI_EXP_RTSTA_PME | pending | rid)
        self._update_pme_irq()

    def _update_pme_irq(self, *_: int) -> None:
        cfg, pos = self.cfg, self.pcie_cap
        line = bool(cfg.hw_read(pos + PCI_EXP_RTCTL, 2) & PCI_EXP_RTCTL_PMEIE
                    and cfg.hw_read(pos + PCI_EXP_RTSTA, 4) & PCI_EXP_RTSTA_PME)
        if line and not self._pme_asserted:
            self._pme_asserted = True  # before the message: a handler may run inside the send
            self._signal(self.hp_vector)  # and clear the status, which updates this line itself
            return
        self._pme_asserted = line

    # -- AER ----------------------------------------------------------------------------
    def receive_error_message(self, kind: str, requester: int) -> None:
        """An ERR_COR / ERR_NONFATAL / ERR_FATAL message from ``requester`` arrives."""
        if kind not in (ERR_COR, ERR_NONFATAL, ERR_FATAL):
            raise ValueError(f"{self.name}: {kind!r} is not an error message")
        cfg, a = self.cfg, self.aer.pos
        sta = cfg.hw_read(a + PCI_ERR_ROOT_STATUS, 4)
        src = cfg.hw_read(a + PCI_ERR_ROOT_ERR_SRC, 4)
        if kind == ERR_COR:
            if sta & PCI_ERR_ROOT_COR_RCV:
                sta |= PCI_ERR_ROOT_MULTI_COR_RCV
            else:
                sta |= PCI_ERR_ROOT_COR_RCV
                src = (src & 0xFFFF0000) | (requester & 0xFFFF)
            system_error = PCI_EXP_RTCTL_SECEE
        else:
            fatal = kind == ERR_FATAL
            if sta & PCI_ERR_ROOT_UNCOR_RCV:
                sta |= PCI_ERR_ROOT_MULTI_UNCOR_RCV
            else:
                sta |= PCI_ERR_ROOT_UNCOR_RCV | (PCI_ERR_ROOT_FIRST_FATAL if fatal else 0)
                src = (src & 0xFFFF) | ((requester & 0xFFFF) << 16)
            sta |= PCI_ERR_ROOT_FATAL_RCV if fatal else PCI_ERR_ROOT_NONFATAL_RCV
            cfg.hw_set(PCI_SEC_STATUS, 2, PCI_STATUS_SIG_SYSTEM_ERROR)  # Received System Error
            system_error = PCI_EXP_RTCTL_SEFEE if fatal else PCI_EXP_RTCTL_SENFEE
        cfg.hw_write(a + PCI_ERR_ROOT_STATUS, 4, sta)
        cfg.hw_write(a + PCI_ERR_ROOT_ERR_SRC, 4, src)
        if cfg.hw_read(self.pcie_cap + PCI_EXP_RTCTL, 2) & system_error:
            self.system_errors += 1
        self._update_aer_irq()

    def _update_aer_irq(self, *_: int) -> None:
        cfg, a = self.cfg, self.aer.pos
        cmd = cfg.hw_read(a + PCI_ERR_ROOT_COMMAND, 4)
        sta = cfg.hw_read(a + PCI_ERR_ROOT_STATUS, 4)
        line = bool((cmd & PCI_ERR_ROOT_CMD_COR_EN and sta & PCI_ERR_ROOT_COR_RCV)
                    or (cmd & PCI_ERR_ROOT_CMD_NONFATAL_EN and sta & PCI_ERR_ROOT_NONFATAL_RCV)
                    or (cmd & PCI_ERR_ROOT_CMD_FATAL_EN and sta & PCI_ERR_ROOT_FATAL_RCV))
        if line and not self._aer_asserted:
            self._aer_asserted = True  # before the message: a handler may run inside the send
            self._signal(self.aer_vector)  # and clear the status, which updates this line itself
            return
        self._aer_asserted = line

    # -- interrupts -------------------------------------------------------------------
    def _signal(self, vector: int) -> bool:
        """Send interrupt ``vector`` as a memory write (MSI-X entry, or the MSI message)."""
        if self.msix is not None and self.msix.enabled:
            return self.msix.fire(vector)
        if self.msi is not None and self.msi.enabled:
            return self.msi.fire(0)  # one message: every event uses it
        self.intx_dropped += 1
        return False

    # -- the MSI-X table behind BAR0 ------------------------------------------------
    def mmio_read(self, bar: int, off: int, size: int) -> int:
        if self.msix is not None and self.msix.claims(bar, off):
            return self.msix.mmio_read(bar, off, size)
        return 0

    def mmio_write(self, bar: int, off: int, size: int, value: int) -> None:
        if self.msix is not None and self.msix.claims(bar, off):
            self.msix.mmio_write(bar, off, size, value)

    # -- reset ------------------------------------------------------------------------
    def reset_state(self) -> None:
        """Registers are back at power-on; presence and link still follow the card."""
        super().reset_state()
        self._pme_queue.clear()
        self._hp_asserted = self._pme_asserted = self._aer_asserted = False
        self._presence(self.card is not None, event=False)
