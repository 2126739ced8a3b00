"""The layout's rules, checked on the source: no import circle, no import hidden in a
function to dodge one, and modules and functions small enough to read
(docs/architecture.md). The direction of imports between apps is
tests/backoffice/test_layers.py's."""

from __future__ import annotations

import ast
import importlib
import re
from functools import cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
APPS = [
    "core",
    "customers",
    "metering",
    "billing",
    "rails",
    "audit",
    "backoffice",
    "demo",
    "config",
]

# Imports inside a function, each with the reason it is there (none dodges a circle).
FUNCTION_IMPORTS_ALLOWED = {}

# Longer than the limits on purpose: file formats read best as one table or one pass.
LONG_MODULES = {}
LONG_FUNCTIONS = {}
MODULE_LINES = 500
FUNCTION_LINES = 80


def sources() -> list[Path]:
    return [
        path
        for app in APPS
        for path in sorted((ROOT / app).rglob("*.py"))
        if "migrations" not in path.parts
    ]


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


@cache
def modules() -> dict[str, Path]:
    return {module_name(path): path for path in sources()}


def _type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _targets(node: ast.Import | ast.ImportFrom) -> list[str]:
    """The project modules an import statement loads."""
    known = modules()
    if isinstance(node, ast.Import):
        names = [alias.name for alias in node.names]
    elif node.level or node.module is None:
        return []  # relative imports are not used in the project
    else:
        names = [
            f"{node.module}.{alias.name}" if f"{node.module}.{alias.name}" in known else node.module
            for alias in node.names
        ]
    return sorted({name for name in names if name in known})


@cache
def imports() -> dict[str, tuple[list[str], list[tuple[int, str]]]]:
    """Each module: the project modules it imports at load time, and those it imports
    inside a function (line, module)."""
    out = {}
    for name, path in modules().items():
        tree = ast.parse(path.read_text())
        top: list[str] = []
        inner: list[tuple[int, str]] = []
        app_config = name.endswith(".apps")

        def visit(
            node: ast.AST, function: str | None, top=top, inner=inner, app_config=app_config
        ) -> None:
            for child in ast.iter_child_nodes(node):
                if isinstance(child, ast.If) and _type_checking(child):
                    continue
                if isinstance(child, ast.Import | ast.ImportFrom):
                    for target in _targets(child):
                        if function is None:
                            top.append(target)
                        elif not (app_config and function == "ready"):
                            inner.append((child.lineno, target))
                if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef):
                    visit(child, child.name)
                elif isinstance(child, ast.Lambda):
                    visit(child, "<lambda>")
                else:
                    visit(child, function)

        visit(tree, None)
        out[name] = (sorted(set(top)), inner)
    return out


def test_no_import_circle():
    graph = {name: top for name, (top, _) in imports().items()}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    circles: list[list[str]] = []

    def strongconnect(node: str) -> None:  # Tarjan's algorithm
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in graph.get(node, []):
            if target not in index:
                strongconnect(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                circles.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            strongconnect(node)
    assert circles == []


def test_no_project_import_hides_in_a_function():
    hidden = {
        f"{name}:{line} imports {target}"
        for name, (_, inner) in imports().items()
        for line, target in inner
        if (name, target) not in FUNCTION_IMPORTS_ALLOWED
    }
    assert sorted(hidden) == []


@pytest.mark.parametrize("limit", [MODULE_LINES])
def test_modules_stay_short(limit):
    long = [
        f"{name}: {lines} lines"
        for name, path in modules().items()
        if (lines := path.read_text().count("\n")) > limit and name not in LONG_MODULES
    ]
    assert long == []


def test_functions_stay_short():
    long = []
    for name, path in modules().items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                lines = node.end_lineno - node.lineno + 1
                if lines > FUNCTION_LINES and f"{name}.{node.name}" not in LONG_FUNCTIONS:
                    long.append(f"{name}.{node.name}: {lines} lines")
    assert long == []


def _resolves(dotted: str) -> bool:
    parts = dotted.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            target = importlib.import_module(".".join(parts[:cut]))
        except ImportError:
            continue
        for name in parts[cut:]:
            if not hasattr(target, name):
                return False
            target = getattr(target, name)
        return True
    return False


def test_every_module_and_function_the_architecture_page_names_exists():
    page = (ROOT / "docs" / "architecture.md").read_text()
    apps = "|".join(APPS)
    named = set(re.findall(rf"`((?:{apps})(?:\.\w+)+)`", page))
    assert len(named) > 20
    assert sorted(name for name in named if not _resolves(name)) == []
