"""The code's shape: no import circles, no private names borrowed across modules, small modules."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("engine", "tui")
# Past this, a module does more than one job: split it by job.
MAX_MODULE_LINES = 400


def _modules() -> dict[str, Path]:
    modules = {}
    for package in PACKAGES:
        for path in sorted((REPO / package).rglob("*.py")):
            parts = path.relative_to(REPO).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            modules[name] = path
    return modules


def _is_type_checking_block(node: ast.AST) -> bool:
    return isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)


def _imports(tree: ast.AST) -> Iterator[ast.Import | ast.ImportFrom]:
    """Every import the code runs (at any depth), leaving out ``if TYPE_CHECKING:`` blocks."""
    stack: list[ast.AST] = [tree]
    while stack:
        node = stack.pop()
        if _is_type_checking_block(node):
            continue
        if isinstance(node, ast.Import | ast.ImportFrom):
            yield node
        stack.extend(ast.iter_child_nodes(node))


def _imported_modules(node: ast.Import | ast.ImportFrom, known: dict[str, Path]) -> set[str]:
    if isinstance(node, ast.Import):
        return {alias.name for alias in node.names if alias.name in known}
    base = node.module or ""
    found = set()
    for alias in node.names:
        if f"{base}.{alias.name}" in known:  # `from engine.serve import launcher`
            found.add(f"{base}.{alias.name}")
        elif base in known:
            found.add(base)
    return found


MODULES = _modules()
TREES = {name: ast.parse(path.read_text(encoding="utf-8")) for name, path in MODULES.items()}


def test_found_the_packages() -> None:
    assert {"engine.errors", "engine.serve.launcher", "tui.app", "tui.cli"} <= set(MODULES)


def test_no_private_name_is_imported_from_another_module() -> None:
    borrowed = [
        f"{name}: from {node.module} import {alias.name}"
        for name, tree in TREES.items()
        for node in _imports(tree)
        if isinstance(node, ast.ImportFrom) and node.module
        for alias in node.names
        if alias.name.startswith("_") and not alias.name.startswith("__")
    ]
    assert borrowed == []


def test_no_import_circle() -> None:
    graph = {
        name: {m for node in _imports(tree) for m in _imported_modules(node, MODULES) if m != name}
        for name, tree in TREES.items()
    }
    # A package's __init__ is imported on the way to its modules; only real module edges count.
    graph = {name: {m for m in deps if not name.startswith(m + ".")} for name, deps in graph.items()}
    circles: list[list[str]] = []
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(module: str) -> None:
        state[module] = 1
        path.append(module)
        for dep in sorted(graph.get(module, ())):
            if state.get(dep) == 1:
                circles.append([*path[path.index(dep) :], dep])
            elif dep not in state:
                visit(dep)
        path.pop()
        state[module] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module)
    assert circles == []


@pytest.mark.parametrize("name", sorted(MODULES))
def test_module_is_small_and_says_what_it_holds(name: str) -> None:
    path = MODULES[name]
    assert ast.get_docstring(TREES[name]), f"{path} has no module docstring"
    assert len(path.read_text(encoding="utf-8").splitlines()) <= MAX_MODULE_LINES


@pytest.mark.parametrize(
    "folder", sorted(path.parent.name for path in (REPO / "engine").glob("*/__init__.py"))
)
def test_an_engine_folder_says_what_it_holds_and_re_exports_nothing(folder: str) -> None:
    # Imports name the module (engine.quantize.runner), so a folder's __init__ never loads its modules.
    tree = ast.parse((REPO / "engine" / folder / "__init__.py").read_text())
    assert len(tree.body) == 1 and ast.get_docstring(tree), (
        f"engine/{folder}/__init__.py holds more than its docstring"
    )
