"""Imports flow one way and never in a circle (read with the standard library's ``ast``).

Every ``import`` statement of the package counts, at module level and inside functions
alike: a function-level import is a real dependency that runs later (deferring it only
hides a cycle until that function is called). ``from pkg import name`` depends on the
module ``pkg.name`` when that is a module, else on ``pkg`` itself.

Layers (a package imports only from lower layers; the shared modules errors, cancel, utils,
matfile and the package root are below everything):

    geometry -> data, model, viz -> train, evaluate, inference -> edit -> server, client, cli

and only the entry points (``cli``) read the configuration (``prnet_keras.config``).
"""

from __future__ import annotations

import ast
from pathlib import Path

import prnet_keras

ROOT = Path(prnet_keras.__file__).resolve().parent
LAYERS = {
    "": 0, "errors": 0, "cancel": 0, "utils": 0.5, "matfile": 0.5, "config": 0.5,
    "geometry": 1,
    "data": 2, "model": 2, "viz": 2,
    "train": 3, "evaluate": 3, "inference": 3,
    "edit": 3.5,
    "server": 4, "client": 4, "cli": 5,
}


def _modules() -> dict[str, Path]:
    out = {}
    for path in ROOT.rglob("*.py"):
        parts = ["prnet_keras", *path.relative_to(ROOT).with_suffix("").parts]
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


def _graph() -> dict[str, set[str]]:
    modules = _modules()

    def owner(name: str) -> str | None:
        while name and name not in modules:
            name = name.rpartition(".")[0]
        return name or None

    graph: dict[str, set[str]] = {m: set() for m in modules}
    for module, path in modules.items():
        package = module if path.name == "__init__.py" else module.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    parent = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join(parent + ([base] if base else []))
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names]
            else:
                continue
            for target in targets:
                dep = owner(target) if target.startswith("prnet_keras") else None
                if dep and dep != module:
                    graph[module].add(dep)
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def _layer_of(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def test_the_graph_sees_function_level_imports():
    graph = _graph()
    # cli.serve imports the server inside build_server (a function): it must be an edge
    assert "prnet_keras.server.app" in graph["prnet_keras.cli.serve"]
    assert len(graph) > 60


def test_no_import_cycles():
    assert _cycles(_graph()) == []


def test_cycle_finder_finds_a_cycle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_imports_flow_one_way():
    graph = _graph()
    assert set(_layer_of(m) for m in graph) <= set(LAYERS), "a new package: give it a layer here"
    wrong = []
    for module, deps in graph.items():
        src = _layer_of(module)
        for dep in deps:
            dst = _layer_of(dep)
            if dst == src:
                continue
            if dst == "config":
                if src != "cli":
                    wrong.append(f"{module} -> {dep} (only entry points read the configuration)")
            elif LAYERS[dst] >= LAYERS[src]:
                wrong.append(f"{module} -> {dep}")
    assert wrong == []
