"""The layering rules the architecture rests on, read from the import statements."""

from __future__ import annotations

import ast
from pathlib import Path

APP = Path(__file__).resolve().parents[2] / "app"
PURE = (
    "ranker",
    "candidates",
    "serving",
    "popularity",
    "content",
    "retraining",
    "ranking_metrics",
    "experiments",
    "actions",
)
"""Numerics only: no Faust, no Kafka, no Redis, no HTTP."""


def imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def production_modules() -> list[Path]:
    return [
        path
        for path in APP.rglob("*.py")
        if "evaluation" not in path.relative_to(APP).parts and path.name != "__main__.py"
    ]


def test_the_walk_finds_the_production_modules():
    names = {path.stem for path in production_modules()}
    assert {"factory", "agents", "web", "serving", "trainer"} <= names


def test_no_production_module_imports_the_evaluation():
    offenders = [
        str(path.relative_to(APP))
        for path in production_modules()
        if any(name.startswith("app.evaluation") for name in imported_modules(path))
    ]
    assert offenders == []


def test_the_numeric_modules_import_no_service_library():
    services = ("faust", "aiokafka", "redis", "aiohttp")
    offenders = {
        module: sorted(
            name
            for name in imported_modules(APP / f"{module}.py")
            if name.split(".")[0] in services
        )
        for module in PURE
    }
    assert offenders == {module: [] for module in PURE}
