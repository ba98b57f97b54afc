"""The package's layers point one way, read off the source (every import, type-only ones too).

- Nothing outside ``consolidator.cli`` imports a command front-end: the process shell the entry
  points share lives in ``consolidator.process``.
- There is no import cycle between the package's modules.
- Venue protocols are sans-I/O: no asyncio, sockets or WebSocket library.
- Independent checkers stay independent: the simulator, and the comparator (mdcompare's
  reference parser and client, ``consolidator.compare``), never import the writer's venue
  protocols or its I/O driver, not even through another module (a shared bug would hide
  itself).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "consolidator"

_IO_MODULES = ("asyncio", "socket", "ssl", "websockets", "picows", "uvloop", "selectors")


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imports(path: Path, name: str) -> set[str]:
    """Every module ``path`` imports anywhere in its body (absolute names)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)
    return found


def _graph() -> dict[str, set[str]]:
    modules = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        graph[name] = {m for m in _imports(path, name) if m in modules and m != name}
    return graph


def _all_imports() -> dict[str, set[str]]:
    return {_module_name(p): _imports(p, _module_name(p)) for p in PACKAGE.rglob("*.py")}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def test_the_cycle_finder_finds_a_cycle() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert _cycles(graph) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_the_package_has_no_import_cycle() -> None:
    graph = _graph()
    assert len(graph) > 50, "the import graph was not read"
    assert _cycles(graph) == []


def test_only_command_front_ends_import_the_cli_package() -> None:
    upward = {
        name: sorted(m for m in deps if m.startswith("consolidator.cli"))
        for name, deps in _graph().items()
        if not name.startswith("consolidator.cli")
    }
    assert {name: deps for name, deps in upward.items() if deps} == {}


@pytest.mark.parametrize("package", ["consolidator.venues"])
def test_venue_protocols_do_no_io(package: str) -> None:
    offenders = {
        name: sorted(m for m in deps if m.split(".")[0] in _IO_MODULES)
        for name, deps in _all_imports().items()
        if name.startswith(package)
    }
    assert offenders, f"no module of {package} was read"
    assert {name: deps for name, deps in offenders.items() if deps} == {}


@pytest.mark.parametrize("package", ["consolidator.sim", "consolidator.compare"])
def test_independent_checkers_share_no_code_with_the_writer(package: str) -> None:
    graph = _graph()
    assert any(name.startswith(package) for name in graph), f"no module of {package} was read"
    offenders = {
        name: sorted(
            m for m in _reachable(graph, name)
            if m.startswith(("consolidator.venues", "consolidator.feed"))
        )
        for name in graph
        if name.startswith(package)
    }  # fmt: skip
    assert {name: deps for name, deps in offenders.items() if deps} == {}


def _reachable(graph: dict[str, set[str]], start: str) -> set[str]:
    """Every module ``start`` imports, directly or through others."""
    seen: set[str] = set()
    todo = [start]
    while todo:
        for module in graph.get(todo.pop(), ()):
            if module not in seen:
                seen.add(module)
                todo.append(module)
    return seen
