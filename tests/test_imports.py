"""The package's layers, read from its source: who may import whom.

- ``executors/`` is physics-free: it knows tasks only through :mod:`pyhf_dask.tasks`, never
  kernels, grids, graphs, results or stores (function-level imports included);
- the store knows nothing of transport: it imports no executor;
- module-level imports form no cycle.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import pyhf_dask

PACKAGE = Path(pyhf_dask.__file__).parent
NAME = "pyhf_dask"


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES = {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _targets(module: str, node: ast.Import | ast.ImportFrom) -> set[str]:
    """Package modules an import statement loads."""
    if isinstance(node, ast.Import):
        names = {a.name for a in node.names}
    else:
        base = node.module or ""
        if node.level:
            package = module if MODULES[module].name == "__init__.py" else module.rpartition(".")[0]
            for _ in range(node.level - 1):
                package = package.rpartition(".")[0]
            base = f"{package}.{base}" if base else package
        names = {f"{base}.{a.name}" if f"{base}.{a.name}" in MODULES else base for a in node.names}
    out = set()
    for full in names:
        name = full
        while name and name not in MODULES:  # "pyhf_dask.x.func" -> "pyhf_dask.x"
            name = name.rpartition(".")[0]
        if name.startswith(NAME):
            out.add(name)
    return out


def imports(module: str, *, top_level_only: bool) -> set[str]:
    """Package modules ``module`` imports: at module level only, or anywhere."""
    tree = ast.parse(MODULES[module].read_text(encoding="utf-8"))
    found: set[str] = set()

    def visit(node: ast.AST, top: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.Import | ast.ImportFrom):
                if top or not top_level_only:
                    found.update(_targets(module, child))
            elif isinstance(child, ast.If) and _is_type_checking(child):
                if not top_level_only:
                    visit(child, top)
            elif isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda):
                if not top_level_only:
                    visit(child, False)
            else:
                visit(child, top)

    visit(tree, True)
    found.discard(module)
    return found


def _in(module: str, *packages: str) -> bool:
    return any(module == p or module.startswith(f"{p}.") for p in packages)


def test_modules_found() -> None:
    assert "pyhf_dask.executors.adapter" in MODULES and "pyhf_dask.graph" in MODULES
    assert imports("pyhf_dask.graph", top_level_only=True) >= {"pyhf_dask.tasks"}


@pytest.mark.parametrize("module", sorted(m for m in MODULES if _in(m, "pyhf_dask.executors")))
def test_executors_are_physics_free(module: str) -> None:
    physics = ("kernels", "grid", "graph", "results", "store")
    banned = [f"{NAME}.{p}" for p in physics]
    bad = sorted(m for m in imports(module, top_level_only=False) if _in(m, *banned))
    assert not bad, f"{module} imports {bad}"


def test_tasks_protocol_imports_nothing_of_the_package() -> None:
    assert imports("pyhf_dask.tasks", top_level_only=False) == set()


def test_store_knows_no_executor() -> None:
    stores = [m for m in MODULES if _in(m, "pyhf_dask.store", "pyhf_dask.store_lock")]
    for module in stores:
        bad = sorted(
            m for m in imports(module, top_level_only=False) if _in(m, "pyhf_dask.executors")
        )
        assert not bad, f"{module} imports {bad}"


def _cycles() -> list[list[str]]:
    graph = {m: imports(m, top_level_only=True) for m in MODULES}
    found: list[list[str]] = []
    state: dict[str, int] = {}
    stack: list[str] = []

    def walk(m: str) -> None:
        state[m] = 1
        stack.append(m)
        for d in sorted(graph.get(m, ())):
            if state.get(d) == 1:
                found.append([*stack[stack.index(d) :], d])
            elif d not in state:
                walk(d)
        stack.pop()
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            walk(m)
    return found


def test_no_import_cycle() -> None:
    cycles = _cycles()
    assert not cycles, "import cycles: " + "; ".join(" -> ".join(c) for c in cycles)
