"""PCI MSI and MSI-X (``drivers/pci/msi/{api,msi,irqdomain}.c``, ``drivers/pci/irq.c``).

A driver asks for vectors with ``pci_alloc_irq_vectors(dev, min, max, flags)``
(``PCI_IRQ_MSIX``, ``PCI_IRQ_MSI``, ``PCI_IRQ_AFFINITY``), finds each vector's
Linux IRQ with ``pci_irq_vector(dev, n)``, installs handlers with
``request_irq`` (or ``pci_request_irq``), and gives everything back with
``pci_free_irq_vectors(dev)``. Everything reaches the device through config
cycles and MMIO, as in Linux:

MSI-X
    MSI-X is enabled with Function Mask set while it is set up; the table is
    mapped (``ioremap``) from the BAR and offset the capability's Table
    Offset/BIR name; one ``msi_desc`` per vector; IRQs come from the
    device's MSI domain (``dev.dev.msi_domain`` if set — the VMD sets it for
    the devices below it — else x86's default PCI-MSI domain), which
    activates each at once and so writes its message into the table; then
    every entry is masked and Function Mask cleared. ``request_irq``
    unmasks an entry through its Vector Control word; a vector the device
    fired while masked is delivered then (its Pending Bit, in the device).
MSI
    one descriptor for a block of vectors; masking through the capability's
    Mask Bits, the message in its Address/Data registers. x86's default
    domain grants one vector (no multi-MSI without interrupt remapping).

The domain may ask for fewer vectors (a positive return of ``msi_prepare``,
or a partial allocation); ``pci_alloc_irq_vectors`` then retries with that
many, down to ``min``. Any failure leaves MSI/MSI-X disabled and nothing
allocated. A device enabled with ``pcim_enable_device`` gets its vectors
freed automatically when its driver unbinds. ``pci_restore_state`` rewrites
the enable bits, messages and masks (``k.pci.restore_msi_state``).

Per-device MSI domains (v6.2+, ``kernel/irq/msi_parent.py``): when the device's
domain is an MSI parent (the x86 vector domain since v6.2, a VMD since v6.17),
enabling MSI or MSI-X first creates the device's own domain from
``pci_msi_template`` or ``pci_msix_template``; its chip is
``PCI-MSIX-<device>`` and its hwirq the vector's index. Which scheme runs is
``k.irq.pci_msi_domains`` (``global``: the x86 PCI-MSI domain of v4.x-v6.1;
``per-device``: v6.2-v6.17; ``per-device-startup``: v6.18's templates with
``irq_startup``/``irq_shutdown``, 54f45a30c0d0, the default).

Not modelled: INTx (``PCI_IRQ_INTX`` alone yields -ENOSPC), dynamic MSI-X
allocation, quirks.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, cast

from vmdsim.hw.regs import (
    PCI_COMMAND,
    PCI_COMMAND_INTX_DISABLE,
    PCI_MSI_ADDRESS_HI,
    PCI_MSI_ADDRESS_LO,
    PCI_MSI_DATA_64,
    PCI_MSI_FLAGS,
    PCI_MSI_FLAGS_64BIT,
    PCI_MSI_FLAGS_ENABLE,
    PCI_MSI_FLAGS_MASKBIT,
    PCI_MSI_FLAGS_QMASK,
    PCI_MSI_FLAGS_QSIZE,
    PCI_MSI_MASK_64,
    PCI_MSIX_ENTRY_CTRL_MASKBIT,
    PCI_MSIX_ENTRY_DATA,
    PCI_MSIX_ENTRY_LOWER_ADDR,
    PCI_MSIX_ENTRY_SIZE,
    PCI_MSIX_ENTRY_UPPER_ADDR,
    PCI_MSIX_ENTRY_VECTOR_CTRL,
    PCI_MSIX_FLAGS,
    PCI_MSIX_FLAGS_ENABLE,
    PCI_MSIX_FLAGS_MASKALL,
    PCI_MSIX_FLAGS_QSIZE,
    PCI_MSIX_TABLE,
    PCI_MSIX_TABLE_BIR,
    PCI_MSIX_TABLE_OFFSET,
)
from vmdsim.kernel.base.devres import devm_add_action
from vmdsim.kernel.errno import EINVAL, ENODEV, ENOMEM, ENOSPC, ENOTSUPP, ERANGE
from vmdsim.kernel.io import readl, writel
from vmdsim.kernel.irq.affinity import (
    irq_affinity,
    irq_affinity_desc,
    irq_calc_affinity_vectors,
    irq_create_affinity_masks,
)
from vmdsim.kernel.irq.chip import (
    irq_chip,
    irq_chip_mask_parent,
    irq_chip_unmask_parent,
    irq_data_get_msi_desc,
)
from vmdsim.kernel.irq.flags import IRQCHIP_ONESHOT_SAFE, IRQF_ONESHOT, IRQF_SHARED, IrqError
from vmdsim.kernel.irq.irqdomain import (
    DOMAIN_BUS_PCI_DEVICE_MSI,
    DOMAIN_BUS_PCI_DEVICE_MSIX,
    DOMAIN_BUS_PCI_MSI,
    fwnode_handle,
    irq_domain,
    irq_domain_update_bus_token,
)
from vmdsim.kernel.irq.msi import (
    MSI_FLAG_ACTIVATE_EARLY,
    MSI_FLAG_DEV_SYSFS,
    MSI_FLAG_FREE_MSI_DESCS,
    MSI_FLAG_LEVEL_CAPABLE,
    MSI_FLAG_MULTI_PCI_MSI,
    MSI_FLAG_PCI_MSIX,
    MSI_FLAG_USE_DEF_CHIP_OPS,
    MSI_FLAG_USE_DEF_DOM_OPS,
    msi_alloc_info_t,
    msi_create_irq_domain,
    msi_desc,
    msi_device_data,
    msi_device_data_get,
    msi_domain_alloc_irqs_all_locked,
    msi_domain_free_irqs_all_locked,
    msi_domain_info,
    msi_domain_ops,
    msi_first_desc,
    msi_for_each_desc,
    msi_free_device_data_if_unused,
    msi_free_msi_descs,
    msi_get_virq,
    msi_insert_msi_desc,
    msi_msg,
    msi_setup_device_data,
)
from vmdsim.kernel.irq.msi_parent import (
    MSI_DEFAULT_DOMAIN,
    MSI_FLAG_PCI_MSI_MASK_PARENT,
    MSI_FLAG_PCI_MSIX_ALLOC_DYN,
    dev_get_msi_domain,
    irq_domain_is_msi_parent,
    msi_create_device_irq_domain,
    msi_device_data_release,
    msi_domain_template,
    msi_get_device_domain,
    msi_match_device_irq_domain,
    msi_remove_device_irq_domain,
)
from vmdsim.kernel.locking import (
    mutex_lock,
    mutex_unlock,
    raw_spin_lock_irqsave,
    raw_spin_unlock_irqrestore,
)
from vmdsim.kernel.pci.access import (
    pci_read_config_dword,
    pci_read_config_word,
    pci_write_config_dword,
    pci_write_config_word,
)
from vmdsim.kernel.pci.pci_h import (
    PCI_D0,
    pci_dev,
    pci_dev_is_disconnected,
    pci_domain_nr,
    pci_resource_flags,
    pci_resource_start,
)
from vmdsim.kernel.pci.resource import IORESOURCE_UNSET
from vmdsim.kernel.pci.subsys import pci_info

if TYPE_CHECKING:
    from vmdsim.kernel.irq.irqdesc import irq_data

PCI_IRQ_INTX = 1 << 0
PCI_IRQ_LEGACY = PCI_IRQ_INTX
PCI_IRQ_MSI = 1 << 1
PCI_IRQ_MSIX = 1 << 2
PCI_IRQ_AFFINITY = 1 << 3
PCI_IRQ_ALL_TYPES = PCI_IRQ_INTX | PCI_IRQ_MSI | PCI_IRQ_MSIX

PCI_MSI_DATA_32 = 8
PCI_MSI_MASK_32 = 12


# -- struct device <-> pci_dev ----------------------------------------------------------------
def to_pci_dev(dev: Any) -> pci_dev:
    """The ``pci_dev`` a ``struct device`` is embedded in (Linux: ``container_of``)."""
    if isinstance(dev, pci_dev):
        return dev
    md = msi_device_data_get(dev)
    if md is not None and md.pdev is not None:
        return md.pdev
    pdev = dev.k.pci.find_pci_dev(dev)
    if pdev is not None:
        return pdev
    raise IrqError(f"to_pci_dev({dev!r}): not the device of any pci_dev")


def msi_desc_to_pci_dev(desc: msi_desc) -> pci_dev:
    return desc.pdev


def _msi_data(dev: pci_dev) -> msi_device_data:
    md = msi_setup_device_data(dev.dev)
    md.pdev = dev
    return md


def pci_msi_get_device_domain(dev: pci_dev) -> irq_domain | None:
    """The domain the device's vectors come from: its own device domain (v6.2+) if it
    has one, else the domain the bus gave it, else x86's default (created at boot)."""
    own = msi_get_device_domain(dev.dev, MSI_DEFAULT_DOMAIN)
    return own if own is not None else dev_get_msi_domain(dev.dev)


def _domain_supports(dev: pci_dev, flag: int) -> bool:
    """``pci_msi_domain_supports``: a global domain's info flags say; an MSI parent's
    ``supported_flags`` say before any device domain exists."""
    domain = dev_get_msi_domain(dev.dev)
    if irq_domain_is_msi_parent(domain):
        return bool(domain.msi_parent_ops.supported_flags & flag)
    return bool(domain.host_data.flags & flag)


# -- config-space helpers -----------------------------------------------------------------------
def pci_msix_vec_count(dev: pci_dev) -> int:
    """MSI-X table size, or -EINVAL without an MSI-X capability."""
    if not dev.msix_cap:
        return -EINVAL
    _, control = pci_read_config_word(dev, dev.msix_cap + PCI_MSIX_FLAGS)
    return (control & PCI_MSIX_FLAGS_QSIZE) + 1


def pci_msi_vec_count(dev: pci_dev) -> int:
    """Vectors the MSI capability can send (Multiple Message Capable), or -EINVAL."""
    if not dev.msi_cap:
        return -EINVAL
    _, msgctl = pci_read_config_word(dev, dev.msi_cap + PCI_MSI_FLAGS)
    return 1 << ((msgctl & PCI_MSI_FLAGS_QMASK) >> 1)


def pci_msix_clear_and_set_ctrl(dev: pci_dev, clear: int, set_: int) -> None:
    pos = dev.msix_cap + PCI_MSIX_FLAGS
    _, ctrl = pci_read_config_word(dev, pos)
    pci_write_config_word(dev, pos, (ctrl & ~clear) | set_)


def pci_msi_set_enable(dev: pci_dev, enable: bool) -> None:
    pos = dev.msi_cap + PCI_MSI_FLAGS
    _, control = pci_read_config_word(dev, pos)
    control &= ~PCI_MSI_FLAGS_ENABLE
    if enable:
        control |= PCI_MSI_FLAGS_ENABLE
    pci_write_config_word(dev, pos, control)


def pci_intx_for_msi(dev: pci_dev, enable: bool) -> None:
    """``pci_intx``: the Command register's INTx Disable bit."""
    _, cmd = pci_read_config_word(dev, PCI_COMMAND)
    new = cmd & ~PCI_COMMAND_INTX_DISABLE if enable else cmd | PCI_COMMAND_INTX_DISABLE
    if new != cmd:
        pci_write_config_word(dev, PCI_COMMAND, new)


# -- masking and messages ------------------------------------------------------------------------
def pci_msix_write_vector_ctrl(desc: msi_desc, ctrl: int) -> None:
    writel(ctrl, desc.mask_base + PCI_MSIX_ENTRY_VECTOR_CTRL)


def pci_msix_mask(desc: msi_desc) -> None:
    if not desc.can_mask:
        return
    desc.msix_ctrl = desc.msix_ctrl | PCI_MSIX_ENTRY_CTRL_MASKBIT
    pci_msix_write_vector_ctrl(desc, desc.msix_ctrl)
    readl(desc.mask_base)  # flush the posted write


def pci_msix_unmask(desc: msi_desc) -> None:
    if not desc.can_mask:
        return
    desc.msix_ctrl = desc.msix_ctrl & ~PCI_MSIX_ENTRY_CTRL_MASKBIT
    pci_msix_write_vector_ctrl(desc, desc.msix_ctrl)


def pci_msi_update_mask(desc: msi_desc, clear: int, set_: int) -> None:
    dev = desc.pdev
    md = _msi_data(dev)
    flags = raw_spin_lock_irqsave(md.msi_lock)
    desc.msi_mask = (desc.msi_mask & ~clear) | set_
    pci_write_config_dword(dev, desc.mask_pos, desc.msi_mask)
    raw_spin_unlock_irqrestore(md.msi_lock, flags)


def msi_multi_mask(desc: msi_desc) -> int:
    if desc.multi_cap >= 5:
        return 0xFFFFFFFF
    return (1 << (1 << desc.multi_cap)) - 1


def pci_msi_mask(desc: msi_desc, mask: int) -> None:
    """Set ``mask``'s bits in the MSI Mask Bits register, if the function has one."""
    if desc.can_mask:
        pci_msi_update_mask(desc, 0, mask)


def pci_msi_unmask(desc: msi_desc, mask: int) -> None:
    if desc.can_mask:
        pci_msi_update_mask(desc, mask, 0)


def pci_msi_mask_irq(d: irq_data) -> None:
    """The ``irq_mask`` of every PCI/MSI chip (MSI_FLAG_USE_DEF_CHIP_OPS)."""
    desc = irq_data_get_msi_desc(d)
    if desc.is_msix:
        pci_msix_mask(desc)
    else:
        pci_msi_mask(desc, 1 << (d.irq - desc.irq))


def pci_msi_unmask_irq(d: irq_data) -> None:
    desc = irq_data_get_msi_desc(d)
    if desc.is_msix:
        pci_msix_unmask(desc)
    else:
        pci_msi_unmask(desc, 1 << (d.irq - desc.irq))


def __pci_write_msi_msg(entry: msi_desc, msg: msi_msg) -> None:
    """Write ``msg`` into the device (masking an MSI-X entry while it changes)."""
    dev = entry.pdev
    if dev.current_state != PCI_D0 or pci_dev_is_disconnected(dev) or entry.is_virtual:
        pass  # don't touch the hardware now; pci_restore_msi_state() will
    elif entry.is_msix:
        base = entry.mask_base
        ctrl = entry.msix_ctrl
        unmasked = not ctrl & PCI_MSIX_ENTRY_CTRL_MASKBIT
        if unmasked:
            pci_msix_write_vector_ctrl(entry, ctrl | PCI_MSIX_ENTRY_CTRL_MASKBIT)
        writel(msg.address_lo, base + PCI_MSIX_ENTRY_LOWER_ADDR)
        writel(msg.address_hi, base + PCI_MSIX_ENTRY_UPPER_ADDR)
        writel(msg.data, base + PCI_MSIX_ENTRY_DATA)
        if unmasked:
            pci_msix_write_vector_ctrl(entry, ctrl)
        readl(base + PCI_MSIX_ENTRY_DATA)  # make sure the device has seen it
    else:
        pos = dev.msi_cap
        _, msgctl = pci_read_config_word(dev, pos + PCI_MSI_FLAGS)
        msgctl = (msgctl & ~PCI_MSI_FLAGS_QSIZE) | entry.multiple << 4
        pci_write_config_word(dev, pos + PCI_MSI_FLAGS, msgctl)
        pci_write_config_dword(dev, pos + PCI_MSI_ADDRESS_LO, msg.address_lo)
        if entry.is_64:
            pci_write_config_dword(dev, pos + PCI_MSI_ADDRESS_HI, msg.address_hi)
            pci_write_config_word(dev, pos + PCI_MSI_DATA_64, msg.data)
        else:
            pci_write_config_word(dev, pos + PCI_MSI_DATA_32, msg.data)
        pci_read_config_word(dev, pos + PCI_MSI_FLAGS)
    entry.msg = msg.copy()


pci_write_msi_msg_desc = __pci_write_msi_msg


def pci_msi_domain_write_msg(d: irq_data, msg: msi_msg) -> None:
    """The ``irq_write_msi_msg`` of every PCI/MSI chip."""
    __pci_write_msi_msg(irq_data_get_msi_desc(d), msg)


# -- the PCI/MSI domain ---------------------------------------------------------------------------
def pci_dev_id(dev: pci_dev) -> int:
    return dev.bus.number << 8 | dev.devfn


def pci_msi_domain_calc_hwirq(desc: msi_desc) -> int:
    dev = desc.pdev
    return desc.msi_index | pci_dev_id(dev) << 11 | (pci_domain_nr(dev.bus) & 0xFFFFFFFF) << 27


def pci_msi_domain_set_desc(arg: msi_alloc_info_t, desc: msi_desc) -> None:
    arg.desc = desc
    arg.hwirq = pci_msi_domain_calc_hwirq(desc)


def pci_msi_domain_check_cap(domain: irq_domain, info: msi_domain_info, dev: Any) -> int:
    desc = msi_first_desc(dev)
    if desc is None:
        return 0
    if not desc.is_msix and desc.nvec_used > 1 and not info.flags & MSI_FLAG_MULTI_PCI_MSI:
        return 1
    if desc.is_msix and not info.flags & MSI_FLAG_PCI_MSIX:
        return -ENOTSUPP
    return 0


def pci_msi_create_irq_domain(fwnode: fwnode_handle | None, info: msi_domain_info,
                              parent: irq_domain | None, *,
                              owner: str | None = "irq") -> irq_domain | None:
    """A PCI/MSI domain; ``parent=None`` is allowed (the VMD's: no hierarchy below it).

    Fills in the PCI defaults (``set_desc``, ``msi_check``; mask, unmask and
    message writing for the chip), makes the domain activate IRQs early and
    free descriptors with their IRQs, as Linux does for every PCI/MSI domain.
    """
    info.flags &= ~MSI_FLAG_LEVEL_CAPABLE
    if info.flags & MSI_FLAG_USE_DEF_DOM_OPS:
        if info.ops is None:
            info.ops = msi_domain_ops()
        if info.ops.set_desc is None:
            info.ops.set_desc = pci_msi_domain_set_desc
        if info.ops.msi_check is None:
            info.ops.msi_check = pci_msi_domain_check_cap
    if info.flags & MSI_FLAG_USE_DEF_CHIP_OPS:
        chip = info.chip
        assert chip is not None  # USE_DEF_CHIP_OPS: the domain's info has a chip to fill in
        if chip.irq_write_msi_msg is None:
            chip.irq_write_msi_msg = pci_msi_domain_write_msg
        if chip.irq_mask is None:
            chip.irq_mask = pci_msi_mask_irq
        if chip.irq_unmask is None:
            chip.irq_unmask = pci_msi_unmask_irq
    info.flags |= MSI_FLAG_FREE_MSI_DESCS | MSI_FLAG_ACTIVATE_EARLY
    cast(irq_chip, info.chip).flags |= IRQCHIP_ONESHOT_SAFE  # a PCI/MSI info has a chip
    info.bus_token = DOMAIN_BUS_PCI_MSI
    k = fwnode.k if fwnode is not None else parent.k if parent is not None else None
    domain = msi_create_irq_domain(fwnode, info, parent, k=k, owner=owner)
    if domain is not None:
        irq_domain_update_bus_token(domain, DOMAIN_BUS_PCI_MSI)
    return domain


def _setup_msi_irqs(dev: pci_dev, nvec: int) -> int:
    domain = pci_msi_get_device_domain(dev)
    if domain is None:
        return -ENODEV
    return msi_domain_alloc_irqs_all_locked(domain, dev.dev, nvec)


def pci_free_msi_irqs(dev: pci_dev) -> None:
    """Free the IRQs and descriptors, unmap the MSI-X table."""
    md = msi_device_data_get(dev.dev)
    if md is None:
        return
    if md.domain is not None:
        msi_domain_free_irqs_all_locked(md.domain, dev.dev)
    msi_free_msi_descs(dev.dev)
    if md.msix_base is not None:
        dev.k.io.iounmap(md.msix_base)
        md.msix_base = None


# -- MSI-X -----------------------------------------------------------------------------------------
def msix_map_region(dev: pci_dev, nr_entries: int) -> Any:
    _, table_offset = pci_read_config_dword(dev, dev.msix_cap + PCI_MSIX_TABLE)
    bir = table_offset & PCI_MSIX_TABLE_BIR
    flags = pci_resource_flags(dev, bir)
    if not flags or flags & IORESOURCE_UNSET:
        return None
    phys_addr = pci_resource_start(dev, bir) + (table_offset & PCI_MSIX_TABLE_OFFSET)
    return dev.k.io.ioremap(phys_addr, nr_entries * PCI_MSIX_ENTRY_SIZE,
                            caller=f"msix_map_region {dev!r}")


def msix_setup_msi_descs(dev: pci_dev, nvec: int,
                         masks: list[irq_affinity_desc] | None) -> int:
    md = _msi_data(dev)
    for i in range(nvec):
        desc = dev.k.mem.kzalloc(msi_desc, dev.dev, 1, [masks[i]] if masks else None,
                                 owner="irq")
        if desc is None:
            return -ENOMEM
        desc.pdev = dev
        desc.is_msix = True
        desc.is_64 = True
        desc.default_irq = dev.irq
        desc.mask_base = md.msix_base + i * PCI_MSIX_ENTRY_SIZE
        desc.can_mask = True
        desc.msix_ctrl = readl(desc.mask_base + PCI_MSIX_ENTRY_VECTOR_CTRL)
        msi_insert_msi_desc(dev.dev, desc, i)
    return 0


def msix_mask_all(base: Any, tsize: int) -> None:
    for i in range(tsize):
        writel(PCI_MSIX_ENTRY_CTRL_MASKBIT,
               base + i * PCI_MSIX_ENTRY_SIZE + PCI_MSIX_ENTRY_VECTOR_CTRL)


def msix_capability_init(dev: pci_dev, nvec: int, affd: irq_affinity | None) -> int:
    md = _msi_data(dev)
    # Mask everything (Function Mask) and enable, so the table is accessible.
    pci_msix_clear_and_set_ctrl(dev, 0, PCI_MSIX_FLAGS_MASKALL | PCI_MSIX_FLAGS_ENABLE)
    dev.msix_enabled = True
    _, control = pci_read_config_word(dev, dev.msix_cap + PCI_MSIX_FLAGS)
    tsize = (control & PCI_MSIX_FLAGS_QSIZE) + 1
    md.msix_base = msix_map_region(dev, tsize)
    if md.msix_base is None:
        ret = -ENOMEM
    else:
        masks = irq_create_affinity_masks(nvec, affd, dev.k.ncpus) if affd else None
        ret = msix_setup_msi_descs(dev, nvec, masks)
        if not ret:
            ret = _setup_msi_irqs(dev, nvec)
        if ret:
            pci_free_msi_irqs(dev)
    if ret:
        dev.msix_enabled = False
        pci_msix_clear_and_set_ctrl(dev, PCI_MSIX_FLAGS_MASKALL | PCI_MSIX_FLAGS_ENABLE, 0)
        return ret
    pci_intx_for_msi(dev, False)
    msix_mask_all(md.msix_base, tsize)
    pci_msix_clear_and_set_ctrl(dev, PCI_MSIX_FLAGS_MASKALL, 0)
    return 0


def pci_msi_supported(dev: pci_dev, nvec: int) -> bool:
    return nvec >= 1


def __pci_enable_msix_range(dev: pci_dev, minvec: int, maxvec: int,
                            affd: irq_affinity | None) -> int:
    if maxvec < minvec:
        return -ERANGE
    if dev.msix_enabled:
        raise IrqError(f"{dev!r}: MSI-X enabled twice (pci_alloc_irq_vectors without free)")
    if dev.msi_enabled:
        pci_info(dev, "can't enable MSI-X (MSI already enabled)")
        return -EINVAL
    if not pci_msi_supported(dev, minvec) or dev.current_state != PCI_D0:
        return -EINVAL
    if not _domain_supports(dev, MSI_FLAG_PCI_MSIX):
        return -ENOTSUPP
    hwsize = pci_msix_vec_count(dev)
    if hwsize < 0:
        return hwsize
    nvec = min(maxvec, hwsize)
    if nvec < minvec:
        return -ENOSPC
    rc = pci_setup_msi_context(dev)
    if rc:
        return rc
    if not pci_setup_msix_device_domain(dev, hwsize):
        return -ENODEV
    return _enable_range(dev, minvec, nvec, affd, msix_capability_init)


def _enable_range(dev: pci_dev, minvec: int, nvec: int, affd: Any, init: Any) -> int:
    """The retry loop both ``__pci_enable_msi_range`` and ``__pci_enable_msix_range`` run:
    spread for affinity, try ``init``; a positive answer is how many it could do."""
    while True:
        if affd is not None:
            nvec = irq_calc_affinity_vectors(minvec, nvec, affd, dev.k.ncpus)
            if nvec < minvec:
                return -ENOSPC
        rc = init(dev, nvec, affd)
        if rc == 0:
            return nvec
        if rc < 0:
            return rc
        if rc < minvec:
            return -ENOSPC
        nvec = rc


def pci_msix_shutdown(dev: pci_dev) -> None:
    if pci_dev_is_disconnected(dev):
        dev.msix_enabled = False
        return
    for desc in msi_for_each_desc(dev.dev):
        pci_msix_mask(desc)  # leave the device as it came out of reset: all masked
    pci_msix_clear_and_set_ctrl(dev, PCI_MSIX_FLAGS_ENABLE, 0)
    pci_intx_for_msi(dev, True)
    dev.msix_enabled = False


def _check_no_handlers(dev: pci_dev) -> None:
    kirq = dev.k.irq
    for desc in msi_for_each_desc(dev.dev):
        for i in range(desc.nvec_used if desc.irq else 0):
            if kirq.irq_has_action(desc.irq + i):
                raise IrqError(f"{dev!r}: freeing MSI vectors while IRQ {desc.irq + i} still "
                               "has a handler (free_irq first)")


def pci_disable_msix(dev: pci_dev) -> None:
    if not dev.msix_enabled:
        return
    md = _msi_data(dev)
    mutex_lock(md.lock)
    try:
        _check_no_handlers(dev)
        pci_msix_shutdown(dev)
        pci_free_msi_irqs(dev)
    finally:
        mutex_unlock(md.lock)


# -- MSI -------------------------------------------------------------------------------------------
def msi_setup_msi_desc(dev: pci_dev, nvec: int, masks: list[irq_affinity_desc] | None) -> int:
    _, control = pci_read_config_word(dev, dev.msi_cap + PCI_MSI_FLAGS)
    desc = dev.k.mem.kzalloc(msi_desc, dev.dev, nvec, masks, owner="irq")
    if desc is None:
        return -ENOMEM
    desc.pdev = dev
    desc.is_64 = bool(control & PCI_MSI_FLAGS_64BIT)
    desc.multi_cap = (control & PCI_MSI_FLAGS_QMASK) >> 1
    desc.multiple = (nvec - 1).bit_length()  # ilog2(roundup_pow_of_two(nvec))
    desc.can_mask = bool(control & PCI_MSI_FLAGS_MASKBIT)
    desc.default_irq = dev.irq
    desc.mask_pos = dev.msi_cap + (PCI_MSI_MASK_64 if desc.is_64 else PCI_MSI_MASK_32)
    if desc.can_mask:
        _, desc.msi_mask = pci_read_config_dword(dev, desc.mask_pos)
    msi_insert_msi_desc(dev.dev, desc, 0)
    return 0


def _msi_write_mask(dev: pci_dev, mask_pos: int, value: int) -> None:
    pci_write_config_dword(dev, mask_pos, value)


def msi_capability_init(dev: pci_dev, nvec: int, affd: irq_affinity | None) -> int:
    if nvec > 1 and not _domain_supports(dev, MSI_FLAG_MULTI_PCI_MSI):
        return 1
    pci_msi_set_enable(dev, False)
    dev.msi_enabled = True
    masks = irq_create_affinity_masks(nvec, affd, dev.k.ncpus) if affd else None
    ret = msi_setup_msi_desc(dev, nvec, masks)
    if ret:
        dev.msi_enabled = False
        return ret
    entry = msi_first_desc(dev.dev)
    assert entry is not None  # msi_setup_msi_desc inserted it
    mmask = msi_multi_mask(entry)
    if entry.can_mask:
        pci_msi_update_mask(entry, 0, mmask)
    # Keep what the error path needs: a failed allocation frees the descriptor.
    can_mask, mask_pos, unmasked = entry.can_mask, entry.mask_pos, entry.msi_mask & ~mmask
    ret = _setup_msi_irqs(dev, nvec)
    if ret:
        if can_mask:
            _msi_write_mask(dev, mask_pos, unmasked)
        pci_free_msi_irqs(dev)
        dev.msi_enabled = False
        return ret
    pci_intx_for_msi(dev, False)
    pci_msi_set_enable(dev, True)
    dev.irq = entry.irq
    return 0


def __pci_enable_msi_range(dev: pci_dev, minvec: int, maxvec: int,
                           affd: irq_affinity | None) -> int:
    if not pci_msi_supported(dev, minvec) or dev.current_state != PCI_D0:
        return -EINVAL
    if dev.msix_enabled:
        pci_info(dev, "can't enable MSI (MSI-X already enabled)")
        return -EINVAL
    if maxvec < minvec:
        return -ERANGE
    if dev.msi_enabled:
        raise IrqError(f"{dev!r}: MSI enabled twice (pci_alloc_irq_vectors without free)")
    nvec = pci_msi_vec_count(dev)
    if nvec < 0:
        return nvec
    if nvec < minvec:
        return -ENOSPC
    rc = pci_setup_msi_context(dev)
    if rc:
        return rc
    if not pci_setup_msi_device_domain(dev):
        return -ENODEV
    nvec = min(nvec, maxvec)
    return _enable_range(dev, minvec, nvec, affd, msi_capability_init)


def pci_msi_shutdown(dev: pci_dev) -> None:
    pci_msi_set_enable(dev, False)
    pci_intx_for_msi(dev, True)
    dev.msi_enabled = False
    desc = msi_first_desc(dev.dev)
    if desc is not None:
        if desc.can_mask:  # return the device with MSI unmasked, as after reset
            pci_msi_update_mask(desc, msi_multi_mask(desc), 0)
        dev.irq = desc.default_irq


def pci_disable_msi(dev: pci_dev) -> None:
    if not dev.msi_enabled:
        return
    md = _msi_data(dev)
    mutex_lock(md.lock)
    try:
        _check_no_handlers(dev)
        pci_msi_shutdown(dev)
        pci_free_msi_irqs(dev)
    finally:
        mutex_unlock(md.lock)


# -- managed (pcim) --------------------------------------------------------------------------------
def pcim_msi_release(dev: pci_dev) -> None:
    md = msi_device_data_get(dev.dev)
    if md is None or not md.is_msi_managed:
        return
    pci_free_irq_vectors(dev)
    md.is_msi_managed = False
    msi_free_device_data_if_unused(dev.dev)


def pci_setup_msi_context(dev: pci_dev) -> int:
    """Per-device MSI data; for a pcim-managed device, free the vectors on unbind."""
    md = _msi_data(dev)
    dev.k.pci.restore_msi_state = pci_restore_msi_state
    if not md.devres_added and irq_domain_is_msi_parent(dev_get_msi_domain(dev.dev)):
        # msi_setup_device_data's devres (registered before pcim's, so released after
        # it): it removes the device domain at unbind. The model adds it only where a
        # device domain can exist.
        if devm_add_action(dev.dev, msi_device_data_release, dev.dev,
                           "msi_device_data_release"):
            return -ENOMEM
        md.devres_added = True
    if not dev.is_managed or md.is_msi_managed:
        return 0
    ret = devm_add_action(dev.dev, pcim_msi_release, dev, "pcim_msi_release")
    if ret:
        return ret
    md.is_msi_managed = True
    return 0


# -- the API ---------------------------------------------------------------------------------------
def pci_alloc_irq_vectors_affinity(dev: pci_dev, min_vecs: int, max_vecs: int, flags: int,
                                   affd: irq_affinity | None) -> int:
    """Allocate between ``min_vecs`` and ``max_vecs`` vectors; how many, or -errno."""
    if flags & PCI_IRQ_AFFINITY:
        if affd is None:
            affd = irq_affinity()
    else:
        affd = None
    nvecs = -ENOSPC
    if flags & PCI_IRQ_MSIX:
        nvecs = __pci_enable_msix_range(dev, min_vecs, max_vecs, affd)
        if nvecs > 0:
            return nvecs
    if flags & PCI_IRQ_MSI:
        nvecs = __pci_enable_msi_range(dev, min_vecs, max_vecs, affd)
        if nvecs > 0:
            return nvecs
    _release_if_unused(dev)
    return nvecs


def pci_alloc_irq_vectors(dev: pci_dev, min_vecs: int, max_vecs: int, flags: int) -> int:
    return pci_alloc_irq_vectors_affinity(dev, min_vecs, max_vecs, flags, None)


def pci_free_irq_vectors(dev: pci_dev) -> None:
    """Disable MSI-X/MSI and free every vector (each must have had its ``free_irq``)."""
    pci_disable_msix(dev)
    pci_disable_msi(dev)
    _release_if_unused(dev)


def _release_if_unused(dev: pci_dev) -> None:
    md = msi_device_data_get(dev.dev)
    if md is not None and not md.is_msi_managed:
        msi_free_device_data_if_unused(dev.dev)


def pci_irq_vector(dev: pci_dev, nr: int) -> int:
    """The Linux IRQ of vector ``nr``, or -EINVAL."""
    if not dev.msi_enabled and not dev.msix_enabled:
        return -EINVAL  # INTx is not modelled
    irq = msi_get_virq(dev.dev, nr)
    return irq if irq > 0 else -EINVAL


def pci_irq_get_affinity(dev: pci_dev, nr: int) -> frozenset[int] | None:
    """The CPUs vector ``nr`` was spread to (PCI_IRQ_AFFINITY), or None."""
    descs = msi_for_each_desc(dev.dev)
    if not descs:
        return None
    if descs[0].is_msix:
        desc = next((d for d in descs if d.msi_index == nr), None)
        idx = 0
    else:
        desc, idx = descs[0], nr
    if desc is None or not desc.affinity or idx >= len(desc.affinity):
        return None
    return desc.affinity[idx].mask


def pci_request_irq(dev: pci_dev, nr: int, handler: Any, thread_fn: Any, dev_id: Any,
                    name: str) -> int:
    """``request_threaded_irq(pci_irq_vector(dev, nr), ...)`` with IRQF_SHARED."""
    flags = IRQF_SHARED if handler is not None else IRQF_SHARED | IRQF_ONESHOT
    irq = pci_irq_vector(dev, nr)
    if irq < 0:
        return irq
    return dev.k.irq.request_threaded_irq(irq, handler, thread_fn, flags, name, dev_id)


def pci_free_irq(dev: pci_dev, nr: int, dev_id: Any) -> None:
    dev.k.irq.free_irq(pci_irq_vector(dev, nr), dev_id)


# -- resume ----------------------------------------------------------------------------------------
def pci_restore_msi_state(dev: pci_dev) -> None:
    """Rewrite MSI/MSI-X enable, messages and masks after a reset or resume."""
    if dev.msi_enabled:
        entry = msi_first_desc(dev.dev)
        assert entry is not None  # MSI is enabled: its descriptor exists
        pci_intx_for_msi(dev, False)
        pci_msi_set_enable(dev, False)
        __pci_write_msi_msg(entry, entry.msg)
        if entry.can_mask:
            pci_msi_update_mask(entry, 0, 0)
        _, control = pci_read_config_word(dev, dev.msi_cap + PCI_MSI_FLAGS)
        control = (control & ~PCI_MSI_FLAGS_QSIZE) | entry.multiple << 4 | PCI_MSI_FLAGS_ENABLE
        pci_write_config_word(dev, dev.msi_cap + PCI_MSI_FLAGS, control)
    if dev.msix_enabled:
        pci_intx_for_msi(dev, False)
        pci_msix_clear_and_set_ctrl(dev, 0, PCI_MSIX_FLAGS_ENABLE | PCI_MSIX_FLAGS_MASKALL)
        for entry in msi_for_each_desc(dev.dev):
            __pci_write_msi_msg(entry, entry.msg)
            pci_msix_write_vector_ctrl(entry, entry.msix_ctrl)
        pci_msix_clear_and_set_ctrl(dev, PCI_MSIX_FLAGS_MASKALL, 0)



# -- per-device MSI domains (drivers/pci/msi/irqdomain.c, v6.2+) ----------------------------
def pci_device_domain_set_desc(arg: msi_alloc_info_t, desc: msi_desc) -> None:
    """A device domain's hwirq is the vector's index in the device."""
    arg.desc = desc
    arg.hwirq = desc.msi_index


def _cond_mask_parent(d: irq_data, mask: bool) -> None:
    """``cond_mask_parent``/``cond_unmask_parent`` (MSI_FLAG_PCI_MSI_MASK_PARENT)."""
    if d.domain is not None and d.domain.host_data.flags & MSI_FLAG_PCI_MSI_MASK_PARENT:
        (irq_chip_mask_parent if mask else irq_chip_unmask_parent)(d)


def pci_irq_mask_msi(d: irq_data) -> None:
    desc = irq_data_get_msi_desc(d)
    pci_msi_mask(desc, 1 << (d.irq - desc.irq))
    _cond_mask_parent(d, True)


def pci_irq_unmask_msi(d: irq_data) -> None:
    desc = irq_data_get_msi_desc(d)
    _cond_mask_parent(d, False)
    pci_msi_unmask(desc, 1 << (d.irq - desc.irq))


def pci_irq_mask_msix(d: irq_data) -> None:
    pci_msix_mask(irq_data_get_msi_desc(d))
    _cond_mask_parent(d, True)


def pci_irq_unmask_msix(d: irq_data) -> None:
    _cond_mask_parent(d, False)
    pci_msix_unmask(irq_data_get_msi_desc(d))


# 54f45a30c0d0 (v6.18): startup and shutdown only unmask and mask (and start the parent
# where MSI_FLAG_PCI_MSI_STARTUP_PARENT asks, which no modelled parent does): a parent's
# irq_enable/irq_disable is no longer called at startup and shutdown.
def pci_irq_startup_msi(d: irq_data) -> int:
    pci_irq_unmask_msi(d)
    return 0


def pci_irq_shutdown_msi(d: irq_data) -> None:
    pci_irq_mask_msi(d)


def pci_irq_startup_msix(d: irq_data) -> int:
    pci_irq_unmask_msix(d)
    return 0


def pci_irq_shutdown_msix(d: irq_data) -> None:
    pci_irq_mask_msix(d)


MSI_COMMON_FLAGS = MSI_FLAG_FREE_MSI_DESCS | MSI_FLAG_ACTIVATE_EARLY | MSI_FLAG_DEV_SYSFS


def _template(name: str, mask: Any, unmask: Any, startup: Any, shutdown: Any, flags: int,
              bus_token: int) -> msi_domain_template:
    ops = {"irq_startup": startup, "irq_shutdown": shutdown} if startup is not None else {}
    chip = irq_chip(name, irq_mask=mask, irq_unmask=unmask,
                    irq_write_msi_msg=pci_msi_domain_write_msg, flags=IRQCHIP_ONESHOT_SAFE,
                    **ops)
    return msi_domain_template(chip, msi_domain_ops(set_desc=pci_device_domain_set_desc),
                               msi_domain_info(flags=flags, bus_token=bus_token))


_MSI_FLAGS = MSI_COMMON_FLAGS | MSI_FLAG_MULTI_PCI_MSI
_MSIX_FLAGS = MSI_COMMON_FLAGS | MSI_FLAG_PCI_MSIX | MSI_FLAG_PCI_MSIX_ALLOC_DYN
# Static, as in Linux; each device domain works on its own copy.
pci_msi_template = _template("PCI-MSI", pci_irq_mask_msi, pci_irq_unmask_msi,
                             pci_irq_startup_msi, pci_irq_shutdown_msi, _MSI_FLAGS,
                             DOMAIN_BUS_PCI_DEVICE_MSI)
pci_msix_template = _template("PCI-MSIX", pci_irq_mask_msix, pci_irq_unmask_msix,
                              pci_irq_startup_msix, pci_irq_shutdown_msix, _MSIX_FLAGS,
                              DOMAIN_BUS_PCI_DEVICE_MSIX)
# The templates of v6.2-v6.17, before 54f45a30c0d0 gave them irq_startup/irq_shutdown.
pci_msi_template_v6_2 = _template("PCI-MSI", pci_irq_mask_msi, pci_irq_unmask_msi, None,
                                  None, _MSI_FLAGS, DOMAIN_BUS_PCI_DEVICE_MSI)
pci_msix_template_v6_2 = _template("PCI-MSIX", pci_irq_mask_msix, pci_irq_unmask_msix, None,
                                   None, _MSIX_FLAGS, DOMAIN_BUS_PCI_DEVICE_MSIX)


def pci_create_device_domain(dev: pci_dev, tmpl: msi_domain_template, hwsize: int) -> bool:
    """Create the device domain if the device's domain is an MSI parent; True if there is
    nothing to create (a global domain) or it was created."""
    if not irq_domain_is_msi_parent(dev_get_msi_domain(dev.dev)):
        return True
    return msi_create_device_irq_domain(dev.dev, MSI_DEFAULT_DOMAIN, tmpl, hwsize)


def _templates(dev: pci_dev) -> tuple[msi_domain_template, msi_domain_template]:
    if dev.k.irq.pci_msi_domains == "per-device":
        return pci_msi_template_v6_2, pci_msix_template_v6_2
    return pci_msi_template, pci_msix_template


def pci_setup_msi_device_domain(dev: pci_dev) -> bool:
    """The MSI device domain exists (or is not needed); a MSI-X one is removed first."""
    if dev.msix_enabled:
        return False
    if msi_match_device_irq_domain(dev.dev, MSI_DEFAULT_DOMAIN, DOMAIN_BUS_PCI_DEVICE_MSI):
        return True
    if msi_match_device_irq_domain(dev.dev, MSI_DEFAULT_DOMAIN, DOMAIN_BUS_PCI_DEVICE_MSIX):
        msi_remove_device_irq_domain(dev.dev, MSI_DEFAULT_DOMAIN)
    return pci_create_device_domain(dev, _templates(dev)[0], 1)


def pci_setup_msix_device_domain(dev: pci_dev, hwsize: int) -> bool:
    """The MSI-X device domain exists (or is not needed); a MSI one is removed first."""
    if dev.msi_enabled:
        return False
    if msi_match_device_irq_domain(dev.dev, MSI_DEFAULT_DOMAIN, DOMAIN_BUS_PCI_DEVICE_MSIX):
        return True
    if msi_match_device_irq_domain(dev.dev, MSI_DEFAULT_DOMAIN, DOMAIN_BUS_PCI_DEVICE_MSI):
        msi_remove_device_irq_domain(dev.dev, MSI_DEFAULT_DOMAIN)
    return pci_create_device_domain(dev, _templates(dev)[1], hwsize)
