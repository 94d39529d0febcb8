"""The import graph of watcher/ and api/: every module imports, no cycles, watcher/ below api/.

The graph is read from each module's syntax tree: every ``import`` and
``from ... import``, at the top or inside a function (those run too, only
later), except under ``if TYPE_CHECKING:`` (never run). ``from pkg import x``
is an edge to ``pkg.x`` when that is a module, else to ``pkg`` itself. The
package a module sits in is not an edge of its own: Python initialises it
first, whoever imports what, so it cannot close a circle at run time.
"""

from __future__ import annotations

import ast
import importlib
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("watcher", "api")
# The command line and the daemon start the API, so they are the two places in
# watcher/ that may load it; nothing else there may (chain code, the ledger...).
STARTS_THE_API = frozenset({"watcher.__main__", "watcher.daemon"})


def _name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_name(p): p for pkg in PACKAGES for p in sorted((ROOT / pkg).rglob("*.py"))}


def _type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _statements(node: ast.AST) -> Iterator[ast.Import | ast.ImportFrom]:
    for child in ast.iter_child_nodes(node):
        if isinstance(child, ast.If) and _type_checking(child.test):
            for stmt in child.orelse:
                yield from _statements(ast.Module(body=[stmt], type_ignores=[]))
        elif isinstance(child, (ast.Import, ast.ImportFrom)):
            yield child
        else:
            yield from _statements(child)


def imports_of(module: str) -> set[str]:
    """The modules of watcher/ and api/ that ``module`` imports (edges of the graph)."""
    path = MODULES[module]
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    out: set[str] = set()
    for stmt in _statements(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(stmt, ast.Import):
            out.update(alias.name for alias in stmt.names)
            continue
        base = stmt.module or ""
        if stmt.level:  # relative: climb from this module's package
            up = package.split(".")[: len(package.split(".")) - (stmt.level - 1)]
            base = ".".join([*up, base] if base else up)
        for alias in stmt.names:
            sub = f"{base}.{alias.name}"
            out.add(sub if sub in MODULES else base)
    return {m for m in out if m in MODULES and m != module}


def graph() -> dict[str, set[str]]:
    return {m: imports_of(m) for m in MODULES}


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Every strongly connected group of more than one module (Tarjan), each as a loop."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in sorted(edges[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group: list[str] = []
            while True:
                w = stack.pop()
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                found.append(_loop(edges, set(group)))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return found


def _loop(edges: dict[str, set[str]], group: set[str]) -> list[str]:
    """One concrete circle through a strongly connected group: a -> b -> ... -> a."""
    start = min(group)
    paths = {start: [start]}
    todo = [start]
    while todo:  # breadth first: the shortest way back to the start
        v = todo.pop(0)
        for w in sorted(edges[v] & group):
            if w == start:
                return [*paths[v], start]
            if w not in paths:
                paths[w] = [*paths[v], w]
                todo.append(w)
    return sorted(group)  # unreachable for a strongly connected group


@pytest.mark.parametrize("module", sorted(MODULES))
def test_every_module_imports(module: str) -> None:
    importlib.import_module(module)


def test_no_import_cycles() -> None:
    found = cycles(graph())
    assert not found, "import cycles: " + "; ".join(" -> ".join(c) for c in found)


def test_watcher_does_not_import_api() -> None:
    wrong = {
        m: sorted(api)
        for m, deps in graph().items()
        if m.split(".")[0] == "watcher" and m not in STARTS_THE_API
        if (api := {d for d in deps if d.split(".")[0] == "api"})
    }
    assert not wrong, f"watcher/ modules importing api/: {wrong}"


def test_the_checks_can_fail() -> None:
    """The cycle finder sees a circle when there is one, and the graph sees in-function imports."""
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c", "a"]]
    assert cycles({"a": {"b"}, "b": set()}) == []
    assert "watcher.chains.solana" in imports_of("watcher.daemon")  # imported in a function
    assert "watcher.chains.evm" not in imports_of("watcher.chains.evm_reorg")
