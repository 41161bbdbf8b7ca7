"""Native PCIe hot-plug, ``pciehp`` (``drivers/pci/hotplug/pciehp_{core,hpc,ctrl,pci}.c``).

Probe (``pciehp_probe``, one controller per hot-plug capable port):
``pcie_init`` reads Slot Capabilities, sets the slot state from whether
anything was enumerated below (ON or OFF) and clears every Slot Status event;
``pcie_init_notification`` requests the service IRQ (``IRQF_SHARED``,
"pciehp") and enables notifications as Linux does: Data Link Layer State
Changed always; Attention Button Pressed if the slot has a button, *else*
Presence Detect Changed (Linux's rule: with a button, presence changes while
a card is being seated are not events); HPIE; and Command Completed
interrupts unless the slot says No Command Completed Support. Then
``pciehp_check_presence`` asks for a slot enable if a card is present but
nothing is enumerated (or a disable in the opposite case).

Slot Control writes are *commands* (``pcie_do_write_cmd``): wait for the
previous one to complete, read-modify-write Slot Control, mark the command
busy. Completion is the Command Completed event, taken by the hard handler
(it clears ``cmd_busy``); without CCIE/HPIE the driver polls Slot Status
instead. The model's slot completes a command at once and its interrupt is
normally handled before the writer looks again; if it has not been (the
explorer may delay it), the wait times out as Linux's 1 s wait would, and
logs "Timeout on hotplug command" — there is no clock to wait on.

Interrupt (``pciehp_isr``, hard IRQ): ignore it unless HPIE is on; read Slot
Status, keep the event bits (ABP, PFD, PDC, CC, DLLSC), write them back to
clear them (RW1C) and, with MSI/MSI-X, read again until no new event came
in between (an MSI port sends a new message only after all event bits were
zero); Command Completed wakes the command waiter; anything else is ORed
into ``pending_events`` for the IRQ thread. ``pciehp_ist`` (the thread)
takes the events and:

* Attention Button Pressed -> ``pciehp_handle_button_press``: ON -> blink
  the power indicator and (after 5 s in Linux) request a slot disable; OFF
  -> blink and request an enable. **The model has no clock: the 5 s wait is
  skipped**, the request is queued at once, so one press toggles the slot
  (a second press can still cancel if the explorer runs it first);
* a disable request -> ``pciehp_disable_slot`` (safe removal);
* presence or link changed -> if the slot was on, turn it off
  (``pciehp_disable_slot``, surprise removal: devices below are marked
  disconnected first); then if a card is present or the link is up, turn it
  on (``pciehp_enable_slot``).

Disabling a slot (``pciehp_unconfigure_device``) takes
``pci_lock_rescan_remove`` and calls ``pci_stop_and_remove_bus_device`` on
every device below, last first — their drivers' ``remove`` runs (the NVMe
driver frees its IRQs and vectors) and the ``pci_dev`` objects are freed;
then the power indicator goes off. Enabling one (``board_added``) blinks the
power indicator, checks the link (Data Link Layer Link Active) and that a
device answers at 00.0, then ``pciehp_configure_device``: ``pci_scan_slot``,
``pci_assign_unassigned_bridge_resources`` on the port,
``pci_bus_add_devices`` — drivers bind — and the power indicator on.

Where the model simplifies: the IRQ thread and the button work are work
items (:mod:`vmdsim.kernel.workqueue`); no power controller, MRL
sensor, electromechanical interlock or power-fault recovery (a power fault
is logged and turns the attention indicator on); no poll mode, reset_slot
or ``reset_lock``, runtime PM, sysfs slot or user-space (``pci_hp_add`` has
nothing to publish); link training is instant, so Linux's waits for the link
and for the device's vendor ID (up to 1 s each) are single reads, and the
link-training-error checks of ``pciehp_check_link_status`` are left out.
Counters for views and tests: ``controller.events`` (every event the hard
handler took, by bit), ``enabled``/``disabled`` (slot transitions).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from vmdsim.drivers.pcieport.bus import (
    PCIE_PORT_SERVICE_HP,
    get_service_data,
    pcie_device,
    pcie_port_bus_of,
    pcie_port_service_driver,
    pcie_port_service_register,
    set_service_data,
)
from vmdsim.hw.regs import (
    PCI_COMMAND,
    PCI_COMMAND_INTX_DISABLE,
    PCI_COMMAND_MASTER,
    PCI_COMMAND_SERR,
    PCI_EXP_LNKSTA,
    PCI_EXP_LNKSTA_DLLLA,
    PCI_EXP_SLTCAP,
    PCI_EXP_SLTCAP_ABP,
    PCI_EXP_SLTCAP_AIP,
    PCI_EXP_SLTCAP_HPC,
    PCI_EXP_SLTCAP_HPS,
    PCI_EXP_SLTCAP_MRLSP,
    PCI_EXP_SLTCAP_NCCS,
    PCI_EXP_SLTCAP_PCP,
    PCI_EXP_SLTCAP_PIP,
    PCI_EXP_SLTCAP_PSN_SHIFT,
    PCI_EXP_SLTCTL,
    PCI_EXP_SLTCTL_ABPE,
    PCI_EXP_SLTCTL_AIC,
    PCI_EXP_SLTCTL_ATTN_IND_OFF,
    PCI_EXP_SLTCTL_ATTN_IND_ON,
    PCI_EXP_SLTCTL_CCIE,
    PCI_EXP_SLTCTL_DLLSCE,
    PCI_EXP_SLTCTL_HPIE,
    PCI_EXP_SLTCTL_MRLSCE,
    PCI_EXP_SLTCTL_PDCE,
    PCI_EXP_SLTCTL_PFDE,
    PCI_EXP_SLTCTL_PIC,
    PCI_EXP_SLTCTL_PWR_IND_BLINK,
    PCI_EXP_SLTCTL_PWR_IND_OFF,
    PCI_EXP_SLTCTL_PWR_IND_ON,
    PCI_EXP_SLTSTA,
    PCI_EXP_SLTSTA_ABP,
    PCI_EXP_SLTSTA_CC,
    PCI_EXP_SLTSTA_DLLSC,
    PCI_EXP_SLTSTA_MRLSC,
    PCI_EXP_SLTSTA_PDC,
    PCI_EXP_SLTSTA_PDS,
    PCI_EXP_SLTSTA_PFD,
)
from vmdsim.kernel.errno import EEXIST, EIO, ENODEV
from vmdsim.kernel.irq.flags import IRQ_HANDLED, IRQ_NONE, IRQF_SHARED
from vmdsim.kernel.locking import mutex, mutex_lock, mutex_unlock
from vmdsim.kernel.pci import (
    PCI_DEVFN,
    PCI_POSSIBLE_ERROR,
    pci_assign_unassigned_bridge_resources,
    pci_bus_add_devices,
    pci_bus_read_config_word,
    pci_bus_write_config_word,
    pci_domain_nr,
    pci_lock_rescan_remove,
    pci_scan_slot,
    pci_stop_and_remove_bus_device,
    pci_unlock_rescan_remove,
    pci_walk_bus,
    pcie_bus_configure_settings,
    pcie_capability_read_dword,
    pcie_capability_read_word,
    pcie_capability_write_word,
)
from vmdsim.kernel.pci.pci_h import PCI_D3cold, pci_channel_io_perm_failure
from vmdsim.kernel.pci.probe import pci_bus_read_dev_vendor_id, pci_get_slot
from vmdsim.kernel.pci.subsys import pci_info
from vmdsim.kernel.shared import KObject, init_private, peek, poke, shared
from vmdsim.kernel.workqueue import INIT_WORK, cancel_work_sync, schedule_work

if TYPE_CHECKING:
    from vmdsim.kernel.core import Kernel

# ctrl->state
OFF_STATE = 0
BLINKINGON_STATE = 1
BLINKINGOFF_STATE = 2
POWERON_STATE = 3
POWEROFF_STATE = 4
ON_STATE = 5
STATE_NAMES = {OFF_STATE: "off", BLINKINGON_STATE: "blinking-on",
               BLINKINGOFF_STATE: "blinking-off", POWERON_STATE: "powering-on",
               POWEROFF_STATE: "powering-off", ON_STATE: "on"}

# pending_events bits beyond Slot Status
DISABLE_SLOT = 1 << 16
RERUN_ISR = 1 << 17

INDICATOR_NOOP = -1
SAFE_REMOVAL = True
SURPRISE_REMOVAL = False

SLTSTA_EVENTS = (PCI_EXP_SLTSTA_ABP | PCI_EXP_SLTSTA_PFD | PCI_EXP_SLTSTA_PDC
                 | PCI_EXP_SLTSTA_CC | PCI_EXP_SLTSTA_DLLSC)


class controller(KObject):
    """``struct controller``: one hot-plug slot's driver state.

    Shared: ``slot_ctrl`` (the cached Slot Control, written by commands, read by the
    hard handler), ``cmd_busy`` (set by a command, cleared by the hard handler),
    ``pending_events`` (ORed by the hard handler, taken by the thread), ``state``
    and ``notification_enabled``.
    """

    slot_ctrl = shared()
    cmd_busy = shared()
    pending_events = shared()
    state = shared()
    notification_enabled = shared()

    def __init__(self, dev: pcie_device, slot_cap: int) -> None:
        init_private(self, slot_ctrl=0, cmd_busy=False, pending_events=0, state=OFF_STATE,
                             notification_enabled=False)
        self.pcie = dev
        self.k = dev.k
        self.slot_cap = slot_cap
        self.power_fault_detected = False
        self.request_result = 0
        self.ctrl_lock = mutex(f"{dev.name}.ctrl_lock", key="controller.ctrl_lock")
        self.state_lock = mutex(f"{dev.name}.state_lock", key="controller.state_lock")
        self.ist_work = INIT_WORK(dev.k, pciehp_ist_work, self, f"irq/{dev.irq}-pciehp")
        self.button_work = INIT_WORK(dev.k, pciehp_queue_pushbutton_work, self,
                                     f"kworker/pciehp:{dev.name}")
        self.events: dict[int, int] = {}  # model only: Slot Status event bit -> times seen
        self.enabled = 0  # model only: successful pciehp_enable_slot calls
        self.disabled = 0  # model only: pciehp_disable_slot calls
        self.timeouts = 0  # model only: "Timeout on hotplug command"

    def __repr__(self) -> str:
        return f"<pciehp controller {self.pcie.name} {STATE_NAMES[peek(self, 'state')]}>"


def ctrl_dev(ctrl: controller) -> Any:
    return ctrl.pcie.port


def ATTN_BUTTN(ctrl: controller) -> bool:  # noqa: N802
    return bool(ctrl.slot_cap & PCI_EXP_SLTCAP_ABP)


def POWER_CTRL(ctrl: controller) -> bool:  # noqa: N802
    return bool(ctrl.slot_cap & PCI_EXP_SLTCAP_PCP)


def ATTN_LED(ctrl: controller) -> bool:  # noqa: N802
    return bool(ctrl.slot_cap & PCI_EXP_SLTCAP_AIP)


def PWR_LED(ctrl: controller) -> bool:  # noqa: N802
    return bool(ctrl.slot_cap & PCI_EXP_SLTCAP_PIP)


def NO_CMD_CMPL(ctrl: controller) -> bool:  # noqa: N802
    return bool(ctrl.slot_cap & PCI_EXP_SLTCAP_NCCS)


def PSN(ctrl: controller) -> int:  # noqa: N802
    return ctrl.slot_cap >> PCI_EXP_SLTCAP_PSN_SHIFT


def slot_name(ctrl: controller) -> str:
    return str(PSN(ctrl))


def ctrl_info(ctrl: controller, msg: str) -> None:
    pci_info(ctrl_dev(ctrl), f"pciehp: {msg}")


# -- Slot Control commands (pciehp_hpc.c) --------------------------------------------------
def pcie_poll_cmd(ctrl: controller) -> bool:
    """Read Slot Status once: if the command completed, clear CC and the busy flag."""
    pdev = ctrl_dev(ctrl)
    _, slot_status = pcie_capability_read_word(pdev, PCI_EXP_SLTSTA)
    if PCI_POSSIBLE_ERROR(slot_status, 2):
        ctrl_info(ctrl, "pcie_poll_cmd: no response from device")
        return False
    if slot_status & PCI_EXP_SLTSTA_CC:
        pcie_capability_write_word(pdev, PCI_EXP_SLTSTA, PCI_EXP_SLTSTA_CC)
        ctrl.cmd_busy = False
        return True
    return False


def pcie_wait_cmd(ctrl: controller) -> None:
    """Wait for the previous command to complete (see the module docstring)."""
    if NO_CMD_CMPL(ctrl) or not ctrl.cmd_busy:
        return
    slot_ctrl = ctrl.slot_ctrl
    if slot_ctrl & PCI_EXP_SLTCTL_HPIE and slot_ctrl & PCI_EXP_SLTCTL_CCIE:
        done = not ctrl.cmd_busy  # wait_event_timeout(): the hard handler clears it
    else:
        done = pcie_poll_cmd(ctrl)
    if not done:
        ctrl.timeouts += 1
        ctrl_info(ctrl, f"Timeout on hotplug command {slot_ctrl:#06x}")


def pcie_do_write_cmd(ctrl: controller, cmd: int, mask: int, wait: bool) -> None:
    pdev = ctrl_dev(ctrl)
    mutex_lock(ctrl.ctrl_lock)
    try:
        pcie_wait_cmd(ctrl)  # always wait for any previous command still in progress
        _, slot_ctrl = pcie_capability_read_word(pdev, PCI_EXP_SLTCTL)
        if PCI_POSSIBLE_ERROR(slot_ctrl, 2):
            ctrl_info(ctrl, "pcie_do_write_cmd: no response from device")
            return
        slot_ctrl = (slot_ctrl & ~mask) | (cmd & mask)
        ctrl.cmd_busy = True
        ctrl.slot_ctrl = slot_ctrl
        pcie_capability_write_word(pdev, PCI_EXP_SLTCTL, slot_ctrl)
        if wait:
            pcie_wait_cmd(ctrl)
    finally:
        mutex_unlock(ctrl.ctrl_lock)


def pcie_write_cmd(ctrl: controller, cmd: int, mask: int) -> None:
    """Issue a command and wait for it to complete."""
    pcie_do_write_cmd(ctrl, cmd, mask, True)


def pcie_write_cmd_nowait(ctrl: controller, cmd: int, mask: int) -> None:
    """Issue a command; the next command waits for it."""
    pcie_do_write_cmd(ctrl, cmd, mask, False)


def pciehp_set_indicators(ctrl: controller, pwr: int, attn: int) -> None:
    cmd = mask = 0
    if PWR_LED(ctrl) and pwr != INDICATOR_NOOP:
        cmd |= pwr & PCI_EXP_SLTCTL_PIC
        mask |= PCI_EXP_SLTCTL_PIC
    if ATTN_LED(ctrl) and attn != INDICATOR_NOOP:
        cmd |= attn & PCI_EXP_SLTCTL_AIC
        mask |= PCI_EXP_SLTCTL_AIC
    if cmd:
        pcie_write_cmd_nowait(ctrl, cmd, mask)


def pciehp_card_present(ctrl: controller) -> int:
    _, slot_status = pcie_capability_read_word(ctrl_dev(ctrl), PCI_EXP_SLTSTA)
    if PCI_POSSIBLE_ERROR(slot_status, 2):
        return -ENODEV
    return int(bool(slot_status & PCI_EXP_SLTSTA_PDS))


def pciehp_check_link_active(ctrl: controller) -> int:
    _, lnk_status = pcie_capability_read_word(ctrl_dev(ctrl), PCI_EXP_LNKSTA)
    if PCI_POSSIBLE_ERROR(lnk_status, 2):
        return -ENODEV
    return int(bool(lnk_status & PCI_EXP_LNKSTA_DLLLA))


def pciehp_card_present_or_link_active(ctrl: controller) -> int:
    ret = pciehp_card_present(ctrl)
    if ret:
        return ret
    return pciehp_check_link_active(ctrl)


def pciehp_check_link_status(ctrl: controller) -> int:
    """Link up and a device answering at 00.0 (each a single read: training is instant)."""
    if pciehp_check_link_active(ctrl) <= 0:
        ctrl_info(ctrl, f"Slot({slot_name(ctrl)}): No link")
        return -1
    found, _ = pci_bus_read_dev_vendor_id(ctrl_dev(ctrl).subordinate, PCI_DEVFN(0, 0))
    if found:  # ignore link or presence changes up to this point
        ctrl.pending_events = ctrl.pending_events & ~(PCI_EXP_SLTSTA_DLLSC | PCI_EXP_SLTSTA_PDC)
    else:
        ctrl_info(ctrl, f"Slot({slot_name(ctrl)}): No device found")
        return -1
    return 0


def pciehp_query_power_fault(ctrl: controller) -> bool:
    _, slot_status = pcie_capability_read_word(ctrl_dev(ctrl), PCI_EXP_SLTSTA)
    return bool(slot_status & PCI_EXP_SLTSTA_PFD)


# -- the interrupt ------------------------------------------------------------------------
def pciehp_isr(irq: int, ctrl: controller) -> int:
    """Hard handler: collect and clear Slot Status events; CC wakes the command waiter,
    the rest go to the thread."""
    pdev = ctrl_dev(ctrl)
    if pdev.current_state == PCI_D3cold or not ctrl.slot_ctrl & PCI_EXP_SLTCTL_HPIE:
        return IRQ_NONE
    events = 0
    while True:
        _, status = pcie_capability_read_word(pdev, PCI_EXP_SLTSTA)
        if PCI_POSSIBLE_ERROR(status, 2):
            ctrl_info(ctrl, "pciehp_isr: no response from device")
            return IRQ_NONE
        status &= SLTSTA_EVENTS
        # A power fault already reported is not reported again until handled.
        if ctrl.power_fault_detected:
            status &= ~PCI_EXP_SLTSTA_PFD
        elif status & PCI_EXP_SLTSTA_PFD:
            ctrl.power_fault_detected = True
        events |= status
        if not status:
            break
        pcie_capability_write_word(pdev, PCI_EXP_SLTSTA, status)
        # An MSI port sends a new message only after every event bit was zero: read again
        # in case one was set between the read and the write.
        if not (pdev.msi_enabled or pdev.msix_enabled):
            break
    if not events:
        return IRQ_NONE
    for bit in range(16):
        if events & 1 << bit:
            ctrl.events[1 << bit] = ctrl.events.get(1 << bit, 0) + 1
    if events & PCI_EXP_SLTSTA_CC:
        # Not deferred: the thread itself may be the one waiting for it.
        ctrl.cmd_busy = False
        if events == PCI_EXP_SLTSTA_CC:
            return IRQ_HANDLED
        events &= ~PCI_EXP_SLTSTA_CC
    ctrl.pending_events = ctrl.pending_events | events
    schedule_work(ctrl.ist_work)  # Linux: return IRQ_WAKE_THREAD
    return IRQ_HANDLED


def pciehp_ist_work(ctrl: controller) -> None:
    pciehp_ist(ctrl.pcie.irq, ctrl)


def pciehp_ist(irq: int, ctrl: controller) -> int:
    """The IRQ thread: act on the events the hard handler (or a request) left."""
    ctrl.k.irq.synchronize_hardirq(irq)
    events = ctrl.pending_events
    ctrl.pending_events = 0
    if not events:
        return IRQ_NONE
    if events & PCI_EXP_SLTSTA_ABP:
        pciehp_handle_button_press(ctrl)
    if events & PCI_EXP_SLTSTA_PFD:
        ctrl_info(ctrl, f"Slot({slot_name(ctrl)}): Power fault")
        pciehp_set_indicators(ctrl, PCI_EXP_SLTCTL_PWR_IND_OFF, PCI_EXP_SLTCTL_ATTN_IND_ON)
    # Disable requests have higher priority than presence or link changes.
    if events & DISABLE_SLOT:
        pciehp_handle_disable_request(ctrl)
    elif events & (PCI_EXP_SLTSTA_PDC | PCI_EXP_SLTSTA_DLLSC):
        pciehp_handle_presence_or_link_change(ctrl, events)
    return IRQ_HANDLED


def pciehp_request(ctrl: controller, action: int) -> None:
    """Queue an event for the thread and wake it (``irq_wake_thread``)."""
    ctrl.pending_events = ctrl.pending_events | action
    schedule_work(ctrl.ist_work)


# -- slot state machine (pciehp_ctrl.c) ------------------------------------------------------
def pciehp_handle_button_press(ctrl: controller) -> None:
    mutex_lock(ctrl.state_lock)
    state = ctrl.state
    if state in (OFF_STATE, ON_STATE):
        if state == ON_STATE:
            ctrl.state = BLINKINGOFF_STATE
            ctrl_info(ctrl, f"Slot({slot_name(ctrl)}): Button press: will power off in 5 sec")
        else:
            ctrl.state = BLINKINGON_STATE
            ctrl_info(ctrl, f"Slot({slot_name(ctrl)}) Button press: will power on in 5 sec")
        pciehp_set_indicators(ctrl, PCI_EXP_SLTCTL_PWR_IND_BLINK, PCI_EXP_SLTCTL_ATTN_IND_OFF)
        schedule_work(ctrl.button_work)  # Linux: schedule_delayed_work(..., 5 * HZ)
    elif state in (BLINKINGOFF_STATE, BLINKINGON_STATE):
        # Pressed again before the request ran: cancel it.
        cancel_work_sync(ctrl.button_work)
        if state == BLINKINGOFF_STATE:
            ctrl.state = ON_STATE
            pciehp_set_indicators(ctrl, PCI_EXP_SLTCTL_PWR_IND_ON, PCI_EXP_SLTCTL_ATTN_IND_OFF)
            ctrl_info(ctrl, f"Slot({slot_name(ctrl)}): Button press: canceling request to "
                            "power off")
        else:
            ctrl.state = OFF_STATE
            pciehp_set_indicators(ctrl, PCI_EXP_SLTCTL_PWR_IND_OFF,
                                  PCI_EXP_SLTCTL_ATTN_IND_OFF)
            ctrl_info(ctrl, f"Slot({slot_name(ctrl)}): Button press: canceling request to "
                            "power on")
        ctrl_info(ctrl, f"Slot({slot_name(ctrl)}): Action canceled due to button press")
    else:
        ctrl_info(ctrl, f"Slot({slot_name(ctrl)}): Ignoring invalid state {state:#x}")
    mutex_unlock(ctrl.state_lock)


def pciehp_queue_pushbutton_work(ctrl: controller) -> None:
    """The button's delayed work, run at once in the model."""
    mutex_lock(ctrl.state_lock)
    state = ctrl.state
    if state == BLINKINGOFF_STATE:
        pciehp_request(ctrl, DISABLE_SLOT)
    elif state == BLINKINGON_STATE:
        pciehp_request(ctrl, PCI_EXP_SLTSTA_PDC)
    mutex_unlock(ctrl.state_lock)


def pciehp_handle_disable_request(ctrl: controller) -> None:
    mutex_lock(ctrl.state_lock)
    if ctrl.state in (BLINKINGOFF_STATE, ON_STATE):
        ctrl.state = POWEROFF_STATE
        mutex_unlock(ctrl.state_lock)
        ctrl.request_result = pciehp_disable_slot(ctrl, SAFE_REMOVAL)
        return
    mutex_unlock(ctrl.state_lock)


def pciehp_handle_presence_or_link_change(ctrl: controller, events: int) -> None:
    # If the slot is on and presence or link has changed, turn it off: even if it is
    # occupied again, it cannot be assumed to hold the same card.
    mutex_lock(ctrl.state_lock)
    state = ctrl.state
    if state in (BLINKINGOFF_STATE, ON_STATE):
        if state == BLINKINGOFF_STATE:
            cancel_work_sync(ctrl.button_work)
        ctrl.state = POWEROFF_STATE
        mutex_unlock(ctrl.state_lock)
        if events & PCI_EXP_SLTSTA_DLLSC:
            ctrl_info(ctrl, f"Slot({slot_name(ctrl)}): Link Down")
        if events & PCI_EXP_SLTSTA_PDC:
            ctrl_info(ctrl, f"Slot({slot_name(ctrl)}): Card not present")
        pciehp_disable_slot(ctrl, SURPRISE_REMOVAL)
    else:
        mutex_unlock(ctrl.state_lock)
    # Turn the slot on if it is occupied or the link is up.
    mutex_lock(ctrl.state_lock)
    present = pciehp_card_present(ctrl)
    link_active = pciehp_check_link_active(ctrl)
    if present <= 0 and link_active <= 0:
        if ctrl.state == BLINKINGON_STATE:
            ctrl.state = OFF_STATE
            cancel_work_sync(ctrl.button_work)
            pciehp_set_indicators(ctrl, PCI_EXP_SLTCTL_PWR_IND_OFF, INDICATOR_NOOP)
            ctrl_info(ctrl, f"Slot({slot_name(ctrl)}): Card not present")
        mutex_unlock(ctrl.state_lock)
        return
    state = ctrl.state
    if state in (BLINKINGON_STATE, OFF_STATE):
        if state == BLINKINGON_STATE:
            cancel_work_sync(ctrl.button_work)
        ctrl.state = POWERON_STATE
        mutex_unlock(ctrl.state_lock)
        if present > 0:
            ctrl_info(ctrl, f"Slot({slot_name(ctrl)}): Card present")
        if link_active > 0:
            ctrl_info(ctrl, f"Slot({slot_name(ctrl)}): Link Up")
        ctrl.request_result = pciehp_enable_slot(ctrl)
    else:
        mutex_unlock(ctrl.state_lock)


def board_added(ctrl: controller) -> int:
    parent = ctrl_dev(ctrl).subordinate
    pciehp_set_indicators(ctrl, PCI_EXP_SLTCTL_PWR_IND_BLINK, INDICATOR_NOOP)
    retval = pciehp_check_link_status(ctrl)
    if not retval and (ctrl.power_fault_detected or pciehp_query_power_fault(ctrl)):
        ctrl_info(ctrl, f"Slot({slot_name(ctrl)}): Power fault")
        retval = -EIO
    if not retval:
        retval = pciehp_configure_device(ctrl)
        if retval == -EEXIST:
            retval = 0
        elif retval:
            ctrl_info(ctrl, f"Cannot add device at {pci_domain_nr(parent):04x}:"
                            f"{parent.number:02x}:00")
    if retval:
        pciehp_set_indicators(ctrl, PCI_EXP_SLTCTL_PWR_IND_OFF, INDICATOR_NOOP)  # set_slot_off
        return retval
    pciehp_set_indicators(ctrl, PCI_EXP_SLTCTL_PWR_IND_ON, PCI_EXP_SLTCTL_ATTN_IND_OFF)
    return 0


def remove_board(ctrl: controller, safe_removal: bool) -> None:
    pciehp_unconfigure_device(ctrl, safe_removal)
    pciehp_set_indicators(ctrl, PCI_EXP_SLTCTL_PWR_IND_OFF, INDICATOR_NOOP)


def pciehp_enable_slot(ctrl: controller) -> int:
    ret = board_added(ctrl)  # __pciehp_enable_slot: no MRL sensor or power controller
    if ret and ATTN_BUTTN(ctrl):
        pciehp_set_indicators(ctrl, PCI_EXP_SLTCTL_PWR_IND_OFF, INDICATOR_NOOP)
    mutex_lock(ctrl.state_lock)
    ctrl.state = OFF_STATE if ret else ON_STATE
    mutex_unlock(ctrl.state_lock)
    if not ret:
        ctrl.enabled += 1
    return ret


def pciehp_disable_slot(ctrl: controller, safe_removal: bool) -> int:
    remove_board(ctrl, safe_removal)
    mutex_lock(ctrl.state_lock)
    ctrl.state = OFF_STATE
    mutex_unlock(ctrl.state_lock)
    ctrl.disabled += 1
    return 0


# -- configuring the devices below (pciehp_pci.c) -------------------------------------------
def pciehp_configure_device(ctrl: controller) -> int:
    bridge = ctrl_dev(ctrl)
    parent = bridge.subordinate
    k = ctrl.k
    pci_lock_rescan_remove(k)
    try:
        dev = pci_get_slot(parent, PCI_DEVFN(0, 0))
        if dev is not None:
            # Already there: configured by firmware or a previous hot-plug event.
            return -EEXIST
        if pci_scan_slot(parent, PCI_DEVFN(0, 0)) == 0:
            ctrl_info(ctrl, "No new device found")
            return -ENODEV
        # (Linux calls pci_hp_add_bridge for each bridge found: the model's slots hold
        # endpoints only.)
        pci_assign_unassigned_bridge_resources(bridge)
        pcie_bus_configure_settings(parent)
        pci_bus_add_devices(parent)
        return 0
    finally:
        pci_unlock_rescan_remove(k)


def pci_dev_set_disconnected(dev: Any, data: Any) -> int:
    dev.error_state = pci_channel_io_perm_failure
    return 0


def pciehp_unconfigure_device(ctrl: controller, presence: bool) -> None:
    """Remove every device below the slot, last first (drivers' ``remove`` runs)."""
    parent = ctrl_dev(ctrl).subordinate
    k = ctrl.k
    if not presence:
        pci_walk_bus(parent, pci_dev_set_disconnected, None)
    pci_lock_rescan_remove(k)
    try:
        for dev in reversed(list(parent.devices)):
            devfn = dev.devfn
            pci_stop_and_remove_bus_device(dev)
            if presence:
                # No new requests from the card still in the slot. Linux writes through
                # its reference to the removed pci_dev; the model has freed it, so the
                # same config cycles go through the bus.
                _, command = pci_bus_read_config_word(parent, devfn, PCI_COMMAND)
                command &= ~(PCI_COMMAND_MASTER | PCI_COMMAND_SERR)
                command |= PCI_COMMAND_INTX_DISABLE
                pci_bus_write_config_word(parent, devfn, PCI_COMMAND, command)
    finally:
        pci_unlock_rescan_remove(k)


# -- notification set-up and the service driver (pciehp_hpc.c, pciehp_core.c) ------------------
def pcie_enable_notification(ctrl: controller) -> None:
    cmd = PCI_EXP_SLTCTL_DLLSCE
    if ATTN_BUTTN(ctrl):
        cmd |= PCI_EXP_SLTCTL_ABPE
    else:
        cmd |= PCI_EXP_SLTCTL_PDCE
    cmd |= PCI_EXP_SLTCTL_HPIE
    if not NO_CMD_CMPL(ctrl):
        cmd |= PCI_EXP_SLTCTL_CCIE
    mask = (PCI_EXP_SLTCTL_PDCE | PCI_EXP_SLTCTL_ABPE | PCI_EXP_SLTCTL_PFDE
            | PCI_EXP_SLTCTL_MRLSCE | PCI_EXP_SLTCTL_CCIE | PCI_EXP_SLTCTL_HPIE
            | PCI_EXP_SLTCTL_DLLSCE)
    pcie_write_cmd_nowait(ctrl, cmd, mask)


def pcie_disable_notification(ctrl: controller) -> None:
    mask = (PCI_EXP_SLTCTL_PDCE | PCI_EXP_SLTCTL_ABPE | PCI_EXP_SLTCTL_MRLSCE
            | PCI_EXP_SLTCTL_PFDE | PCI_EXP_SLTCTL_HPIE | PCI_EXP_SLTCTL_CCIE
            | PCI_EXP_SLTCTL_DLLSCE)
    pcie_write_cmd(ctrl, 0, mask)


def pciehp_request_irq(ctrl: controller) -> int:
    irq = ctrl.pcie.irq
    if irq < 0:
        return -ENODEV
    return ctrl.k.irq.request_irq(irq, pciehp_isr, IRQF_SHARED, "pciehp", ctrl)


def pciehp_free_irq(ctrl: controller) -> None:
    """``free_irq`` (which in Linux also stops the IRQ thread: here, cancel its work)."""
    ctrl.k.irq.free_irq(ctrl.pcie.irq, ctrl)
    cancel_work_sync(ctrl.ist_work)


def pcie_init_notification(ctrl: controller) -> int:
    if pciehp_request_irq(ctrl):
        return -1
    pcie_enable_notification(ctrl)
    ctrl.notification_enabled = True
    return 0


def pcie_shutdown_notification(ctrl: controller) -> None:
    if ctrl.notification_enabled:
        pcie_disable_notification(ctrl)
        pciehp_free_irq(ctrl)
        ctrl.notification_enabled = False


def pcie_init(dev: pcie_device) -> controller | None:
    pdev = dev.port
    _, slot_cap = pcie_capability_read_dword(pdev, PCI_EXP_SLTCAP)
    ctrl = dev.k.mem.kzalloc(controller, dev, slot_cap, owner="pcieport")
    if ctrl is None:
        return None
    poke(ctrl, "state", ON_STATE if pdev.subordinate.devices else OFF_STATE)
    _, slot_ctrl = pcie_capability_read_word(pdev, PCI_EXP_SLTCTL)
    poke(ctrl, "slot_ctrl", slot_ctrl)
    # Clear all remaining event bits in Slot Status.
    pcie_capability_write_word(pdev, PCI_EXP_SLTSTA,
                               PCI_EXP_SLTSTA_ABP | PCI_EXP_SLTSTA_PFD | PCI_EXP_SLTSTA_MRLSC
                               | PCI_EXP_SLTSTA_CC | PCI_EXP_SLTSTA_DLLSC
                               | PCI_EXP_SLTSTA_PDC)

    def yn(bit: int) -> str:
        return "+" if slot_cap & bit else "-"

    ctrl_info(ctrl, f"Slot #{PSN(ctrl)} AttnBtn{yn(PCI_EXP_SLTCAP_ABP)} "
                    f"PwrCtrl{yn(PCI_EXP_SLTCAP_PCP)} MRL{yn(PCI_EXP_SLTCAP_MRLSP)} "
                    f"AttnInd{yn(PCI_EXP_SLTCAP_AIP)} PwrInd{yn(PCI_EXP_SLTCAP_PIP)} "
                    f"HotPlug{yn(PCI_EXP_SLTCAP_HPC)} Surprise{yn(PCI_EXP_SLTCAP_HPS)} "
                    f"NoCompl{yn(PCI_EXP_SLTCAP_NCCS)}")
    return ctrl


def pciehp_release_ctrl(ctrl: controller) -> None:
    cancel_work_sync(ctrl.button_work)
    ctrl.k.mem.kfree(ctrl)


def pciehp_check_presence(ctrl: controller) -> None:
    mutex_lock(ctrl.state_lock)
    occupied = pciehp_card_present_or_link_active(ctrl)
    state = ctrl.state
    if ((occupied > 0 and state in (OFF_STATE, BLINKINGON_STATE))
            or (not occupied and state in (ON_STATE, BLINKINGOFF_STATE))):
        pciehp_request(ctrl, PCI_EXP_SLTSTA_PDC)
    mutex_unlock(ctrl.state_lock)


def pciehp_probe(dev: pcie_device) -> int:
    if dev.service != PCIE_PORT_SERVICE_HP:
        return -ENODEV
    port = dev.port
    if port.subordinate is None:
        pci_info(port, "Hotplug bridge without secondary bus, ignoring")
        return -ENODEV
    ctrl = pcie_init(dev)
    if ctrl is None:
        pci_info(port, "Controller initialization failed")
        return -ENODEV
    set_service_data(dev, ctrl)
    rc = pcie_init_notification(ctrl)
    if rc:
        ctrl_info(ctrl, f"Notification initialization failed ({rc})")
        pciehp_release_ctrl(ctrl)
        return -ENODEV
    pcie_port_bus_of(dev.k).hotplug_slots.append(ctrl)  # pci_hp_add
    pciehp_check_presence(ctrl)
    return 0


def pciehp_remove(dev: pcie_device) -> None:
    ctrl: controller = get_service_data(dev)
    pcie_port_bus_of(dev.k).hotplug_slots.remove(ctrl)  # pci_hp_del
    pcie_shutdown_notification(ctrl)
    pciehp_release_ctrl(ctrl)


def pcie_hp_init(k: Kernel) -> int:
    drv = pcie_port_service_driver("pciehp", PCIE_PORT_SERVICE_HP, probe=pciehp_probe,
                                   remove=pciehp_remove)
    return pcie_port_service_register(k, drv)


def pciehp_controller(port: Any) -> controller | None:
    """The pciehp controller bound to the port ``port`` (a ``pci_dev``), if any."""
    for ctrl in pcie_port_bus_of(port.k).hotplug_slots:
        if ctrl.pcie.port is port:
            return ctrl
    return None

