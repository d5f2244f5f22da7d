"""biosae's import graph: no circle anywhere (function-local imports included), and imports only
go down: the localization methods never import the evaluation."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "biosae"


def modules() -> dict[str, Path]:
    """Dotted module name -> file, for every module of biosae/ (a package is its ``__init__``)."""
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def imported(name: str, path: Path, known: set[str]) -> set[str]:
    """The biosae modules that module ``name`` imports, at any depth of its code. Importing
    ``a.b.c`` runs ``a`` and ``a.b`` first, so the packages above a module count too."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    targets = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            targets += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join(anchor + ([base] if base else []))
            targets += [base] + [f"{base}.{alias.name}" for alias in node.names]
    edges = set()
    for target in targets:
        parts = target.split(".")
        edges |= {".".join(parts[:i]) for i in range(1, len(parts) + 1)} & known
    return edges - {name}


def import_graph() -> dict[str, set[str]]:
    found = modules()
    return {name: imported(name, path, set(found)) for name, path in found.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import circle as [a, b, ..., a], or None (depth-first search)."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for target in sorted(graph[node]):
            if state.get(target) == 1:
                return path[path.index(target) :] + [target]
            if target not in state and (cycle := visit(target)):
                return cycle
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_the_graph_sees_function_local_and_package_imports():
    graph = import_graph()
    assert "biosae.methods.base" in graph["biosae.methods.registry"]
    assert "biosae" in graph["biosae.config"]  # every module runs the package's __init__ first
    assert {"biosae.dataset.entities", "biosae.lm.layers"} <= graph["biosae.config"]  # imported in functions


def test_biosae_has_no_import_circle():
    cycle = find_cycle(import_graph())
    assert cycle is None, "import circle: " + " -> ".join(cycle)


def test_a_circle_is_found_and_printed():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_the_methods_never_import_the_evaluation():
    upward = sorted(
        f"{name} -> {target}"
        for name, targets in import_graph().items()
        if name.startswith("biosae.methods")
        for target in targets
        if target.startswith("biosae.evaluation")
    )
    assert not upward, "biosae.methods imports biosae.evaluation: " + ", ".join(upward)
