"""Declared shared state and the one scheduling point.

Kernel objects derive from :class:`KObject`. A field that more than one CPU
touches is declared on the class with :class:`shared`::

    class vmd_irq(KObject):
        virq = shared()
        enabled = shared()

Every read or write of such a field passes :func:`sched_point` — the single
hook the controlled scheduler turns into a choice (run on, switch CPU,
deliver an interrupt). Locks, RCU/SRCU read sections, grace-period waits,
allocation and free call the same hook with their own access kind.

Free-running, a shared field costs nothing at all: the descriptor removes
itself from its class once the class is built, so ``obj.virq`` is a plain
attribute read. A controlled scheduler calls :func:`instrument` when it
starts, which puts every declared descriptor back (and ``instrument(False)``
takes them out again when it ends).

Every KObject carries ``_kid``, a serial number taken at construction. It
names the object in reports and is stable across re-executions of the same
schedule from the same snapshot, which is what the explorer needs to compare
accesses of different executions.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from typing import Any

# Access kinds a scheduling point reports.
READ = "read"
WRITE = "write"
ACQUIRE = "acquire"  # lock taken (a read-modify-write of the lock word)
RELEASE = "release"
RCU_LOCK = "rcu_read_lock"  # read-section entry/exit: writes of the reader state
RCU_UNLOCK = "rcu_read_unlock"
WAIT = "wait"  # a grace-period/completion wait: reads the state it waits on
ALLOC = "alloc"
FREE = "free"  # kfree: a write of the whole object

PointHook = Callable[[Any, str, str], None]


class _Hook:
    """Where the controlled scheduler plugs in; ``fn`` is None when free-running."""

    __slots__ = ("fn", "silent")

    def __init__(self) -> None:
        self.fn: PointHook | None = None
        # Set by a write that stores the object already in the field (a silent store: the
        # state does not change); the scheduler reads and clears it after each step.
        self.silent = False


hook = _Hook()
_serials = itertools.count(1)


def sched_point(obj: Any, field: str, kind: str) -> None:
    """Report an access to shared state; a choice point under a controlled scheduler."""
    fn = hook.fn
    if fn is not None:
        fn(obj, field, kind)


def next_serial() -> int:
    return next(_serials)


def reset_serials(start: int) -> None:
    """Restart object numbering (the explorer does this when it restores a snapshot)."""
    global _serials
    _serials = itertools.count(start)


def peek_serial() -> int:
    """The serial the next object will get, without taking it."""
    global _serials
    n = next(_serials)
    _serials = itertools.count(n)
    return n


class KObject:
    """Base of every kernel object: a serial number, plain attributes, declared shared fields.

    The allocator (``k.mem``) poisons a freed object by switching its class to
    a poisoned twin, so the normal path pays nothing for use-after-free
    detection.
    """

    _kid: int  # the serial number, set in __new__

    def __new__(cls, *args: Any, **kw: Any) -> KObject:
        obj = object.__new__(cls)
        object.__setattr__(obj, "_kid", next(_serials))  # keeps the compact instance layout
        return obj

    @staticmethod
    def _kasan_check(obj: Any, field: str, access: str) -> None:
        """Called through the class after a scheduling point: the poisoned twin raises."""

    def kname(self) -> str:
        """``type#serial``: how reports name this object."""
        return f"{type(self).__name__}#{self._kid}"


class shared:
    """A data descriptor for a field more than one CPU touches.

    ``obj.f`` reports (obj, "f", READ) and ``obj.f = v`` (obj, "f", WRITE) to
    the scheduling point before the access happens, then reads or writes the
    instance dictionary as a plain attribute would.
    """

    __slots__ = ("name", "owner")

    def __init__(self) -> None:
        self.name = ""

    def __set_name__(self, owner: type, name: str) -> None:
        if not issubclass(owner, KObject):
            # (a plain class has no serial number to name it by, nor a poisoned twin)
            raise TypeError(f"shared field {owner.__qualname__}.{name}: {owner.__qualname__} "
                            "must derive from KObject (vmdsim.kernel.shared)")
        self.name = name
        self.owner = owner
        _declared.append(self)
        if not _instrumented:
            delattr(owner, name)  # free-running: a plain attribute

    def __get__(self, obj: Any, objtype: type | None = None) -> Any:
        if obj is None:
            return self
        fn = hook.fn
        if fn is not None:
            fn(obj, self.name, READ)
            type(obj)._kasan_check(obj, self.name, "read")  # freed while we were stopped?
        try:
            return obj.__dict__[self.name]
        except KeyError:
            raise AttributeError(f"{type(obj).__name__}.{self.name} was never set") from None

    def __set__(self, obj: Any, value: Any) -> None:
        fn = hook.fn
        if fn is not None:
            fn(obj, self.name, WRITE)
            type(obj)._kasan_check(obj, self.name, "write")
            # identity, not ==: cheap, and never runs a scenario's own __eq__
            if obj.__dict__.get(self.name, _UNSET) is value:
                hook.silent = True
        obj.__dict__[self.name] = value


_declared: list[shared] = []
_instrumented = False
_UNSET = object()


# -- accesses that are not shared, said so ---------------------------------------------
def init_private(obj: KObject, **fields: Any) -> None:
    """Give shared fields of ``obj`` their first values while no other CPU can see it
    (in its constructor, or before it is published): no shared access, no scheduling
    point. Linux's plain stores before ``rcu_assign_pointer`` or ``list_add``."""
    obj.__dict__.update(fields)


def peek(obj: KObject, field: str, default: Any = _UNSET) -> Any:
    """Read a shared field without a scheduling point. Only where the access is declared
    another way (a wait's condition: ``block_until(access=...)`` announces it; an
    atomic whose step announced itself) or is no part of the explored program (a view
    such as ``/proc/interrupts``, a scenario's final check)."""
    d = obj.__dict__
    if default is _UNSET:
        return d[field]
    return d.get(field, default)


def poke(obj: KObject, field: str, value: Any) -> None:
    """Write a shared field without a scheduling point; as :func:`peek`, for a write
    whose access is declared another way or that no other CPU can see yet."""
    obj.__dict__[field] = value


def instrument(on: bool = True) -> None:
    """Install (or remove) every shared-field descriptor: on while a controlled run goes."""
    global _instrumented
    if on == _instrumented:
        return
    _instrumented = on
    for d in _declared:
        if on:
            setattr(d.owner, d.name, d)
        elif d.owner.__dict__.get(d.name) is d:
            delattr(d.owner, d.name)


def shared_fields(cls: type) -> list[str]:
    """The names of ``cls``'s declared shared fields, base classes included."""
    names: list[str] = []
    for d in _declared:
        if issubclass(cls, d.owner) and d.name not in names:
            names.append(d.name)
    return names
