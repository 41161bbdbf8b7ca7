"""Interrupt chips and the state machine of one interrupt (``kernel/irq/chip.c``,
``resend.c``).

An :class:`irq_chip` is a table of callbacks, each taking the ``irq_data`` of
its own level of the hierarchy. Linux defines chips as static structures; the
explorer deep-copies a kernel with the chips it uses, so the model never
tests a chip's identity: "no chip" is ``irq_chip_is_none(chip)``. The
structure, ``no_irq_chip``/``dummy_irq_chip`` and the ``IRQD_*`` accessors of
``include/linux/irq.h`` are defined with the descriptors (``irqdesc``, the
bottom of the IRQ core) and exported from here too; ``chained_action``, the
placeholder action of a chained handler, is chip.c's, as in Linux.

The transitions keep Linux's rules: ``irq_startup`` enables (chip
``irq_enable``, else unmask) and marks the IRQ started; ``irq_shutdown`` runs
the chip's ``irq_shutdown``, else disables (chip ``irq_disable``, else mask);
``irq_disable`` is *lazy* when the chip has no ``irq_disable`` — the IRQ is
only marked disabled, and the flow handler masks it if it fires anyway, as
``__irq_disable`` does. ``check_irq_resend`` replays an interrupt that arrived
while disabled through the chip's retrigger (for x86 MSI: an IPI of the
vector to its CPU); x86 has no software resend, so an IRQ whose chips cannot
retrigger loses such an interrupt, as in Linux.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from vmdsim.kernel.errno import EBUSY, EINVAL, ENOSYS
from vmdsim.kernel.irq.flags import (
    IRQ_DISABLE_UNLAZY,
    IRQ_NOPROBE,
    IRQ_NOREQUEST,
    IRQ_NOTHREAD,
    IRQ_SET_MASK_OK,
    IRQ_SET_MASK_OK_DONE,
    IRQ_SET_MASK_OK_NOCOPY,
    IRQCHIP_AFFINITY_PRE_STARTUP,
    IRQD_AFFINITY_SET,
    IRQD_IRQ_DISABLED,
    IRQD_IRQ_MASKED,
    IRQD_IRQ_STARTED,
    IRQS_PENDING,
    IRQS_REPLAY,
    IrqError,
)
from vmdsim.kernel.irq.irqdesc import (
    CHIP_OPS,  # noqa: F401
    DescTableMixin,  # (the F401 ones: chip API, unused here)
    dummy_irq_chip,  # noqa: F401
    handle_bad_irq,
    irq_chip,
    irq_chip_is_none,
    irq_data_get_affinity_mask,  # noqa: F401
    irq_data_get_effective_affinity_mask,  # noqa: F401
    irq_data_get_irq_chip,  # noqa: F401
    irq_data_get_irq_chip_data,  # noqa: F401
    irq_data_get_irq_handler_data,  # noqa: F401
    irq_data_get_msi_desc,  # noqa: F401
    irq_data_update_effective_affinity,  # noqa: F401
    irqd_affinity_is_managed,
    irqd_clear,
    irqd_has_set,
    irqd_irq_disabled,
    irqd_irq_inprogress,  # noqa: F401
    irqd_irq_masked,
    irqd_is_activated,  # noqa: F401
    irqd_is_level_type,
    irqd_is_started,
    irqd_set,
    irqd_to_hwirq,  # noqa: F401
    no_irq_chip,
)
from vmdsim.kernel.irq.irqdomain import irq_domain_activate_irq, irq_domain_deactivate_irq
from vmdsim.kernel.locking import raw_spin_lock_irqsave, raw_spin_unlock_irqrestore
from vmdsim.kernel.mem import NullPointerDereference

if TYPE_CHECKING:
    from vmdsim.kernel.irq.irqdesc import irq_data, irq_desc
    from vmdsim.kernel.irq.msi import msi_msg


# -- chained_action (chip.c) ----------------------------------------------------------------
def bad_chained_irq(irq: int, dev_id: Any) -> int:
    raise IrqError(f"Chained irq {irq} should not call an action")


class _chained_irqaction:
    """``chained_action``: the placeholder action of an IRQ with a chained flow handler.

    Recognised by type, so a kernel's deep copy still knows its chained IRQs.
    """

    handler = staticmethod(bad_chained_irq)
    name = "chained"
    next = None
    dev_id = None
    flags = 0
    calls = handled = 0

    def __repr__(self) -> str:
        return "<chained_action>"


chained_action = _chained_irqaction()


# -- irq state (kernel/irq/internals.h) -----------------------------------------------------
def irq_state_set_disabled(desc: irq_desc) -> None:
    irqd_set(desc.irq_data, IRQD_IRQ_DISABLED)


def irq_state_clr_disabled(desc: irq_desc) -> None:
    irqd_clear(desc.irq_data, IRQD_IRQ_DISABLED)


def irq_state_set_masked(desc: irq_desc) -> None:
    irqd_set(desc.irq_data, IRQD_IRQ_MASKED)


def irq_state_clr_masked(desc: irq_desc) -> None:
    irqd_clear(desc.irq_data, IRQD_IRQ_MASKED)


# -- masking ----------------------------------------------------------------------------
def mask_irq(desc: irq_desc) -> None:
    d = desc.irq_data
    if irqd_irq_masked(d):
        return
    chip = d.chip
    if chip.irq_mask is not None:
        chip.irq_mask(d)
        irq_state_set_masked(desc)


def unmask_irq(desc: irq_desc) -> None:
    d = desc.irq_data
    if not irqd_irq_masked(d):
        return
    chip = d.chip
    if chip.irq_unmask is not None:
        chip.irq_unmask(d)
        irq_state_clr_masked(desc)


def mask_ack_irq(desc: irq_desc) -> None:
    d = desc.irq_data
    chip = d.chip
    if chip.irq_mask_ack is not None:
        chip.irq_mask_ack(d)
        irq_state_set_masked(desc)
    else:
        mask_irq(desc)
        if chip.irq_ack is not None:
            chip.irq_ack(d)


# -- enable / disable / startup / shutdown ----------------------------------------------
def irq_enable(desc: irq_desc) -> None:
    d = desc.irq_data
    if not irqd_irq_disabled(d):
        unmask_irq(desc)
        return
    irq_state_clr_disabled(desc)
    chip = d.chip
    if chip.irq_enable is not None:
        chip.irq_enable(d)
        irq_state_clr_masked(desc)
    else:
        unmask_irq(desc)


def _irq_disable(desc: irq_desc, mask: bool) -> None:
    d = desc.irq_data
    if irqd_irq_disabled(d):
        if mask:
            mask_irq(desc)
        return
    irq_state_set_disabled(desc)
    chip = d.chip
    if chip.irq_disable is not None:
        chip.irq_disable(d)
        irq_state_set_masked(desc)
    elif mask:
        mask_irq(desc)


def irq_disable(desc: irq_desc) -> None:
    """Mark disabled; mask only through the chip's ``irq_disable`` (lazy disable)."""
    _irq_disable(desc, bool(desc.status_use_accessors & IRQ_DISABLE_UNLAZY))


def irq_activate(desc: irq_desc) -> int:
    d = desc.irq_data
    if not irqd_affinity_is_managed(d):
        return irq_domain_activate_irq(d, False)
    return 0


def _irq_startup(desc: irq_desc) -> int:
    d = desc.irq_data
    ret = 0
    chip = d.chip
    if chip.irq_startup is not None:
        ret = chip.irq_startup(d)
        irq_state_clr_disabled(desc)
        irq_state_clr_masked(desc)
    else:
        irq_enable(desc)
    irqd_set(d, IRQD_IRQ_STARTED)
    return ret


def irq_startup(desc: irq_desc, resend: bool, force: bool) -> int:
    """Start (or re-enable) the interrupt; replay a pending one if ``resend``."""
    d = desc.irq_data
    ret = 0
    desc.depth = 0
    if irqd_is_started(d):
        irq_enable(desc)
    elif irqd_affinity_is_managed(d):
        if irq_domain_activate_irq(d, False):
            raise IrqError(f"irq_startup: managed IRQ {d.irq} cannot be activated")
        irq_do_set_affinity(d, d.common.affinity, False)
        ret = _irq_startup(desc)
    else:
        pre = bool(d.chip.flags & IRQCHIP_AFFINITY_PRE_STARTUP)
        if pre:
            irq_setup_affinity(desc)
        ret = _irq_startup(desc)
        if not pre:
            irq_setup_affinity(desc)
    if resend:
        check_irq_resend(desc, False)
    return ret


def irq_activate_and_startup(desc: irq_desc, resend: bool) -> int:
    if irq_activate(desc):
        return 0
    return irq_startup(desc, resend, True)


def irq_shutdown(desc: irq_desc) -> None:
    d = desc.irq_data
    if not irqd_is_started(d):
        return
    desc.depth = 1
    chip = d.chip
    if chip.irq_shutdown is not None:
        chip.irq_shutdown(d)
        irq_state_set_disabled(desc)
        irq_state_set_masked(desc)
    else:
        _irq_disable(desc, True)
    irqd_clear(d, IRQD_IRQ_STARTED)


def irq_shutdown_and_deactivate(desc: irq_desc) -> None:
    irq_shutdown(desc)
    irq_domain_deactivate_irq(desc.irq_data)


# -- affinity (kernel/irq/manage.c) -------------------------------------------------------
def irq_do_set_affinity(d: irq_data, mask: frozenset[int], force: bool) -> int:
    """Ask the chip to target ``mask``; record it as the IRQ's affinity on success."""
    chip = d.chip
    if chip is None or chip.irq_set_affinity is None:
        return -EINVAL
    mask = frozenset(mask)
    if not mask:
        return -EINVAL
    ret = chip.irq_set_affinity(d, mask, force)
    if ret in (IRQ_SET_MASK_OK, IRQ_SET_MASK_OK_DONE):
        d.common.affinity = mask
        ret = 0
    elif ret == IRQ_SET_MASK_OK_NOCOPY:
        ret = 0
    return ret


def irq_setup_affinity(desc: irq_desc) -> int:
    """Target the IRQ's affinity (or every CPU) at startup."""
    d = desc.irq_data
    mask = d.common.affinity
    online = desc.k.irq.default_affinity()
    if not (irqd_affinity_is_managed(d) or irqd_has_set(d, IRQD_AFFINITY_SET)) or \
            not mask & online:
        mask = online
    return irq_do_set_affinity(d, mask & online, False)


# -- resend (kernel/irq/resend.c) ----------------------------------------------------------
def try_retrigger(desc: irq_desc) -> bool:
    d = desc.irq_data
    if d.chip.irq_retrigger is not None:
        return bool(d.chip.irq_retrigger(d))
    return bool(irq_chip_retrigger_hierarchy(d))


def check_irq_resend(desc: irq_desc, inject: bool) -> int:
    """Replay an interrupt that was flagged pending while disabled; 0 or -errno."""
    if irqd_is_level_type(desc.irq_data):
        desc.istate = desc.istate & ~IRQS_PENDING
        return -EINVAL
    istate = desc.istate
    if istate & IRQS_REPLAY:
        return -EBUSY
    if not istate & IRQS_PENDING and not inject:
        return 0
    desc.istate = istate & ~IRQS_PENDING
    if not try_retrigger(desc):
        return -EINVAL  # x86 has no software resend (no CONFIG_HARDIRQS_SW_RESEND)
    desc.istate = desc.istate | IRQS_REPLAY
    return 0


# -- hierarchy helpers ----------------------------------------------------------------------
def _parent(d: irq_data, where: str) -> irq_data:
    """``d->parent_data``, which these helpers follow unchecked, as Linux's do: NULL once
    the hierarchy is freed under a CPU still handling the IRQ."""
    p = d.parent_data
    if p is None:
        raise NullPointerDereference(f"irq_data(IRQ {d.irq}).parent_data", where)
    return p


def irq_chip_ack_parent(d: irq_data) -> None:
    p = _parent(d, "irq_chip_ack_parent")
    p.chip.irq_ack(p)


def irq_chip_mask_parent(d: irq_data) -> None:
    p = _parent(d, "irq_chip_mask_parent")
    p.chip.irq_mask(p)


def irq_chip_unmask_parent(d: irq_data) -> None:
    p = _parent(d, "irq_chip_unmask_parent")
    p.chip.irq_unmask(p)


def irq_chip_enable_parent(d: irq_data) -> None:
    p = _parent(d, "irq_chip_enable_parent")
    if p.chip.irq_enable is not None:
        p.chip.irq_enable(p)
    else:
        p.chip.irq_unmask(p)


def irq_chip_disable_parent(d: irq_data) -> None:
    p = _parent(d, "irq_chip_disable_parent")
    if p.chip.irq_disable is not None:
        p.chip.irq_disable(p)
    else:
        p.chip.irq_mask(p)


def irq_chip_eoi_parent(d: irq_data) -> None:
    p = _parent(d, "irq_chip_eoi_parent")
    p.chip.irq_eoi(p)


def irq_chip_set_affinity_parent(d: irq_data, mask: frozenset[int], force: bool) -> int:
    p = _parent(d, "irq_chip_set_affinity_parent")
    if p.chip.irq_set_affinity is not None:
        return p.chip.irq_set_affinity(p, mask, force)
    return -ENOSYS


def irq_chip_retrigger_hierarchy(d: irq_data) -> int:
    """The first ``irq_retrigger`` up the hierarchy; 0 if no level can retrigger."""
    p = d.parent_data
    while p is not None:
        if p.chip is not None and p.chip.irq_retrigger is not None:
            return p.chip.irq_retrigger(p)
        p = p.parent_data
    return 0


def irq_chip_compose_msi_msg(d: irq_data, msg: msi_msg) -> int:
    """Compose the MSI message with the nearest chip (from the top) that can."""
    pos: irq_data | None = d
    while pos is not None:
        chip = pos.chip
        if chip is not None and chip.irq_compose_msi_msg is not None:
            chip.irq_compose_msi_msg(pos, msg)
            return 0
        pos = pos.parent_data
    return -ENOSYS


def irq_chip_write_msi_msg(d: irq_data, msg: msi_msg) -> None:
    d.chip.irq_write_msi_msg(d, msg)


# -- handler installation (chip.c), on k.irq ------------------------------------------------
def irq_do_set_handler(desc: irq_desc, handle: Any, is_chained: bool, name: str | None) -> None:
    """``__irq_do_set_handler``: install (or, with None, uninstall) a flow handler."""
    if handle is None:
        handle = handle_bad_irq
    else:
        d: irq_data | None = desc.irq_data
        while d is not None and irq_chip_is_none(d.chip):
            if is_chained:
                raise IrqError(f"irq_set_chained_handler: IRQ {desc.irq} has no chip yet")
            d = d.parent_data
        if d is None:
            raise IrqError(f"irq_set_handler: IRQ {desc.irq} has no chip at any level")
    if handle is handle_bad_irq:
        if not irq_chip_is_none(desc.irq_data.chip):
            mask_ack_irq(desc)
        irq_state_set_disabled(desc)
        if is_chained:
            desc.action = None
        desc.depth = 1
    desc.handle_irq = handle
    desc.name = name
    if handle is not handle_bad_irq and is_chained:
        desc.status_use_accessors |= IRQ_NOPROBE | IRQ_NOREQUEST | IRQ_NOTHREAD
        desc.action = chained_action
        irq_activate_and_startup(desc, True)


class ChipMixin(DescTableMixin):
    """``k.irq`` methods of ``kernel/irq/chip.c`` that name an IRQ by number."""

    def _desc_locked(self, irq: int, what: str) -> tuple[irq_desc, bool]:
        desc = self.irq_to_desc(irq)
        if desc is None:
            raise IrqError(f"{what}: IRQ {irq} has no descriptor")
        return desc, raw_spin_lock_irqsave(desc.lock)

    def irq_set_chip(self, irq: int, chip: irq_chip | None) -> int:
        desc, flags = self._desc_locked(irq, "irq_set_chip")
        desc.irq_data.chip = chip if chip is not None else no_irq_chip
        raw_spin_unlock_irqrestore(desc.lock, flags)
        return 0

    def irq_set_handler_data(self, irq: int, data: Any) -> int:
        desc, flags = self._desc_locked(irq, "irq_set_handler_data")
        desc.irq_common_data.handler_data = data
        raw_spin_unlock_irqrestore(desc.lock, flags)
        return 0

    def irq_set_chip_data(self, irq: int, data: Any) -> int:
        desc, flags = self._desc_locked(irq, "irq_set_chip_data")
        desc.irq_data.chip_data = data
        raw_spin_unlock_irqrestore(desc.lock, flags)
        return 0

    def irq_get_chip(self, irq: int) -> irq_chip | None:
        d = self.irq_get_irq_data(irq)
        return d.chip if d is not None else None

    def irq_get_chip_data(self, irq: int) -> Any:
        d = self.irq_get_irq_data(irq)
        return d.chip_data if d is not None else None

    def irq_get_handler_data(self, irq: int) -> Any:
        d = self.irq_get_irq_data(irq)
        return d.common.handler_data if d is not None else None

    def irq_set_msi_desc_off(self, irq_base: int, irq_offset: int, entry: Any) -> int:
        desc, flags = self._desc_locked(irq_base + irq_offset, "irq_set_msi_desc")
        desc.irq_common_data.msi_desc = entry
        if entry is not None and not irq_offset:
            entry.irq = irq_base
        raw_spin_unlock_irqrestore(desc.lock, flags)
        return 0

    def irq_set_msi_desc(self, irq: int, entry: Any) -> int:
        return self.irq_set_msi_desc_off(irq, 0, entry)

    def irq_get_msi_desc(self, irq: int) -> Any:
        d = self.irq_get_irq_data(irq)
        return d.common.msi_desc if d is not None else None

    def irq_set_handler_name(self, irq: int, handle: Any, is_chained: bool,
                             name: str | None) -> None:
        """``__irq_set_handler``: install ``handle`` under the descriptor lock."""
        desc, flags = self._desc_locked(irq, "irq_set_handler")
        try:
            irq_do_set_handler(desc, handle, is_chained, name)
        finally:
            raw_spin_unlock_irqrestore(desc.lock, flags)

    def irq_set_handler(self, irq: int, handle: Any) -> None:
        self.irq_set_handler_name(irq, handle, False, None)

    def irq_set_chip_and_handler_name(self, irq: int, chip: irq_chip | None, handle: Any,
                                      name: str | None) -> None:
        self.irq_set_chip(irq, chip)
        self.irq_set_handler_name(irq, handle, False, name)

    def irq_set_chip_and_handler(self, irq: int, chip: irq_chip | None, handle: Any) -> None:
        self.irq_set_chip_and_handler_name(irq, chip, handle, None)

    def irq_set_chained_handler_and_data(self, irq: int, handle: Any, data: Any) -> None:
        """Make ``handle`` the demultiplexing flow handler of ``irq`` (None removes it)."""
        desc, flags = self._desc_locked(irq, "irq_set_chained_handler_and_data")
        try:
            desc.irq_common_data.handler_data = data
            irq_do_set_handler(desc, handle, True, None)
        finally:
            raw_spin_unlock_irqrestore(desc.lock, flags)

    def irq_set_chained_handler(self, irq: int, handle: Any) -> None:
        self.irq_set_handler_name(irq, handle, True, None)

    def irq_modify_status(self, irq: int, clr: int, set_: int) -> None:
        desc, flags = self._desc_locked(irq, "irq_modify_status")
        desc.status_use_accessors = (desc.status_use_accessors & ~clr) | set_
        raw_spin_unlock_irqrestore(desc.lock, flags)

    def irq_set_status_flags(self, irq: int, set_: int) -> None:
        self.irq_modify_status(irq, 0, set_)

    def irq_clear_status_flags(self, irq: int, clr: int) -> None:
        self.irq_modify_status(irq, clr, 0)
