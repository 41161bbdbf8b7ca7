"""The kernel log (``kernel/printk/``): one ring of records with levels, which ``dmesg`` reads.

Every message the model's kernel and drivers print goes through :func:`printk` into
``k.log``, a :class:`printk_ringbuffer`: a record has a sequence number, a level
(``KERN_EMERG`` 0 .. ``KERN_DEBUG`` 7) and its text. ``dmesg`` prints the records
the ring still holds, oldest first; ``dmesg --level err,warn`` (``lines({KERN_ERR,
KERN_WARNING})``) only those of the levels named.

What a real kernel logs at its default level is what the model logs: ``pr_debug`` and
``dev_dbg`` are compiled out unless ``DEBUG`` or dynamic debug turns them on, so
the model has no debug messages at all. Where the model simplifies: no
timestamps (the model has no clock shared by every subsystem yet), no facility,
no console (nothing is printed as it is logged; ``console_loglevel`` does not
apply), and the ring holds a number of records rather than bytes.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from vmdsim.kernel.core import Kernel

KERN_EMERG = 0
KERN_ALERT = 1
KERN_CRIT = 2
KERN_ERR = 3
KERN_WARNING = 4
KERN_NOTICE = 5
KERN_INFO = 6
KERN_DEBUG = 7

LEVEL_NAMES = ("emerg", "alert", "crit", "err", "warn", "notice", "info", "debug")

# A ring of records (Linux: a ring of 1 << CONFIG_LOG_BUF_SHIFT bytes, 128 KiB by default).
LOG_BUF_RECORDS = 8192


@dataclass(frozen=True)
class printk_record:
    """One message: its sequence number, level and text (one line)."""

    seq: int
    level: int
    text: str


class printk_ringbuffer:
    """``k.log``: the records the ring still holds; the oldest go when it is full."""

    def __init__(self, size: int = LOG_BUF_RECORDS) -> None:
        self.records: deque[printk_record] = deque(maxlen=size)
        self.next_seq = 0

    def emit(self, level: int, text: str) -> None:
        if not KERN_EMERG <= level <= KERN_DEBUG:
            raise ValueError(f"printk: level {level} is not KERN_EMERG (0) .. KERN_DEBUG (7)")
        for line in text.splitlines() or [""]:
            self.records.append(printk_record(self.next_seq, level, line))
            self.next_seq += 1

    def lines(self, levels: Iterable[int] | None = None) -> list[str]:
        """The texts of the records, oldest first; only those of ``levels`` if given."""
        if levels is None:
            return [r.text for r in self.records]
        want = set(levels)
        return [r.text for r in self.records if r.level in want]

    @property
    def dropped(self) -> int:
        """Records the ring has lost to newer ones (Linux: ``dmesg`` shows a gap)."""
        return self.next_seq - len(self.records)


def printk(k: Kernel, level: int, text: str) -> None:
    """``printk(KERN_<LEVEL> "...")`` into kernel ``k``'s log."""
    k.log.emit(level, text)


def pr_emerg(k: Kernel, text: str) -> None:
    printk(k, KERN_EMERG, text)


def pr_err(k: Kernel, text: str) -> None:
    printk(k, KERN_ERR, text)


def pr_warn(k: Kernel, text: str) -> None:
    printk(k, KERN_WARNING, text)


def pr_notice(k: Kernel, text: str) -> None:
    printk(k, KERN_NOTICE, text)


def pr_info(k: Kernel, text: str) -> None:
    printk(k, KERN_INFO, text)


def dmesg(k: Kernel, levels: Iterable[int] | None = None) -> list[str]:
    """What ``dmesg`` prints (``dmesg --level``: only the records of ``levels``)."""
    return k.log.lines(levels)


def parse_levels(text: str) -> set[int]:
    """``dmesg --level`` syntax: level names separated by commas (``err,warn``)."""
    out = set()
    for name in filter(None, (x.strip() for x in text.split(","))):
        if name not in LEVEL_NAMES:
            raise ValueError(f"unknown level {name!r}; the levels are {', '.join(LEVEL_NAMES)}")
        out.add(LEVEL_NAMES.index(name))
    if not out:
        raise ValueError("name at least one level")
    return out
