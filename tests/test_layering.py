"""The package's layers, as DESIGN.md draws them, held by reading every module's imports.

A reader that imported judgement code (or the judge that imported a reader's private helpers in
a circle) is how parser differentials creep in: the bytes a rule sees would depend on the rule.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "gpenguard"


def _imports(path: Path) -> Iterator[str]:
    """Every gpenguard module a file imports, eagerly or inside a function."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
        else:
            continue
        yield from (name for name in names if name.startswith("gpenguard"))


def _module(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _graph() -> dict[str, set[str]]:
    modules = {_module(p): p for p in PACKAGE.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        targets = set()
        for imported in _imports(path):
            # `from gpenguard.x import y` names a module y or an attribute of x: keep the module.
            while imported and imported not in modules:
                imported = imported.rpartition(".")[0]
            if imported and imported != name:
                targets.add(imported)
        graph[name] = targets
    return graph


def _in(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


@pytest.mark.parametrize(
    ("layer", "forbidden"),
    [
        ("gpenguard.pickling", ("gpenguard.scan", "gpenguard.formats", "gpenguard.trust")),
        ("gpenguard.formats", ("gpenguard.scan", "gpenguard.trust", "gpenguard.gate")),
        ("gpenguard.findings", ("gpenguard.scan", "gpenguard.formats", "gpenguard.pickling")),
        ("gpenguard.rules", ("gpenguard.scan", "gpenguard.formats", "gpenguard.pickling")),
    ],
)
def test_lower_layers_never_import_upper_ones(layer: str, forbidden: tuple[str, ...]) -> None:
    bad = sorted(
        f"{module} imports {target}"
        for module, targets in _graph().items()
        if _in(module, layer)
        for target in targets
        if any(_in(target, f) for f in forbidden)
    )
    assert bad == []


def test_no_import_cycles_between_packages() -> None:
    """No stage package reaches itself through another one's imports, lazy ones included."""

    def package(module: str) -> str:
        return ".".join(module.split(".")[:2])

    edges: dict[str, set[str]] = {}
    for module, targets in _graph().items():
        for target in targets:
            a, b = package(module), package(target)
            if a != b and "gpenguard" not in (a, b):
                edges.setdefault(a, set()).add(b)

    def reaches(start: str, goal: str) -> bool:
        stack, seen = [start], {start}
        while stack:
            for nxt in edges.get(stack.pop(), ()):
                if nxt == goal:
                    return True
                if nxt not in seen:
                    seen.add(nxt)
                    stack.append(nxt)
        return False

    assert sorted(p for p in edges if reaches(p, p)) == []
