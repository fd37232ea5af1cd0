"""The README documents the public contract whole: its "Graph model" section every label,
relationship type and property key a statement may use (so a user in Neo4j Browser finds each one
explained), its endpoint tables every operation of the OpenAPI document, and no other, and its
module map every module, so a newcomer finds each one."""

from __future__ import annotations

import ast
import re
import subprocess
from pathlib import Path

from app import create_app
from app.openapi import openapi_document
from graph_schema.allow_list import PROPERTY_KEYS, Label, Rel
from kgrec.config import Settings

README = Path(__file__).resolve().parents[1] / "README.md"
# Pages for people, outside the JSON API's document.
NOT_IN_OPENAPI = {("GET", "/docs"), ("GET", "/console/api/v1/...")}


def graph_model_section() -> str:
    text = README.read_text(encoding="utf-8")
    start = text.index("\n## Graph model\n")
    return text[start : text.index("\n## ", start + 1)]


def test_every_label_relationship_type_and_property_key_is_documented() -> None:
    section = graph_model_section()
    assert [label.value for label in Label if f"(:{label.value})" not in section] == []
    assert [rel.value for rel in Rel if f"[:{rel.value}]" not in section] == []
    # a property is named in code font, alone (`price`) or with its value (`id: 'catalogue'`)
    assert [key for key in PROPERTY_KEYS if f"`{key}`" not in section and f"`{key}:" not in section] == []


def _operation(method: str, path: str) -> tuple[str, str]:
    return method.upper(), re.sub(r"\{[^}]+\}", "{}", path)  # parameter names may differ


def test_the_endpoint_tables_name_every_operation_of_the_openapi_document(tmp_path: Path) -> None:
    document = openapi_document(create_app(Settings(data_dir=tmp_path)))
    served = {
        _operation(method, path) for path, operations in document["paths"].items() for method in operations
    }
    text = README.read_text(encoding="utf-8")
    named = {_operation(m, p) for m, p in re.findall(r"`(GET|POST|PUT|DELETE|PATCH) (/[^ `?]*)", text)}
    assert sorted(served - named) == []
    assert sorted(named - served - NOT_IN_OPENAPI) == []


MAPPED_PACKAGES = ("kgrec_cli", "app", "workers", "kgrec", "graph_schema", "bench")


def _modules_with_a_docstring() -> set[str]:
    root = README.parent
    tracked = subprocess.run(
        ["git", "ls-files", *MAPPED_PACKAGES], cwd=root, capture_output=True, text=True, check=True
    ).stdout.split()
    return {
        path
        for path in tracked
        if path.endswith(".py") and ast.get_docstring(ast.parse((root / path).read_text(encoding="utf-8")))
    }


def _mapped_modules() -> list[str]:
    text = README.read_text(encoding="utf-8")
    start = text.index("\n### Module map\n")
    section = text[start : text.index("\n## ", start)]
    mapped, package = [], None
    for line in section.splitlines():
        if heading := re.fullmatch(r"\*\*`([\w/]+)/`\*\*", line):
            package = heading.group(1)
        elif row := re.match(r"\| `([\w.]+\.py)` \|", line):
            mapped.append(f"{package}/{row.group(1)}")
    return mapped


def test_the_module_map_names_every_module_once() -> None:
    mapped = _mapped_modules()
    assert sorted(m for m in set(mapped) if mapped.count(m) > 1) == []
    modules = _modules_with_a_docstring()
    assert sorted(modules - set(mapped)) == []
    assert sorted(set(mapped) - modules) == []
