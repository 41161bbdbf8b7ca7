"""What the hardware tests do in place of an OS: config cycles, MMIO and an APIC log.

A :class:`Board` wraps a :class:`~vmdsim.hw.machine.Machine` and reaches
every register through bus transactions only: ECAM for domain 0, the VMD's
CFGBAR for its hidden domain, memory reads and writes for BARs. Building the
machine and hot-plug (``populate``/``unpopulate``) are hardware acts and use
the hardware objects; checking is done through registers and the APIC log.
"""

from __future__ import annotations

from vmdsim.hw.fabric import MMCONFIG_BASE, ecam_offset
from vmdsim.hw.machine import Machine
from vmdsim.hw.regs import (
    PCI_BASE_ADDRESS_0,
    PCI_CAP_ID_MSI,
    PCI_CAP_ID_MSIX,
    PCI_COMMAND,
    PCI_COMMAND_MASTER,
    PCI_COMMAND_MEMORY,
    PCI_MEMORY_BASE,
    PCI_MSI_ADDRESS_HI,
    PCI_MSI_ADDRESS_LO,
    PCI_MSI_DATA_64,
    PCI_MSI_FLAGS,
    PCI_MSI_FLAGS_ENABLE,
    PCI_MSIX_FLAGS,
    PCI_MSIX_FLAGS_ENABLE,
    PCI_MSIX_TABLE,
    PCI_PRIMARY_BUS,
    PCI_SECONDARY_BUS,
    PCI_SUBORDINATE_BUS,
    pci_devfn,
)
from vmdsim.topology import parse

MEM_EN = PCI_COMMAND_MEMORY | PCI_COMMAND_MASTER
NVME_REG_VS = 0x08
NVME_REG_CC = 0x14
NVME_REG_CSTS = 0x1C
NVME_REG_AQA = 0x24
NVME_REG_ASQ = 0x28
NVME_REG_ACQ = 0x30
ASQ_RAM, ACQ_RAM = 0x100000, 0x101000  # where the tests put the admin queues in RAM
NVME_REG_DBS = 0x1000
VMD_CFGBAR, VMD_MEMBAR1, VMD_MEMBAR2 = 0, 2, 4


def x86_msi(cpu: int) -> int:
    return 0xFEE00000 | (cpu << 12)


def vmd_msi(index: int) -> int:
    """What the VMD driver composes for a child: x86 MSI base, VMD vector in bits 19:12."""
    return 0xFEE00000 | (index << 12)


class Config:
    """Config cycles to one function: ECAM (domain 0) or a VMD's CFGBAR (hidden domain)."""

    def __init__(self, board: Board, base: int, bus: int, devfn: int) -> None:
        self.board, self.base, self.bus, self.devfn = board, base, bus, devfn

    def addr(self, reg: int) -> int:
        return self.base + ecam_offset(self.bus, self.devfn, reg)

    def read(self, reg: int, size: int = 4) -> int:
        return self.board.rc.mem_read(self.addr(reg), size)

    def write(self, reg: int, size: int, value: int) -> None:
        self.board.rc.mem_write(self.addr(reg), size, value)

    def set_bits(self, reg: int, size: int, bits: int) -> None:
        self.write(reg, size, self.read(reg, size) | bits)

    def cap(self, cap_id: int) -> int | None:
        pos = self.read(0x34, 1)
        while pos:
            if self.read(pos, 1) == cap_id:
                return pos
            pos = self.read(pos + 1, 1)
        return None

    def ext_cap(self, cap_id: int) -> int | None:
        pos = 0x100
        while pos:
            hdr = self.read(pos)
            if hdr & 0xFFFF == cap_id:
                return pos
            pos = hdr >> 20
        return None

    def bar(self, i: int) -> int:
        return (self.read(PCI_BASE_ADDRESS_0 + 4 * i) & ~0xF) | (
            self.read(PCI_BASE_ADDRESS_0 + 4 * i + 4) << 32)

    def set_bar64(self, i: int, addr: int) -> None:
        self.write(PCI_BASE_ADDRESS_0 + 4 * i, 4, addr & 0xFFFFFFFF)
        self.write(PCI_BASE_ADDRESS_0 + 4 * i + 4, 4, addr >> 32)


class Board:
    """A machine with an APIC log; every register access is a bus transaction."""

    def __init__(self, m: Machine) -> None:
        self.m = m
        self.rc = m.rc
        self.irqs: list[tuple[int, int]] = []
        self.rc.apic.attach(lambda cpu, vec: self.irqs.append((cpu, vec)))

    @classmethod
    def from_toml(cls, text: str) -> Board:
        return cls(Machine.build(parse(text)))

    @classmethod
    def default(cls) -> Board:
        return cls(Machine.load())

    # -- config space ---------------------------------------------------------------
    def ecam(self, bus: int, slot: int, fn: int = 0) -> Config:
        return Config(self, MMCONFIG_BASE, bus, pci_devfn(slot, fn))

    def vmd_cfg(self, vmd: int = 0) -> Config:
        v = self.m.vmds[vmd]
        return self.ecam(0, v.devfn >> 3, v.devfn & 7)

    def hidden(self, bus: int, slot: int, fn: int = 0, vmd: int = 0) -> Config:
        """Config cycles through CFGBAR; ``bus`` is relative to the domain's first bus."""
        return Config(self, self.vmd_cfg(vmd).bar(VMD_CFGBAR), bus, pci_devfn(slot, fn))

    # -- memory ------------------------------------------------------------------------
    def read(self, addr: int, size: int = 4) -> int:
        return self.rc.mem_read(addr, size)

    def write(self, addr: int, size: int, value: int) -> None:
        self.rc.mem_write(addr, size, value)

    # -- interrupts, programmed as a driver would ----------------------------------
    def msix_entry(self, cfg: Config, n: int, addr: int, data: int, masked: bool = False,
                   bar_base: int | None = None) -> None:
        pos = cfg.cap(PCI_CAP_ID_MSIX)
        table = cfg.read(pos + PCI_MSIX_TABLE)
        base = (cfg.bar(table & 7) if bar_base is None else bar_base) + (table & ~7)
        entry = base + 16 * n
        self.write(entry, 4, addr & 0xFFFFFFFF)
        self.write(entry + 4, 4, addr >> 32)
        self.write(entry + 8, 4, data)
        self.write(entry + 12, 4, int(masked))

    def msix_enable(self, cfg: Config) -> None:
        pos = cfg.cap(PCI_CAP_ID_MSIX)
        cfg.write(pos + PCI_MSIX_FLAGS, 2, PCI_MSIX_FLAGS_ENABLE)

    def msi_enable(self, cfg: Config, addr: int, data: int) -> None:
        pos = cfg.cap(PCI_CAP_ID_MSI)
        cfg.write(pos + PCI_MSI_ADDRESS_LO, 4, addr & 0xFFFFFFFF)
        cfg.write(pos + PCI_MSI_ADDRESS_HI, 4, addr >> 32)
        cfg.write(pos + PCI_MSI_DATA_64, 2, data)
        cfg.write(pos + PCI_MSI_FLAGS, 2, PCI_MSI_FLAGS_ENABLE)

    # -- bring-up of the default-style machine -------------------------------------
    def bring_up_vmd(self, vmd: int = 0) -> None:
        """VMD bus master on, MSI-X vector n -> CPU n % ncpus, APIC vector 0x30 + n."""
        cfg = self.vmd_cfg(vmd)
        cfg.set_bits(PCI_COMMAND, 2, MEM_EN)
        for n in range(self.m.vmds[vmd].msix.nvec):
            self.msix_entry(cfg, n, x86_msi(n % self.m.ncpus), 0x30 + n)
        self.msix_enable(cfg)

    def bring_up_port(self, slot: int, vmd: int = 0) -> tuple[Config, Config, int]:
        """Root port at hidden 00:slot.0 -> bus slot+1, a 1 MiB window in MEMBAR1, and
        the drive's BAR0 at its start; memory and bus mastering on. Returns
        (port config, drive config, drive BAR0 address)."""
        start = self.m.vmds[vmd].bus_start
        rp = self.hidden(0, slot, vmd=vmd)
        sec = slot + 1
        rp.write(PCI_PRIMARY_BUS, 1, start)
        rp.write(PCI_SECONDARY_BUS, 1, start + sec)
        rp.write(PCI_SUBORDINATE_BUS, 1, start + sec)
        window = self.vmd_cfg(vmd).bar(VMD_MEMBAR1) + (slot << 20)
        rp.write(PCI_MEMORY_BASE, 4, (window >> 16) | (window >> 16) << 16)
        rp.set_bits(PCI_COMMAND, 2, MEM_EN)
        drive = self.hidden(sec, 0, vmd=vmd)
        if drive.read(0) != 0xFFFFFFFF:
            drive.set_bar64(0, window)
            drive.set_bits(PCI_COMMAND, 2, MEM_EN)
        return rp, drive, window

    def enable_nvme(self, bar0: int, io_queues: int | None = -1,
                    vector=lambda q: q) -> None:
        """Admin queues in RAM (32 entries), controller on, then I/O queues 1..io_queues
        (-1: as many as Set Features grants; None: none) created with admin commands,
        queue q on MSI-X entry ``vector(q)`` (None: IEN off)."""
        self.write(bar0 + NVME_REG_AQA, 4, 31 | 31 << 16)
        self.write(bar0 + NVME_REG_ASQ, 8, ASQ_RAM)
        self.write(bar0 + NVME_REG_ACQ, 8, ACQ_RAM)
        self.write(bar0 + NVME_REG_CC, 4, 1)
        assert self.read(bar0 + NVME_REG_CSTS) & 1
        self.nvme_sq_tail = self.nvme_cq_head = 0
        self.nvme_phase = 1
        if io_queues == -1:
            status, granted = self.nvme_admin(bar0, 0x09, 0x07, 0xFFFE | 0xFFFE << 16)
            assert status == 0
            io_queues = (granted & 0xFFFF) + 1
        for q in range(1, (io_queues or 0) + 1):
            iv = vector(q)
            flags = 1 if iv is None else 3
            assert self.nvme_admin(bar0, 0x05, q | 1023 << 16, flags | (iv or 0) << 16,
                                   prp1=0x200000 + q * 0x4000) == (0, 0)
            assert self.nvme_admin(bar0, 0x01, q | 1023 << 16, 1 | q << 16,
                                   prp1=0x400000 + q * 0x10000) == (0, 0)

    def nvme_admin(self, bar0: int, opcode: int, cdw10: int = 0, cdw11: int = 0, *,
                   prp1: int = 0, cid: int = 0, reap: bool = True) -> tuple[int, int] | None:
        """Write a submission entry into RAM, ring the admin doorbell; (status, DW0) of the
        completion entry that comes back (the controller answers at once), head consumed."""
        entry = ASQ_RAM + 64 * self.nvme_sq_tail
        for i, dw in enumerate([opcode | cid << 16, 0, 0, 0, 0, 0, prp1 & 0xFFFFFFFF,
                                prp1 >> 32, 0, 0, cdw10, cdw11, 0, 0, 0, 0]):
            self.rc.mem_write(entry + 4 * i, 4, dw)
        self.nvme_sq_tail = (self.nvme_sq_tail + 1) % 32
        self.write(bar0 + NVME_REG_DBS, 4, self.nvme_sq_tail)
        return self.nvme_reap(bar0) if reap else None

    def nvme_reap(self, bar0: int) -> tuple[int, int] | None:
        """The next admin completion entry if its phase tag says it is new: (status, DW0)."""
        entry = ACQ_RAM + 16 * self.nvme_cq_head
        dw3 = self.rc.mem_read(entry + 12, 4)
        if (dw3 >> 16) & 1 != self.nvme_phase:
            return None
        self.nvme_cq_head = (self.nvme_cq_head + 1) % 32
        if self.nvme_cq_head == 0:
            self.nvme_phase ^= 1
        self.write(bar0 + NVME_REG_DBS + 4, 4, self.nvme_cq_head)
        return dw3 >> 17, self.rc.mem_read(entry, 4)

    def bring_up_primary_port(self, slot: int, bus: int, window: int) -> tuple[Config, Config]:
        """Primary-domain root port at 00:slot.0 -> ``bus``, 1 MiB ``window``, drive BAR0 there."""
        rp = self.ecam(0, slot)
        rp.write(PCI_PRIMARY_BUS, 1, 0)
        rp.write(PCI_SECONDARY_BUS, 1, bus)
        rp.write(PCI_SUBORDINATE_BUS, 1, bus)
        rp.write(PCI_MEMORY_BASE, 4, (window >> 16) | (window >> 16) << 16)
        rp.set_bits(PCI_COMMAND, 2, MEM_EN)
        drive = self.ecam(bus, 0)
        if drive.read(0) != 0xFFFFFFFF:
            drive.set_bar64(0, window)
            drive.set_bits(PCI_COMMAND, 2, MEM_EN)
        return rp, drive
