"""Layers depend one way: graph_schema <- kgrec (core) <- app, workers <- kgrec_cli (entry points).

Below the web layer nothing knows the web framework: serving logic in the core
is usable from the CLI and tests, and workers need no web app.

Every import in every module counts, including those inside functions and
``importlib.import_module("...")`` calls with a literal name.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

WEB = frozenset({"flask", "werkzeug"})
# package -> the top-level packages it must never import
FORBIDDEN: dict[str, frozenset[str]] = {
    "graph_schema": frozenset({"kgrec", "app", "workers", "kgrec_cli"}) | WEB,
    "kgrec": frozenset({"app", "workers", "kgrec_cli"}) | WEB,
    "app": frozenset({"workers", "kgrec_cli"}),
    "workers": frozenset({"app", "kgrec_cli"}) | WEB,
}


def _module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _absolute(node: ast.ImportFrom, module: str, is_package: bool) -> str:
    """The absolute module an ``ImportFrom`` names (resolving ``from . import x``)."""
    if not node.level:
        return node.module or ""
    base = module.split(".")
    base = base[: len(base) - node.level + (1 if is_package else 0)]
    return ".".join([*base, *([node.module] if node.module else [])])


def imported_modules(path: Path, root: Path) -> Iterator[tuple[int, str]]:
    """(line, module) for every import in a file, wherever it is written."""
    module = _module_name(path, root)
    is_package = path.name == "__init__.py"
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            yield node.lineno, _absolute(node, module, is_package)
        elif (
            isinstance(node, ast.Call)
            and (
                (isinstance(node.func, ast.Attribute) and node.func.attr == "import_module")
                or (isinstance(node.func, ast.Name) and node.func.id in ("import_module", "__import__"))
            )
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
        ):
            yield node.lineno, node.args[0].value


def layer_violations(root: Path) -> list[str]:
    """Every import under ``root`` that goes against :data:`FORBIDDEN`, as ``file:line: a imports b``."""
    found = []
    for package, forbidden in FORBIDDEN.items():
        for path in sorted((root / package).rglob("*.py")):
            for line, name in imported_modules(path, root):
                top = name.split(".")[0]
                if top in forbidden:
                    found.append(f"{path.relative_to(root)}:{line}: {package} imports {name}")
    return found


def test_layers_depend_one_way() -> None:
    assert layer_violations(ROOT) == []


def test_the_check_sees_imports_wherever_they_are(tmp_path: Path) -> None:
    (tmp_path / "kgrec").mkdir()
    (tmp_path / "kgrec" / "__init__.py").write_text("")
    (tmp_path / "kgrec" / "late.py").write_text(
        "import importlib\n\ndef f():\n    from workers.tasks import train\n    return train\n\n"
        "def g():\n    return importlib.import_module('app.graph')\n"
    )
    (tmp_path / "app").mkdir()
    (tmp_path / "app" / "ok.py").write_text("from kgrec.serving import Serving\nfrom . import graph\n")
    (tmp_path / "workers").mkdir()
    (tmp_path / "workers" / "bad.py").write_text("import app.graph as g\n")
    (tmp_path / "graph_schema").mkdir()
    (tmp_path / "graph_schema" / "up.py").write_text("from kgrec.config import Settings\n")
    (tmp_path / "kgrec" / "web.py").write_text("from flask import current_app\n")
    assert layer_violations(tmp_path) == [
        "graph_schema/up.py:1: graph_schema imports kgrec.config",
        "kgrec/late.py:4: kgrec imports workers.tasks",
        "kgrec/late.py:8: kgrec imports app.graph",
        "kgrec/web.py:1: kgrec imports flask",
        "workers/bad.py:1: workers imports app.graph",
    ]


def test_relative_imports_resolve_to_their_package(tmp_path: Path) -> None:
    (tmp_path / "workers" / "training").mkdir(parents=True)
    (tmp_path / "workers" / "training" / "job.py").write_text(
        "from .. import tasks\nfrom ...app import graph\n"
    )
    assert layer_violations(tmp_path) == ["workers/training/job.py:2: workers imports app"]
