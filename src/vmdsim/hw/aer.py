"""Advanced Error Reporting: the extended capability, and error messages going up.

As the PCI Express spec has it (section 6.2 and the AER capability):

- A function that detects an error sets the error's bit in the Uncorrectable
  or Correctable Error Status register (RW1C) unless the matching Mask bit
  is set; an uncorrectable error is fatal or non-fatal as its bit in the
  Uncorrectable Error Severity register says. The first unmasked
  uncorrectable error's bit number goes into the First Error Pointer.
- The function then records it in Device Status (Correctable / Non-Fatal /
  Fatal Error Detected) and sends an ERR_COR, ERR_NONFATAL or ERR_FATAL
  message upstream if Device Control enables reporting that class (for the
  uncorrectable ones Command.SERR# Enable also does).
- Error messages travel to the root port above, which logs them in its Root
  Error Status and Error Source Identification registers (see
  :mod:`vmdsim.hw.rootport`).

Simplifications: no header log contents, no ECRC, no TLP prefix log, no
Root Complex Event Collector, no switches: a message from a function whose
upstream port is not a root port is counted in its ``lost_messages``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from vmdsim.hw.regs import (
    PCI_COMMAND,
    PCI_COMMAND_SERR,
    PCI_ERR_CAP,
    PCI_ERR_CAP_FEP_MASK,
    PCI_ERR_COR_ADV_NFAT,
    PCI_ERR_COR_MASK,
    PCI_ERR_COR_STATUS,
    PCI_ERR_ROOT_AER_IRQ_SHIFT,
    PCI_ERR_ROOT_CMD_MASK,
    PCI_ERR_ROOT_COMMAND,
    PCI_ERR_ROOT_ERR_SRC,
    PCI_ERR_ROOT_STATUS,
    PCI_ERR_UNCOR_MASK,
    PCI_ERR_UNCOR_SEVER,
    PCI_ERR_UNCOR_STATUS,
    PCI_EXP_DEVCTL,
    PCI_EXP_DEVCTL_CERE,
    PCI_EXP_DEVCTL_FERE,
    PCI_EXP_DEVCTL_NFERE,
    PCI_EXP_DEVSTA,
    PCI_EXP_DEVSTA_CED,
    PCI_EXP_DEVSTA_FED,
    PCI_EXP_DEVSTA_NFED,
    PCI_EXT_CAP_ID_ERR,
)

if TYPE_CHECKING:
    from vmdsim.hw.function import PciFunction

# The error messages of PCIe (their message names).
ERR_COR = "ERR_COR"
ERR_NONFATAL = "ERR_NONFATAL"
ERR_FATAL = "ERR_FATAL"

# Status bits the model implements (PCIe base spec, AER capability).
AER_UNCOR_BITS = 0x007FF030
AER_COR_BITS = 0x0000F1C1
AER_UNCOR_SEVER_DEFAULT = 0x00462030  # DLP, SDES, FCP, RX overflow, malformed TLP, internal
AER_COR_MASK_DEFAULT = PCI_ERR_COR_ADV_NFAT

AER_VERSION = 2
AER_SIZEOF_ENDPOINT = 0x2C  # through the header log
AER_SIZEOF_ROOT = 0x38  # plus Root Error Command/Status and Error Source Identification


class AerCapability:
    """The AER extended capability of one function (``root`` adds the root-port registers)."""

    def __init__(self, fn: PciFunction, *, root: bool = False, irq_vector: int = 0) -> None:
        self.fn = fn
        cfg = fn.cfg
        self.pos = pos = cfg.add_ext_capability(
            PCI_EXT_CAP_ID_ERR, AER_VERSION, AER_SIZEOF_ROOT if root else AER_SIZEOF_ENDPOINT)
        cfg.init(pos + PCI_ERR_UNCOR_STATUS, 4, 0, w1c=AER_UNCOR_BITS)
        cfg.init(pos + PCI_ERR_UNCOR_MASK, 4, 0, wmask=AER_UNCOR_BITS)
        cfg.init(pos + PCI_ERR_UNCOR_SEVER, 4, AER_UNCOR_SEVER_DEFAULT, wmask=AER_UNCOR_BITS)
        cfg.init(pos + PCI_ERR_COR_STATUS, 4, 0, w1c=AER_COR_BITS)
        cfg.init(pos + PCI_ERR_COR_MASK, 4, AER_COR_MASK_DEFAULT, wmask=AER_COR_BITS)
        cfg.init(pos + PCI_ERR_CAP, 4, 0)
        if root:
            cfg.init(pos + PCI_ERR_ROOT_COMMAND, 4, 0, wmask=PCI_ERR_ROOT_CMD_MASK)
            # bits 6:0 RW1C; 31:27 the Advanced Error Interrupt Message Number (RO)
            cfg.init(pos + PCI_ERR_ROOT_STATUS, 4, irq_vector << PCI_ERR_ROOT_AER_IRQ_SHIFT,
                     w1c=0x7F)
            cfg.init(pos + PCI_ERR_ROOT_ERR_SRC, 4, 0)

    def detect(self, bit: int, *, correctable: bool) -> str | None:
        """The function detects error ``bit``; returns the message class, None if masked."""
        cfg, pos = self.fn.cfg, self.pos
        if correctable:
            if cfg.hw_read(pos + PCI_ERR_COR_MASK, 4) & bit:
                return None
            cfg.hw_set(pos + PCI_ERR_COR_STATUS, 4, bit)
            return ERR_COR
        if cfg.hw_read(pos + PCI_ERR_UNCOR_MASK, 4) & bit:
            return None
        if not cfg.hw_read(pos + PCI_ERR_UNCOR_STATUS, 4):
            cfg.hw_write(pos + PCI_ERR_CAP, 4, (cfg.hw_read(pos + PCI_ERR_CAP, 4)
                                                & ~PCI_ERR_CAP_FEP_MASK) | (bit.bit_length() - 1))
        cfg.hw_set(pos + PCI_ERR_UNCOR_STATUS, 4, bit)
        fatal = cfg.hw_read(pos + PCI_ERR_UNCOR_SEVER, 4) & bit
        return ERR_FATAL if fatal else ERR_NONFATAL


_DEVSTA = {ERR_COR: PCI_EXP_DEVSTA_CED, ERR_NONFATAL: PCI_EXP_DEVSTA_NFED,
           ERR_FATAL: PCI_EXP_DEVSTA_FED}
_DEVCTL = {ERR_COR: PCI_EXP_DEVCTL_CERE, ERR_NONFATAL: PCI_EXP_DEVCTL_NFERE,
           ERR_FATAL: PCI_EXP_DEVCTL_FERE}


def signal_error(fn: PciFunction, aer: AerCapability, bit: int, *, correctable: bool) -> bool:
    """``fn`` detects error ``bit``: log it and send its message up; True if a port got it."""
    kind = aer.detect(bit, correctable=correctable)
    if kind is None:
        return False
    cfg, pcie = fn.cfg, fn.pcie_cap
    cfg.hw_set(pcie + PCI_EXP_DEVSTA, 2, _DEVSTA[kind])
    enabled = cfg.hw_read(pcie + PCI_EXP_DEVCTL, 2) & _DEVCTL[kind]
    if kind != ERR_COR and cfg.hw_read(PCI_COMMAND, 2) & PCI_COMMAND_SERR:
        enabled = True
    if not enabled:
        return False
    return send_message(fn, "receive_error_message", kind)


def send_message(fn: PciFunction, method: str, *args: object) -> bool:
    """Route a message (PME, error) from ``fn`` up to the root port above it."""
    receive = getattr(fn.upstream, method, None)
    if receive is None:
        fn.lost_messages += 1
        return False
    receive(*args, fn.rid)
    return True
