"""What x86 adds to the PCI core (``arch/x86/pci/``): MMCONFIG, the root bridge, the survey.

- ``pci_mmcfg``: config cycles of a firmware-described ECAM region (ACPI
  MCFG) become ``readb/w/l`` and ``writeb/w/l`` at ``virt + (bus << 20 |
  devfn << 12 | reg)``, the region being ``ioremap``'d once at boot.
  ``pci_root_ops`` route domain-0 root buses there (``raw_pci_read``).
- ``pcibios_resource_survey``: keep what firmware assigned. Bridge windows
  are claimed first (an unusable one is dropped), then BARs of devices with
  decode enabled, then BARs of devices with decode disabled; a BAR that
  cannot be claimed is left for ``pci_assign_unassigned_resources``.
- ``pci_real_dma_dev``/``is_vmd``: a device in a VMD domain (domain number
  above 0xffff) does DMA with the VMD's requester ID.

Simplification: real x86 reaches the first 256 bytes of domain 0's config
space with port I/O (0xCF8/0xCFC, ``pci_direct_conf1``) and only extended
config space through MMCONFIG; the model has no port I/O and uses MMCONFIG
for all of it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, cast

from vmdsim.hw.regs import PCI_COMMAND, PCI_COMMAND_IO, PCI_COMMAND_MEMORY
from vmdsim.kernel.errno import EINVAL
from vmdsim.kernel.io import iomem, readb, readl, readw, writeb, writel, writew
from vmdsim.kernel.pci.access import pci_ops, pci_read_config_word
from vmdsim.kernel.pci.bus import pci_add_resource
from vmdsim.kernel.pci.pci_h import (
    PCI_BRIDGE_RESOURCES,
    PCI_NUM_RESOURCES,
    PCI_STD_RESOURCE_END,
    pci_bus,
    pci_dev,
    pci_domain_nr,
    pci_host_bridge,
    pci_sysdata,
    resource_entry,
    to_pci_host_bridge,
)
from vmdsim.kernel.pci.probe import (
    pci_create_root_bus,
    pci_scan_child_bus,
    pcie_bus_configure_settings,
)
from vmdsim.kernel.pci.resource import (
    IORESOURCE_BUS,
    IORESOURCE_BUSY,
    IORESOURCE_IO,
    IORESOURCE_MEM,
    IORESOURCE_PCI_FIXED,
    IORESOURCE_UNSET,
    IORESOURCE_WINDOW,
    OWNER,
    format_resource,
    insert_resource,
    release_resource,
    resource,
    resource_size,
)
from vmdsim.kernel.pci.setup_res import pci_claim_bridge_resource, pci_claim_resource
from vmdsim.kernel.pci.subsys import pci_info
from vmdsim.kernel.printk import pr_info, pr_warn
from vmdsim.kernel.shared import KObject

if TYPE_CHECKING:
    from vmdsim.kernel.core import Kernel

PCI_MMCFG_BUS_SHIFT = 20


class pci_mmcfg_region(KObject):
    """One MCFG entry: segment, bus range, physical base, its mapping and its resource.

    Linux embeds the ``PCI MMCONFIG`` resource in the region, so both come from
    one allocation (``pci_mmconfig_alloc``); so they do here.
    """

    def __init__(self, segment: int, start_bus: int, end_bus: int, address: int) -> None:
        self.segment = segment
        self.start_bus = start_bus
        self.end_bus = end_bus
        self.address = address
        self.virt: iomem | None = None
        base = address + (start_bus << PCI_MMCFG_BUS_SHIFT)
        size = (end_bus - start_bus + 1) << PCI_MMCFG_BUS_SHIFT
        self.res = resource(f"PCI MMCONFIG {segment:04x} [bus {start_bus:02x}-{end_bus:02x}]",
                            base, base + size - 1, IORESOURCE_MEM | IORESOURCE_BUSY)

    def __repr__(self) -> str:
        return (f"<pci_mmcfg_region {self.segment:04x} [bus {self.start_bus:02x}-"
                f"{self.end_bus:02x}] at {self.address:#x}>")


def pci_mmconfig_add(k: Kernel, segment: int, start: int, end: int,
                     addr: int) -> pci_mmcfg_region | None:
    """Add an ECAM region: allocate it, map it (``pci_mmcfg_arch_map``) and reserve it in
    the iomem tree; None when memory runs out (nothing is left behind)."""
    sub = k.pci
    cfg = k.mem.kzalloc(pci_mmcfg_region, segment, start, end, addr, owner="pci-mmcfg")
    if cfg is None:
        return None
    res = cfg.res
    virt = k.io.ioremap(res.start, resource_size(res), caller=f"pci_mmcfg {segment:04x}")
    if virt is None:
        k.mem.kfree(cfg)
        return None
    # Config cycles address the region as if it started at bus 0.
    cfg.virt = virt - (start << PCI_MMCFG_BUS_SHIFT)
    if insert_resource(sub.iomem_resource, res):
        pr_warn(k, f"PCI: MMCONFIG at {format_resource(res)} conflicts; not reserved")
    sub.mmcfg_regions.append(cfg)
    pr_info(k, f"PCI: ECAM {format_resource(res)} (base {addr:#x}) for domain "
               f"{segment:04x} [bus {start:02x}-{end:02x}]")
    return cfg


def pci_mmconfig_delete(k: Kernel, cfg: pci_mmcfg_region) -> None:
    """Take an ECAM region out of use: unlink, unmap, unreserve, free.

    Linux waits for an RCU grace period after unlinking, because config
    accessors look regions up under RCU; the model's lookups are not RCU
    readers (x86's accessors take no lock here), so the region goes at once.
    """
    k.pci.mmcfg_regions.remove(cfg)
    k.io.iounmap(cast(iomem, cfg.virt) + (cfg.start_bus << PCI_MMCFG_BUS_SHIFT))  # mapped
    cfg.virt = None
    if cfg.res.parent is not None:
        release_resource(cfg.res)
    k.mem.kfree(cfg)


def pci_mmconfig_lookup(k: Kernel, seg: int, bus: int) -> pci_mmcfg_region | None:
    for cfg in k.pci.mmcfg_regions:
        if cfg.segment == seg and cfg.start_bus <= bus <= cfg.end_bus:
            return cfg
    return None


def pci_mmcfg_read(k: Kernel, seg: int, bus: int, devfn: int, reg: int,
                   length: int) -> tuple[int, int]:
    if bus > 255 or devfn > 255 or reg > 4095:
        return -EINVAL, 0xFFFFFFFF
    cfg = pci_mmconfig_lookup(k, seg, bus)
    if cfg is None or cfg.virt is None:
        return -EINVAL, 0xFFFFFFFF
    addr = cfg.virt + ((bus << PCI_MMCFG_BUS_SHIFT) | (devfn << 12) | reg)
    if length == 1:
        return 0, readb(addr)
    if length == 2:
        return 0, readw(addr)
    return 0, readl(addr)


def pci_mmcfg_write(k: Kernel, seg: int, bus: int, devfn: int, reg: int, length: int,
                    value: int) -> int:
    if bus > 255 or devfn > 255 or reg > 4095:
        return -EINVAL
    cfg = pci_mmconfig_lookup(k, seg, bus)
    if cfg is None or cfg.virt is None:
        return -EINVAL
    addr = cfg.virt + ((bus << PCI_MMCFG_BUS_SHIFT) | (devfn << 12) | reg)
    if length == 1:
        writeb(value, addr)
    elif length == 2:
        writew(value, addr)
    else:
        writel(value, addr)
    return 0


def raw_pci_read(k: Kernel, domain: int, bus: int, devfn: int, reg: int,
                 length: int) -> tuple[int, int]:
    return pci_mmcfg_read(k, domain, bus, devfn, reg, length)


def raw_pci_write(k: Kernel, domain: int, bus: int, devfn: int, reg: int, length: int,
                  value: int) -> int:
    return pci_mmcfg_write(k, domain, bus, devfn, reg, length, value)


def _pci_read(bus: pci_bus, devfn: int, where: int, size: int) -> tuple[int, int]:
    return raw_pci_read(bus.k, pci_domain_nr(bus), bus.number, devfn, where, size)


def _pci_write(bus: pci_bus, devfn: int, where: int, size: int, value: int) -> int:
    return raw_pci_write(bus.k, pci_domain_nr(bus), bus.number, devfn, where, size, value)


pci_root_ops = pci_ops(_pci_read, _pci_write, name="pci_root_ops")


# -- VMD domains -----------------------------------------------------------------------------
def is_vmd(bus: pci_bus) -> bool:
    return pci_domain_nr(bus) > 0xFFFF


def pci_real_dma_dev(dev: pci_dev) -> pci_dev:
    """The device whose requester ID DMA from ``dev`` carries: the VMD for its domains."""
    if is_vmd(dev.bus):
        vmd_dev = getattr(dev.bus.sysdata, "vmd_dev", None)
        if vmd_dev is not None:
            return vmd_dev
    return dev


# -- keeping firmware's assignments (arch/x86/pci/i386.c) -----------------------------------
def pcibios_allocate_bridge_resources(dev: pci_dev) -> None:
    for idx in range(PCI_BRIDGE_RESOURCES, PCI_NUM_RESOURCES):
        r = dev.resource[idx]
        if not r.flags or r.parent is not None:
            continue
        if not r.start or pci_claim_bridge_resource(dev, idx) < 0:
            # Unusable: make sure nothing gets allocated inside it.
            r.start = r.end = 0
            r.flags = 0


def pcibios_allocate_bus_resources(bus: pci_bus) -> None:
    """Claim the bridge windows below ``bus``, depth first (a window before what it holds)."""
    if bus.self is not None:
        pcibios_allocate_bridge_resources(bus.self)
    for child in list(bus.children):
        pcibios_allocate_bus_resources(child)


def pcibios_allocate_dev_resources(dev: pci_dev, pass_: int) -> None:
    _, command = pci_read_config_word(dev, PCI_COMMAND)
    for idx in range(PCI_STD_RESOURCE_END + 1):
        r = dev.resource[idx]
        if r.parent is not None or not r.flags or not r.start:
            continue
        if r.flags & IORESOURCE_IO:
            disabled = not command & PCI_COMMAND_IO
        else:
            disabled = not command & PCI_COMMAND_MEMORY
        if pass_ == int(disabled):
            if pci_claim_resource(dev, idx) < 0:
                if r.flags & IORESOURCE_PCI_FIXED:
                    pci_info(dev, f"BAR {idx} is immovable")
                else:
                    # Assigned afresh later.
                    r.end -= r.start
                    r.start = 0
                    r.flags |= IORESOURCE_UNSET


def pcibios_allocate_resources(bus: pci_bus, pass_: int) -> None:
    for dev in list(bus.devices):
        pcibios_allocate_dev_resources(dev, pass_)
        if dev.subordinate is not None:
            pcibios_allocate_resources(dev.subordinate, pass_)


def pcibios_resource_survey(k: Kernel) -> None:
    """Claim firmware's bridge windows and BARs (enabled devices first)."""
    roots = list(k.pci.pci_root_buses)
    for bus in roots:
        pcibios_allocate_bus_resources(bus)
    for pass_ in (0, 1):
        for bus in roots:
            pcibios_allocate_resources(bus, pass_)


def pcibios_resource_survey_bus(bus: pci_bus) -> None:
    """The survey for one hot-added root bus."""
    pcibios_allocate_bus_resources(bus)
    pcibios_allocate_resources(bus, 0)
    pcibios_allocate_resources(bus, 1)


# -- the ACPI host bridge (arch/x86/pci/acpi.c, drivers/acpi/pci_root.c) -----------------------
# What _OSC can grant; each is a ``native_*`` flag of pci_host_bridge.
_OSC_FEATURES = ("aer", "pcie_hotplug", "shpc_hotplug", "pme", "ltr", "dpc")


def _free_root_resources(k: Kernel, owned: list[resource]) -> None:
    for r in owned:
        if r.parent is not None:
            release_resource(r)
        k.mem.kfree(r)
    owned.clear()


def acpi_pci_root_release_info(bridge: pci_host_bridge) -> None:
    """Free the windows and bus range the ACPI root created (the host bridge's release)."""
    _free_root_resources(bridge.k, bridge.release_data)


def pci_acpi_scan_root(k: Kernel, domain: int, bus_range: tuple[int, int],
                       windows: list[tuple[int, int]], *, native: dict[str, bool] | None = None,
                       ops: pci_ops | None = None) -> pci_bus | None:
    """Create and scan the root bus firmware describes: its segment, bus range (_BBN/_CRS)
    and memory windows (_CRS, each inserted into ``iomem_resource`` as
    ``pci_acpi_root_add_resources`` does). ``native`` holds what _OSC granted (all
    by default). None when memory runs out; then nothing is left behind."""
    for flag in native or {}:
        if flag not in _OSC_FEATURES:
            raise ValueError(f"_OSC: unknown native feature {flag!r} (known: "
                             f"{', '.join(_OSC_FEATURES)})")
    sub = k.pci
    name = f"PCI Bus {domain:04x}:{bus_range[0]:02x}"
    owned: list[resource] = []

    def free_owned() -> None:
        _free_root_resources(k, owned)

    resources: list[resource_entry] = []
    busn = k.mem.kzalloc(resource, name, bus_range[0], bus_range[1], IORESOURCE_BUS,
                         owner=OWNER)
    if busn is None:
        return None
    owned.append(busn)
    pci_add_resource(resources, busn)
    for start, end in windows:
        r = k.mem.kzalloc(resource, name, start, end, IORESOURCE_MEM | IORESOURCE_WINDOW,
                          owner=OWNER)
        if r is None:
            free_owned()
            return None
        owned.append(r)
        conflict = insert_resource(sub.iomem_resource, r)
        if conflict:
            pr_warn(k, f"pci_bus {domain:04x}:{bus_range[0]:02x}: can't insert window "
                       f"[mem {start:#010x}-{end:#010x}]; ignored")
            continue
        pci_add_resource(resources, r)
    sysdata = pci_sysdata(domain=domain)
    bus = pci_create_root_bus(k, None, bus_range[0], ops or pci_root_ops, sysdata, resources)
    if bus is None:
        free_owned()
        return None
    host = to_pci_host_bridge(bus.bridge)
    for flag, granted in (native or {}).items():
        setattr(host, f"native_{flag}", bool(granted))
    # pci_set_host_bridge_release(): a plain function and its data, no closure, so the
    # host bridge survives a deep copy (the explorer's snapshots) intact.
    host.release_fn = acpi_pci_root_release_info
    host.release_data = owned
    pr_info(k, f"ACPI: PCI Root Bridge [PCI{domain}] (domain {domain:04x} "
               f"[bus {bus_range[0]:02x}-{bus_range[1]:02x}])")
    pci_scan_child_bus(bus)
    for child in bus.children:
        pcie_bus_configure_settings(child)
    return bus
