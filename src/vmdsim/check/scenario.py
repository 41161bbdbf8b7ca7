"""Named scenarios: small files that say what races, under which options.

A scenario is a function returning a :class:`~vmdsim.check.program.Program`,
registered with :func:`scenario`::

    @scenario("my-race", "CPU0 frees the thing while CPU1 reads it",
              options={"protocol": ("plain", "rcu")}, expect={"plain": "use-after-free"})
    def my_race(protocol="rcu"):
        return Program("my-race", setup, threads, check)

Options are keyword arguments with a fixed set of values (the first is the
default); ``expect`` maps an option value (or a tuple of values, in option
order) to the verdict the scenario is known to have, which the tests assert.
The built-in scenarios live in ``vmdsim.check.scenarios``; a user's own file
is loaded by path (``vmdsim check my_scenario.py``).
"""

from __future__ import annotations

import importlib
import importlib.util
import itertools
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from vmdsim.check.program import Program
from vmdsim.errors import VmdsimError


class ScenarioError(VmdsimError):
    """An unknown scenario or option value; the message lists the valid ones."""


@dataclass
class Scenario:
    name: str
    summary: str
    build: Callable[..., Program]
    options: dict[str, tuple[str, ...]] = field(default_factory=dict)
    expect: dict[object, str] = field(default_factory=dict)

    def program(self, **chosen: str | None) -> Program:
        kwargs = {}
        for opt, value in chosen.items():
            if value is None:
                continue
            if opt not in self.options:
                valid = ", ".join(f"--{_flag(o)}" for o in self.options) or "none"
                raise ScenarioError(f"scenario {self.name} has no option --{_flag(opt)}; "
                                    f"its options: {valid}")
            if value not in self.options[opt]:
                raise ScenarioError(f"scenario {self.name}: --{_flag(opt)} {value!r} is not "
                                    f"one of {', '.join(self.options[opt])}")
            kwargs[opt] = value
        return self.build(**kwargs)

    def combinations(self) -> list[dict[str, str]]:
        names = list(self.options)
        return [dict(zip(names, vals, strict=True))
                for vals in itertools.product(*(self.options[n] for n in names))]

    def expected(self, combo: dict[str, str]) -> str | None:
        values = tuple(combo[n] for n in self.options)
        for key in (values, *values):
            if key in self.expect:
                return self.expect[key]
        return self.expect.get((), None)


def _flag(opt: str) -> str:
    return opt.replace("_", "-")


REGISTRY: dict[str, Scenario] = {}
_captured: list[Scenario] = []  # what the scenario file being loaded registers


def scenario(name: str, summary: str, *, options: dict[str, tuple[str, ...]] | None = None,
             expect: dict[object, str] | None = None) -> Callable:
    def register(fn: Callable[..., Program]) -> Callable[..., Program]:
        sc = Scenario(name, summary, fn, dict(options or {}), dict(expect or {}))
        REGISTRY[name] = sc
        _captured.append(sc)
        return fn
    return register


def builtin() -> dict[str, Scenario]:
    importlib.import_module("vmdsim.check.scenarios")
    return REGISTRY


def _line_in(e: BaseException, path: Path) -> str:
    """The line of ``path`` where ``e`` was raised (the innermost frame in that file)."""
    lines = [f.lineno for f in traceback.extract_tb(e.__traceback__)
             if Path(f.filename).resolve() == path.resolve()]
    return str(lines[-1]) if lines else "?"


def find(name: str) -> Scenario:
    """A built-in scenario by name, or the scenarios a ``.py`` file registers."""
    if name.endswith(".py"):
        path = Path(name)
        if not path.is_file():
            raise ScenarioError(f"{name}: no such scenario file")
        builtin()
        _captured.clear()
        spec = importlib.util.spec_from_file_location(f"vmdsim_user_{path.stem}", path)
        if spec is None or spec.loader is None:
            raise ScenarioError(f"{name}: cannot be loaded as a Python module")
        module = importlib.util.module_from_spec(spec)
        try:
            spec.loader.exec_module(module)
        except SyntaxError as e:
            raise ScenarioError(f"{name}:{e.lineno}: syntax error: {e.msg}") from None
        except VmdsimError:
            raise
        except Exception as e:  # noqa: BLE001 - the user's file: say where it failed
            line = _line_in(e, path)
            cause: BaseException = e
            if isinstance(e, RuntimeError) and e.__cause__ is not None:
                cause = e.__cause__  # Python <3.12 wraps errors of __set_name__ in this
            raise ScenarioError(f"{name}:{line}: importing it raised "
                                f"{type(cause).__name__}: {cause}") from None
        added = list(_captured)
        for sc in added:  # a file's scenario is not a built-in one
            if REGISTRY.get(sc.name) is sc:
                del REGISTRY[sc.name]
        if len(added) != 1:
            raise ScenarioError(f"{name}: a scenario file must register exactly one scenario "
                                f"with @scenario(...); it registered {len(added)}")
        return added[0]
    scenarios = builtin()
    if name not in scenarios:
        raise ScenarioError(f"unknown scenario {name!r}; choose from "
                            f"{', '.join(sorted(scenarios))} (or give a .py file)")
    return scenarios[name]
