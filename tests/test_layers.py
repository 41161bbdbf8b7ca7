"""The layering rules of docs/design.md, checked on the source itself.

Imports are read from each module's syntax tree; an import under ``if TYPE_CHECKING:``
exists only for annotations and does not count.
"""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"


def _modules() -> dict[str, Path]:
    out = {}
    for p in SRC.rglob("*.py"):
        parts = p.relative_to(SRC).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = p
    return out


MODULES = _modules()


def _imports(path: Path) -> tuple[set[str], set[str]]:
    """(modules imported at module level, modules imported inside a function)."""
    top: set[str] = set()
    local: set[str] = set()

    def visit(node: ast.AST, in_function: bool) -> None:
        for ch in ast.iter_child_nodes(node):
            if isinstance(ch, ast.If) and "TYPE_CHECKING" in ast.unparse(ch.test):
                continue
            if isinstance(ch, ast.Import | ast.ImportFrom):
                if isinstance(ch, ast.ImportFrom):
                    base = ch.module or ""
                    names = {base} | {f"{base}.{a.name}" for a in ch.names}
                else:
                    names = {a.name for a in ch.names}
                found = {n for n in names if n in MODULES}
                (local if in_function else top).update(found)
            else:
                visit(ch, in_function or isinstance(ch, ast.FunctionDef | ast.AsyncFunctionDef))

    visit(ast.parse(path.read_text()), False)
    return top, local


IMPORTS = {m: _imports(p) for m, p in MODULES.items()}


def test_no_import_cycles():
    graph = {m: {n for n in top if n != m} for m, (top, _) in IMPORTS.items()}
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    cycles = []

    def walk(m: str, path: list[str]) -> None:
        state[m] = 1
        for n in sorted(graph[m]):
            if state.get(n) == 1:
                cycles.append(path[path.index(n):] + [n] if n in path else [m, n])
            elif n not in state:
                walk(n, path + [n])
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            walk(m, [m])
    assert cycles == []


def test_no_function_local_imports_outside_the_cli():
    # The CLI defers its imports so that `vmdsim --help` starts fast; nothing else may.
    local = {m: sorted(loc) for m, (_, loc) in IMPORTS.items()
             if loc and not m.startswith("vmdsim.cli")}
    assert local == {}


def _importers(of: str, below: tuple[str, ...]) -> dict[str, list[str]]:
    return {m: sorted(n for n in top if n == of or n.startswith(of + "."))
            for m, (top, _) in IMPORTS.items()
            if m.startswith(below) and any(n == of or n.startswith(of + ".") for n in top)}


def test_nothing_below_check_imports_it():
    assert _importers("vmdsim.check", ("vmdsim.hw", "vmdsim.kernel", "vmdsim.drivers",
                                       "vmdsim.sim", "vmdsim.views")) == {}


def test_hardware_knows_no_os():
    assert _importers("vmdsim.kernel", ("vmdsim.hw",)) == {}
    assert _importers("vmdsim.drivers", ("vmdsim.hw",)) == {}


def test_kernel_and_drivers_see_only_the_register_definitions_of_hw():
    # hw/regs.py is the spec's register map (Linux: include/uapi/linux/pci_regs.h); the
    # explorer's scheduler alone listens to what devices report (hw/observe.py).
    def allowed(m: str) -> set[str]:
        return {"vmdsim.hw.regs"} | ({"vmdsim.hw.observe"} if m == "vmdsim.kernel.controlled"
                                     else set())

    bad = {m: [n for n in names if n not in allowed(m)]
           for m, names in _importers("vmdsim.hw", ("vmdsim.kernel", "vmdsim.drivers")).items()}
    assert {m: n for m, n in bad.items() if n} == {}


def test_drivers_do_not_import_each_other_but_through_the_kernel():
    # nvme and pcieport know nothing of vmd (a child driver does not know what it is behind).
    assert _importers("vmdsim.drivers.vmd", ("vmdsim.drivers.nvme",
                                             "vmdsim.drivers.pcieport")) == {}
