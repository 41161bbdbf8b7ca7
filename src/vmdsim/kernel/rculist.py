"""Doubly linked lists that RCU readers may walk (``include/linux/rculist.h``).

Entries embed their links (``class foo(list_head)``), as Linux embeds a
``struct list_head``; freeing an entry frees its links, so a reader that
follows a freed entry's ``next`` hits the allocator's poison. ``next`` and
``prev`` are shared fields: every pointer load and store is a scheduling
point, so a walk can be interleaved with a deletion at any link.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from vmdsim.kernel.rcu import RcuError
from vmdsim.kernel.shared import KObject, peek, shared


class ListCorruption(RcuError):
    """A deleted list entry's poisoned link followed or written through (Linux: a
    general protection fault at the LIST_POISON address, or CONFIG_DEBUG_LIST's report)."""

    kind = "list-corruption"


class _Poison:
    """LIST_POISON1/2: what list_del leaves in a removed entry's links."""

    def __init__(self, name: str) -> None:
        object.__setattr__(self, "name", name)

    def __getattr__(self, attr: str) -> Any:
        raise ListCorruption(f"list corruption: followed {self.name}.{attr} of a deleted "
                             "list entry")

    def __setattr__(self, attr: str, value: Any) -> None:
        # Linux: a write through the non-canonical poison address, a general protection
        # fault (deleting an entry twice does this: prev->next = next).
        raise ListCorruption(f"list corruption: wrote {self.name}.{attr} of a deleted list "
                             "entry")

    def __repr__(self) -> str:
        return self.name


LIST_POISON1 = _Poison("LIST_POISON1")
LIST_POISON2 = _Poison("LIST_POISON2")


class list_head(KObject):
    """``struct list_head``: a list head, or the links embedded in an entry."""

    next = shared()
    prev = shared()

    def __init__(self) -> None:
        INIT_LIST_HEAD(self)


def INIT_LIST_HEAD(head: list_head) -> None:  # noqa: N802 - Linux's name
    head.next = head
    head.prev = head


def list_empty(head: list_head) -> bool:
    return head.next is head


def _insert(new: list_head, prev: list_head, nxt: list_head) -> None:
    new.next = nxt
    new.prev = prev
    prev.next = new  # rcu_assign_pointer: the publishing store
    nxt.prev = new


def list_add_tail_rcu(new: list_head, head: list_head) -> None:
    _insert(new, head.prev, head)


def list_add_rcu(new: list_head, head: list_head) -> None:
    _insert(new, head, head.next)


list_add_tail = list_add_tail_rcu
list_add = list_add_rcu


def list_del_rcu(entry: list_head) -> None:
    """Unlink ``entry``; its ``next`` stays valid for readers already on it."""
    nxt, prev = entry.next, entry.prev
    nxt.prev = prev
    prev.next = nxt
    entry.prev = LIST_POISON2


def list_del(entry: list_head) -> None:
    list_del_rcu(entry)
    entry.next = LIST_POISON1


def list_for_each_entry_rcu(head: list_head) -> Iterator[Any]:
    """Yield each entry after ``head`` (call inside a read-side section)."""
    p = head.next
    while p is not head:
        yield p
        p = p.next


list_for_each_entry = list_for_each_entry_rcu


def list_entries(head: list_head) -> list[Any]:
    """The entries as a Python list, without scheduling points (for reports and tests)."""
    out = []
    p = peek(head, "next")
    while p is not head:
        out.append(p)
        p = peek(p, "next")
    return out
