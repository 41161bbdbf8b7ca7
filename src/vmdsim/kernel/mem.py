"""``k.mem``: the slab allocator with KASAN and kmemleak, as far as a model needs them.

``kmalloc(cls, *args)`` constructs a kernel object (Python objects are always
initialised, so ``kzalloc`` is the same call) and records where it was
allocated; ``kfree(obj)`` poisons it. Poisoning switches the object's class to
a generated twin whose every attribute access raises :class:`UseAfterFree`
— a KASAN-style report naming the object, the field, the function that
touched it, and the allocation and free sites. A second ``kfree`` raises
:class:`DoubleFree`. ``leaks(owner)`` lists what an owner still holds (what
kmemleak would find once the owner is gone).

Fault injection (``fail_nth``) makes the Nth allocation from now return None,
as ``CONFIG_FAILSLAB`` does, so that every error path of a probe can be
walked.

Simplifications: no sizes, slabs or caches; an object is its Python instance.
A freed object's memory is never reused, so a stale pointer always hits the
poison (real KASAN quarantines freed memory for the same reason).
"""

from __future__ import annotations

import sys
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar

from vmdsim.errors import VmdsimError
from vmdsim.kernel.shared import ALLOC, FREE, KObject, sched_point

if TYPE_CHECKING:
    from types import FrameType

    from vmdsim.kernel.core import Kernel

T = TypeVar("T")

# Attributes the poisoned twin still answers: what Python itself needs.
_SAFE = frozenset({"__class__", "__dict__", "_kid", "kname", "__reduce_ex__", "__reduce__",
                   "__getstate__", "__setstate__", "__deepcopy__", "__copy__"})


class KasanReport(VmdsimError):
    """A memory-safety bug found by the allocator's checks."""

    kind = "memory-error"


class UseAfterFree(KasanReport):
    kind = "use-after-free"

    def __init__(self, obj: Any, field: str, access: str, where: str) -> None:
        info = object.__getattribute__(obj, "__dict__")["_kmem"]
        self.object, self.field, self.access, self.where = obj, field, access, where
        self.alloc_site, self.free_site = info.alloc_site, info.free_site
        super().__init__(
            f"BUG: KASAN: use-after-free in {where}\n"
            f"{access} of {info.name}.{field}\n"
            f"allocated by {info.alloc_site}\n"
            f"freed by {info.free_site}")


class DoubleFree(KasanReport):
    kind = "double-free"

    def __init__(self, obj: Any, where: str) -> None:
        info = object.__getattribute__(obj, "__dict__")["_kmem"]
        self.object, self.where = obj, where
        super().__init__(
            f"BUG: KASAN: double-free in {where}\n"
            f"object {info.name}\nallocated by {info.alloc_site}\n"
            f"first freed by {info.free_site}")


class MemoryLeak(KasanReport):
    kind = "leak"

    def __init__(self, owner: str, objs: list[Any]) -> None:
        self.owner, self.objects = owner, objs
        lines = [f"kmemleak: {len(objs)} unreferenced object(s) of {owner}:"]
        for o in objs:
            info = o._kmem
            lines.append(f"  {info.name} allocated by {info.alloc_site}")
        super().__init__("\n".join(lines))


class BadFree(KasanReport):
    kind = "invalid-free"


class NullPointerDereference(VmdsimError):
    """A pointer the kernel follows is NULL: the oops Linux prints as "BUG: kernel NULL
    pointer dereference" (the model names the field and the function)."""

    kind = "null-pointer-dereference"

    def __init__(self, field: str, where: str) -> None:
        self.field, self.where = field, where
        super().__init__(f"BUG: kernel NULL pointer dereference in {where}: {field} is NULL")


class AllocInfo:
    """What the allocator remembers of one object (KASAN's alloc/free tracks)."""

    __slots__ = ("name", "owner", "alloc_site", "free_site")

    def __init__(self, name: str, owner: str, alloc_site: str) -> None:
        self.name, self.owner, self.alloc_site = name, owner, alloc_site
        self.free_site = ""


def call_site(depth: int) -> str:
    """``function (file:line)`` of the frame ``depth`` levels up, skipping allocator frames."""
    f: FrameType | None = sys._getframe(depth + 1)
    while f is not None and f.f_globals.get("__name__") == __name__:
        f = f.f_back
    if f is None:
        return "?"
    code = f.f_code
    return f"{code.co_name} ({code.co_filename.rsplit('/', 1)[-1]}:{f.f_lineno})"


_poisoned: dict[type, type] = {}


def _poisoned_class(cls: type) -> type:
    """The freed twin of ``cls``: same layout, every access reports."""
    twin = _poisoned.get(cls)
    if twin is not None:
        return twin

    def __getattribute__(self: Any, name: str) -> Any:  # noqa: N807
        if name in _SAFE:
            return object.__getattribute__(self, name)
        raise UseAfterFree(self, name, "read", call_site(1))

    def __setattr__(self: Any, name: str, value: Any) -> NoReturn:  # noqa: N807
        raise UseAfterFree(self, name, "write", call_site(1))

    def __delattr__(self: Any, name: str) -> NoReturn:  # noqa: N807
        raise UseAfterFree(self, name, "write", call_site(1))

    def _kasan_check(obj: Any, field: str, access: str) -> NoReturn:
        raise UseAfterFree(obj, field, access, call_site(2))

    def __repr__(self: Any) -> str:  # noqa: N807
        return f"<freed {object.__getattribute__(self, '__dict__')['_kmem'].name}>"

    def kname(self: Any) -> str:
        # The name it had while live: the explorer matches accesses by name.
        return f"{cls.__name__}#{object.__getattribute__(self, '_kid')}"

    twin = type(f"freed_{cls.__name__}", (cls,), {
        "__getattribute__": __getattribute__, "__setattr__": __setattr__,
        "__delattr__": __delattr__, "__repr__": __repr__, "kname": kname,
        "_kasan_check": staticmethod(_kasan_check), "__module__": cls.__module__,
        "__reduce_ex__": lambda self, proto: _reduce_freed(self, cls)})
    _poisoned[cls] = twin
    return twin


def _reduce_freed(obj: Any, cls: type) -> tuple:
    d = object.__getattribute__(obj, "__dict__")
    return (_rebuild_freed, (cls, dict(d)))


def _rebuild_freed(cls: type, state: dict) -> Any:
    obj: Any = object.__new__(_poisoned_class(cls))
    object.__getattribute__(obj, "__dict__").update(state)
    return obj


def is_freed(obj: Any) -> bool:
    return type(obj) in _poisoned.values()


class Allocator:
    """``k.mem``: kmalloc/kzalloc/kfree/kfree_rcu, poisoning, leak and fault reports."""

    def __init__(self, k: Kernel) -> None:
        self.k = k
        self.live: dict[int, Any] = {}  # by allocation number (survives a deep copy)
        self._slot = 0
        self.allocations = 0
        self.frees = 0
        self._fail_at: int | None = None
        self.failed = 0

    # -- allocation ------------------------------------------------------------
    def kmalloc(self, cls: type[T], *args: Any, owner: str = "kernel", **kw: Any) -> T | None:
        """Allocate and construct ``cls(*args, **kw)``; None when fault injection says so."""
        self.allocations += 1
        if self._fail_at is not None:
            self._fail_at -= 1
            if self._fail_at == 0:
                self._fail_at = None
                self.failed += 1
                return None
        obj: T = cls(*args, **kw)
        if not isinstance(obj, KObject):
            raise TypeError(f"kmalloc: {cls.__name__} is not a KObject")
        object.__setattr__(obj, "_kmem", AllocInfo(obj.kname(), owner, call_site(1)))
        self._slot += 1
        object.__setattr__(obj, "_slot", self._slot)
        self.live[self._slot] = obj
        sched_point(obj, "*", ALLOC)
        return obj

    kzalloc = kmalloc

    def fail_nth(self, n: int | None) -> None:
        """Make the ``n``-th allocation from now fail (1 = the next one); None disarms."""
        if n is not None and n < 1:
            raise ValueError("fail_nth: n counts from 1")
        self._fail_at = n

    # -- free ------------------------------------------------------------------
    def kfree(self, obj: Any) -> None:
        """Free ``obj``; ``kfree(None)`` is a no-op, as ``kfree(NULL)`` is."""
        if obj is None:
            return
        d = object.__getattribute__(obj, "__dict__")
        info = d.get("_kmem")
        if info is None:
            raise BadFree(f"BUG: KASAN: invalid-free in {call_site(1)}: {obj!r} "
                          "was not allocated by kmalloc")
        sched_point(obj, "*", FREE)
        if info.free_site:
            raise DoubleFree(obj, call_site(1))
        info.free_site = call_site(1)
        self.live.pop(d["_slot"], None)
        self.frees += 1
        obj.__class__ = _poisoned_class(type(obj))

    def kfree_rcu(self, obj: Any) -> None:
        """Free ``obj`` after an RCU grace period (``kfree_rcu``)."""
        if obj is None:
            return
        self.k.rcu.call(self.kfree, obj)

    # -- reports ---------------------------------------------------------------
    def leaks(self, owner: str | None = None) -> list[Any]:
        """Objects still allocated (by ``owner``, if given), oldest first."""
        objs: Iterable[Any] = self.live.values()
        if owner is not None:
            objs = [o for o in objs if o._kmem.owner == owner]
        return list(objs)

    def check_leaks(self, owner: str) -> None:
        """Raise :class:`MemoryLeak` if ``owner`` still holds objects."""
        objs = self.leaks(owner)
        if objs:
            raise MemoryLeak(owner, objs)

    def owner_counts(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for o in self.live.values():
            owner = o._kmem.owner
            counts[owner] = counts.get(owner, 0) + 1
        return counts
