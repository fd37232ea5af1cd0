"""Neo4j's own Cypher front-end (lintCypherQuery), run over statements by the tests."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from graph_schema.allow_list import PROPERTY_KEYS, Label, Rel

REPO = Path(__file__).resolve().parent.parent
LINT_DIR = REPO / "tools" / "cypher-lint"


def map_keys(value: Any) -> set[str]:
    """Keys of every map inside a parameter value (row fields like ``r.item_id``)."""
    if isinstance(value, dict):
        return set(value) | {k for v in value.values() for k in map_keys(v)}
    if isinstance(value, list):
        return {k for v in value for k in map_keys(v)}
    return set()


def lint(statements: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """Run Neo4j's lintCypherQuery over statements; returns diagnostics by statement name.

    Declared to the linter: the allow-listed labels, relationship types and
    graph properties, plus the keys of the parameter maps (``r.<key>``).
    """
    if not (LINT_DIR / "node_modules" / "@neo4j-cypher" / "language-support").is_dir():
        pytest.fail("the Cypher linter is not installed: run `make lint-deps`")
    node = shutil.which("node")
    assert node, "node is required for the Cypher lint"
    schema = {
        "labels": [label.value for label in Label],
        "relationshipTypes": [rel.value for rel in Rel],
        "propertyKeys": sorted(set(PROPERTY_KEYS) | {k for s in statements for k in map_keys(s["params"])}),
    }
    completed = subprocess.run(
        [node, str(LINT_DIR / "lint.mjs")],
        input=json.dumps({"schema": schema, "statements": statements}),
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    return {r["name"]: r["diagnostics"] for r in json.loads(completed.stdout)}
