"""Variants: a run's own version of a named function of the modelled kernel or driver.

A bug is often one changed line in one function. To express it without
editing vmdsim, write that function again in a Python file and mark it with
the dotted name of the function it replaces::

    from vmdsim.variants import variant

    @variant("vmdsim.drivers.vmd.msi.vmd_msi_init")
    def vmd_msi_init(domain, info, virq, hwirq, arg):
        ...  # the code as it was before the fix

and pass the file with ``--variant FILE`` to ``vmdsim run``, ``check`` or
``replay``. The target is any function or method reachable by its dotted
name: a module-level function (``vmdsim.kernel.irq.flow.handle_simple_irq``),
a method (``vmdsim.kernel.irq.irqdesc.irq_desc.<name>``), or an entry of an
ops table held by a module (``vmdsim.drivers.vmd.msi.vmd_msi_domain_ops.msi_init``),
also one that is empty (NULL in Linux: the variant fills it, with no
parameters to compare it against).

While a variant is applied (:func:`applied`), every reference vmdsim's
modules hold to the original — the module global, the names other modules
imported it under, ops tables and protocol classes that hold it, one level
deep — points at the variant instead; leaving restores them all. A variant
must take the same parameters, by name, as the function it replaces, and
it cannot change a function's callers: a caller that was already running
keeps the code it had.

What is installed counts its calls (:func:`calls`), so a command can say when a
variant was never called: the run never reached the code it replaces (another
release's code path, say), and its verdict says nothing about the variant.

Model-only: Linux has no such thing (livepatch is the nearest, and is not
modelled).
"""

from __future__ import annotations

import functools
import importlib
import importlib.util
import inspect
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import FunctionType, ModuleType
from typing import Any

from vmdsim.errors import VmdsimError

PREFIX = "vmdsim."


class VariantError(VmdsimError):
    """A variant file or target that cannot be applied; the message says where and why."""


@dataclass(frozen=True)
class Variant:
    """A replacement for the function named ``target``, defined at ``where`` (file:line)."""

    target: str
    func: Callable[..., Any]
    where: str

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.func(*args, **kwargs)


def variant(target: str) -> Callable[[Callable[..., Any]], Variant]:
    """Mark the decorated function as the replacement of ``target`` (a dotted name)."""
    if not isinstance(target, str) or not target.startswith(PREFIX):
        raise VariantError(f"@variant({target!r}): the target is a dotted name starting "
                           f"with {PREFIX!r}")

    def mark(func: Callable[..., Any]) -> Variant:
        code = getattr(func, "__code__", None)
        where = f"{code.co_filename}:{code.co_firstlineno}" if code else repr(func)
        return Variant(target, func, where)
    return mark


# -- finding a target -----------------------------------------------------------------------
def _resolve(v: Variant) -> tuple[Any, str, Any]:
    """(the object holding the target, the attribute name, the original function, or None
    for an ops-table entry that is empty)."""
    parts = v.target.split(".")
    module: ModuleType | None = None
    i = len(parts)
    while i > 1:
        name = ".".join(parts[:i])
        try:
            found = importlib.util.find_spec(name)
        except (ImportError, ValueError):
            found = None
        if found is not None:
            module = importlib.import_module(name)
            break
        i -= 1
    if module is None or i == len(parts):
        raise VariantError(f"{v.where}: @variant({v.target!r}): no such function in vmdsim "
                           "(write the module's dotted path and the function's name)")
    holder: Any = module
    for attr in parts[i:-1]:
        if not hasattr(holder, attr):
            raise VariantError(f"{v.where}: @variant({v.target!r}): {_name(holder)} has no "
                               f"{attr!r}")
        holder = getattr(holder, attr)
    last = parts[-1]
    original = inspect.getattr_static(holder, last, None)
    if isinstance(original, staticmethod | classmethod):
        original = original.__func__
    if original is None and not isinstance(holder, ModuleType | type) and \
            last in getattr(holder, "__dict__", {}):
        return holder, last, None  # an ops-table entry that is NULL: the variant fills it
    if not isinstance(original, FunctionType):
        what = "nothing" if original is None else f"a {type(original).__name__}"
        raise VariantError(f"{v.where}: @variant({v.target!r}): {'.'.join(parts[:-1])} holds "
                           f"{what} named {last!r}, not a function")
    _same_parameters(v, original)
    return holder, last, original


def _name(holder: Any) -> str:
    return holder.__name__ if isinstance(holder, ModuleType | type) else type(holder).__name__


def _same_parameters(v: Variant, original: FunctionType) -> None:
    want = [(p.name, p.kind) for p in inspect.signature(original).parameters.values()]
    got = [(p.name, p.kind) for p in inspect.signature(v.func).parameters.values()]
    if want != got:
        raise VariantError(f"{v.where}: @variant({v.target!r}) takes "
                           f"({', '.join(n for n, _ in got)}), the function it replaces takes "
                           f"({', '.join(n for n, _ in want)})")


# -- applying -------------------------------------------------------------------------------
Undo = list[tuple[Any, str, Any, bool]]  # (holder, key, old value, holder is a dict)
_CALLS: dict[str, int] = {}  # target -> calls of its variant since it was applied


def calls(v: Variant) -> int:
    """How often the installed ``v`` ran since it was applied (in this process)."""
    return _CALLS.get(v.target, 0)


def _counting(v: Variant) -> Callable[..., Any]:
    """``v``'s function, counting its calls (same name, same parameters)."""
    func = v.func
    target = v.target

    @functools.wraps(func)
    def counted(*args: Any, **kwargs: Any) -> Any:
        _CALLS[target] = _CALLS.get(target, 0) + 1
        return func(*args, **kwargs)
    return counted


def _swap(holder: Any, key: str, value: Any, undo: Undo, in_dict: bool = False) -> None:
    if in_dict:
        undo.append((holder, key, holder[key], True))
        holder[key] = value
    else:
        undo.append((holder, key, holder.__dict__[key], False))
        setattr(holder, key, value)


def _rewire(original: FunctionType, new: Callable[..., Any], undo: Undo) -> int:
    """Point every reference vmdsim's modules hold to ``original`` at ``new``."""
    count = 0
    seen: set[int] = set()
    for name, mod in list(sys.modules.items()):
        if not (name == "vmdsim" or name.startswith(PREFIX)) or mod is None:
            continue
        for key, value in list(vars(mod).items()):
            if value is original:
                _swap(mod, key, new, undo)
                count += 1
            elif id(value) not in seen and _owned(value):
                seen.add(id(value))
                count += _rewire_in(value, original, new, undo)
    return count


def _owned(value: Any) -> bool:
    """A module-level dict, or a class or instance vmdsim defines (ops tables, protocols)."""
    if isinstance(value, dict):
        return True
    if isinstance(value, Variant):
        return False  # a variant names its function; it is not a reference to rewire
    cls = value if isinstance(value, type) else type(value)
    return cls.__module__.startswith(PREFIX) and hasattr(value, "__dict__")


def _rewire_in(value: Any, original: FunctionType, new: Callable[..., Any], undo: Undo) -> int:
    count = 0
    if isinstance(value, dict):
        for key, item in list(value.items()):
            if item is original:
                _swap(value, key, new, undo, in_dict=True)
                count += 1
        return count
    for key, item in list(vars(value).items()):
        if item is original:
            _swap(value, key, new, undo)
            count += 1
        elif isinstance(item, staticmethod) and item.__func__ is original:
            _swap(value, key, staticmethod(new), undo)
            count += 1
    return count


@contextmanager
def applied(variants: list[Variant]) -> Iterator[None]:
    """Run the body with ``variants`` in place of their targets; restore them after."""
    undo: Undo = []
    done: list[tuple[FunctionType, Callable[..., Any]]] = []
    try:
        for v in variants:
            holder, key, original = _resolve(v)
            installed = _counting(v)
            _CALLS[v.target] = 0
            if not isinstance(holder, ModuleType):
                raw = inspect.getattr_static(holder, key)
                new = staticmethod(installed) if isinstance(raw, staticmethod) else installed
                _swap(holder, key, new, undo)
            if original is None:
                continue  # an empty ops-table entry: nothing else refers to it
            _rewire(original, installed, undo)  # held elsewhere too (imports, ops tables)
            done.append((original, installed))
        yield
    finally:
        for holder, key, old, in_dict in reversed(undo):
            if in_dict:
                holder[key] = old
            else:
                setattr(holder, key, old)
        # A module imported while the variants were applied took the variant under its
        # own name: point it back at the original too.
        for original, func in reversed(done):
            if isinstance(func, FunctionType):
                _rewire(func, original, [])


# -- loading a file -------------------------------------------------------------------------
def load_variant_file(path: str) -> list[Variant]:
    """The variants a Python file defines, each checked against its target."""
    p = Path(path)
    if p.suffix != ".py":
        raise VariantError(f"--variant {path}: a variant is a Python file (.py)")
    if not p.is_file():
        raise VariantError(f"--variant {path}: no such file")
    spec = importlib.util.spec_from_file_location(f"vmdsim_variant_{abs(hash(p.resolve()))}",
                                                  p)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    except VariantError as e:  # raised by @variant as the file ran
        raise VariantError(f"{path}{_line_of(e, p)}: {e}") from None
    except Exception as e:  # the user's file: say where it failed, not a traceback
        line = _line_of(e, p)
        raise VariantError(f"{path}{line}: {type(e).__name__}: {e}") from None
    found = [v for v in vars(module).values() if isinstance(v, Variant)]
    if not found:
        raise VariantError(f"{path}: defines no @variant function")
    targets = [v.target for v in found]
    dup = sorted({t for t in targets if targets.count(t) > 1})
    if dup:
        raise VariantError(f"{path}: two variants of {dup[0]}")
    for v in found:
        _resolve(v)
    return found


def _line_of(e: BaseException, p: Path) -> str:
    tb = e.__traceback__
    line = ""
    while tb is not None:
        if Path(tb.tb_frame.f_code.co_filename).resolve() == p.resolve():
            line = f":{tb.tb_lineno}"
        tb = tb.tb_next
    if isinstance(e, SyntaxError) and e.lineno:
        line = f":{e.lineno}"
    return line
