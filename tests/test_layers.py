"""The package's imports follow the layer order of docs/design.md, with no cycle.

Every ``import`` statement in ``src/mtaffect`` counts, function-level ones included (a lazy import
is still a dependency: it only hides the cycle until run time).
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "src" / "mtaffect"
DESIGN = ROOT / "docs" / "design.md"


def read_layers(text: str) -> dict[str, int]:
    """``{top-level name: layer}`` from the ```layers block of docs/design.md."""
    match = re.search(r"```layers\n(.*?)```", text, re.S)
    assert match, "docs/design.md has no ```layers block"
    layers = {}
    for line in match.group(1).splitlines():
        if line.strip():
            number, *names = line.split()
            for name in names:
                assert name not in layers, f"{name} is listed twice in the layers block"
                layers[name] = int(number)
    return layers


def module_name(path: Path, package: Path) -> str:
    parts = list(path.relative_to(package.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph(package: Path) -> dict[str, set[str]]:
    """``{module: modules it imports}`` inside the package (dotted names, all import statements)."""
    files = {module_name(p, package): p for p in package.rglob("*.py")}

    def known(name: str) -> str | None:
        while name and name not in files:
            name = name.rpartition(".")[0]
        return name or None

    graph: dict[str, set[str]] = {}
    for module, path in files.items():
        here = module if path.name == "__init__.py" else module.rpartition(".")[0]
        targets = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = here.split(".")[: len(here.split(".")) - node.level + 1]
                    stem = ".".join(base + ([node.module] if node.module else []))
                else:
                    stem = node.module or ""
                # ``from a import b`` imports module a.b when it is one, else a name of a
                names = [f"{stem}.{a.name}" if f"{stem}.{a.name}" in files else stem for a in node.names]
            else:
                continue
            for name in names:
                target = known(name) if name.split(".")[0] == "mtaffect" else None
                if target and target != module:
                    targets.add(target)
        graph[module] = targets
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one node (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found = []
    counter = 0
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph.get(root, ()))))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.get(child, ())))))
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


def top(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else parts[0]


def layer_violations(graph: dict[str, set[str]], layers: dict[str, int]) -> list[str]:
    problems = []
    for module, targets in sorted(graph.items()):
        a = top(module)
        if a not in layers:
            problems.append(f"{module}: package {a!r} has no layer in docs/design.md")
            continue
        for target in sorted(targets):
            b = top(target)
            if a == b or b not in layers:
                continue
            if layers[b] > layers[a]:
                problems.append(f"{module} imports {target}: layer {layers[a]} ({a}) below {layers[b]} ({b})")
            elif layers[b] == layers[a]:
                problems.append(f"{module} imports {target}: {a} and {b} share layer {layers[a]}")
    return problems


def test_no_import_cycle_between_modules() -> None:
    assert cycles(import_graph(PACKAGE)) == []


def test_imports_follow_the_layer_order() -> None:
    assert layer_violations(import_graph(PACKAGE), read_layers(DESIGN.read_text())) == []


def test_the_checks_catch_what_they_are_for(tmp_path: Path) -> None:
    # a small package with a function-level cycle and an upward import: both must be reported
    pkg = tmp_path / "mtaffect"
    (pkg / "low").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "low" / "__init__.py").write_text("")
    (pkg / "low" / "a.py").write_text("def f():\n    from mtaffect.high import g\n")
    (pkg / "high.py").write_text("from .low import a\n")
    (pkg / "low" / "b.py").write_text("from . import a\n")
    graph = import_graph(pkg)
    assert graph["mtaffect.low.b"] == {"mtaffect.low.a"}
    assert cycles(graph) == [["mtaffect.high", "mtaffect.low.a"]]
    problems = layer_violations(graph, {"low": 0, "high": 1, "mtaffect": 2})
    assert problems == ["mtaffect.low.a imports mtaffect.high: layer 0 (low) below 1 (high)"]
    with pytest.raises(AssertionError, match="listed twice"):
        read_layers("```layers\n0 a\n1 a\n```")
