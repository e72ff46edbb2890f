"""The import graph of corpora, trainers and evalsuite has no cycle and no upward edge.

Imports inside functions count: a loop held together by a lazy import is still a loop. Layers:
corpora (0) < trainers (1) < evalsuite (2); a module may import its own layer or lower ones.
Edges from a package's modules into that package's own __init__ are ignored (`from pkg import x`).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
LAYER = {"corpora": 0, "trainers": 1, "evalsuite": 2}


def _modules() -> dict[str, Path]:
    mods = {}
    for pkg in LAYER:
        for file in (ROOT / pkg).rglob("*.py"):
            parts = list(file.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            mods[".".join(parts)] = file
    return mods


def _resolve(name: str, mods: dict[str, Path]) -> str | None:
    while name and name not in mods:
        name = name.rpartition(".")[0]
    return name or None


def import_graph() -> dict[str, set[str]]:
    """module -> the project modules it imports (anywhere in the file, functions included)."""
    mods = _modules()
    graph: dict[str, set[str]] = {m: set() for m in mods}
    for mod, file in mods.items():
        is_pkg = file.name == "__init__.py"
        for node in ast.walk(ast.parse(file.read_text(encoding="utf-8"), str(file))):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    pkg = mod if is_pkg else mod.rpartition(".")[0]
                    for _ in range(node.level - 1):
                        pkg = pkg.rpartition(".")[0]
                    base = f"{pkg}.{base}" if base else pkg
                targets = [f"{base}.{a.name}" for a in node.names] + [base]
            else:
                continue
            for target in targets:
                dep = _resolve(target, mods)
                if dep is None or dep == mod:
                    continue
                if mods[dep].name == "__init__.py" and mod.startswith(dep + "."):
                    continue
                graph[mod].add(dep)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    found: list[list[str]] = []
    counter = 0
    for start in sorted(graph):
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            advanced = False
            for child in children:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                    advanced = True
                    break
                if child in on_stack:
                    low[node] = min(low[node], index[child])
            if advanced:
                continue
            work.pop()
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
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


def upward_edges(graph: dict[str, set[str]]) -> list[tuple[str, str]]:
    return sorted((a, b) for a, deps in graph.items() for b in deps
                  if LAYER[b.split(".")[0]] > LAYER[a.split(".")[0]])


def test_the_graph_covers_all_three_packages_and_sees_lazy_imports():
    graph = import_graph()
    assert {m.split(".")[0] for m in graph} == set(LAYER)
    assert len(graph) > 50
    # commands import their library inside the function (heavy imports stay lazy): those edges must count
    assert "evalsuite.dynamics" in graph["evalsuite.commands.dynamics"]


def test_no_import_cycles():
    assert cycles(import_graph()) == []


def test_no_upward_imports():
    assert upward_edges(import_graph()) == []


@pytest.mark.parametrize("graph, expected", [
    ({"a": {"b"}, "b": {"a"}, "c": set()}, [["a", "b"]]),
    ({"a": {"b"}, "b": {"c"}, "c": {"a"}}, [["a", "b", "c"]]),
    ({"a": {"b"}, "b": set()}, []),
])
def test_cycle_finder_finds_cycles(graph, expected):
    assert cycles(graph) == expected


def test_upward_edge_is_reported():
    assert upward_edges({"corpora.x": {"evalsuite.y"}, "evalsuite.y": {"corpora.x"}}) == [("corpora.x", "evalsuite.y")]
