"""Dependencies point one way: customers ← metering ← billing ← rails ← backoffice, with
core below them all. The back office reads every app; no domain app imports it, and none
imports against the flow (a circle hidden inside a function counts too)."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
FLOW = ["customers", "metering", "billing", "rails", "backoffice"]
# Above the flow, allowed to import the back office: the project's settings and URLs, and
# the demo data set (it is applied through configuration as code).
ABOVE = {"config", "demo"}


def _imports(app: str):
    for path in (ROOT / app).rglob("*.py"):
        if "migrations" in path.parts:
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module]
            elif isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            else:
                continue
            for name in names:
                yield f"{path.relative_to(ROOT)}:{node.lineno}", name.split(".")[0]


def test_no_domain_app_imports_against_the_flow():
    against = [
        f"{where} imports {top}"
        for app in FLOW
        for where, top in _imports(app)
        if top in FLOW and FLOW.index(top) > FLOW.index(app)
    ]
    assert against == []


def test_only_the_project_and_the_demo_import_the_back_office():
    apps = [p.name for p in ROOT.iterdir() if (p / "apps.py").exists() or p.name == "config"]
    assert "backoffice" in apps and "billing" in apps
    importers = [
        f"{where} imports backoffice"
        for app in apps
        if app not in ABOVE | {"backoffice"}
        for where, top in _imports(app)
        if top == "backoffice"
    ]
    assert importers == []


def test_core_imports_no_app_and_no_domain_app_imports_audit():
    # core is below every app; billing records its history through core, not audit.
    assert [f"{w} imports {t}" for w, t in _imports("core") if t in FLOW or t == "audit"] == []
    assert [
        f"{w} imports audit" for app in FLOW[:-1] for w, t in _imports(app) if t == "audit"
    ] == []
