"""Neo4j's own Cypher front-end (lintCypherQuery), run over statements by the tests."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from graph_schema.allow_list import PROPERTY_KEYS, Label, Rel
from graph_schema.statements.knowledge import example_relationship_types

REPO = Path(__file__).resolve().parent.parent
LINT_DIR = REPO / "tools" / "cypher-lint"


def lint(statements: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """Run Neo4j's lintCypherQuery over statements; returns diagnostics by statement name.

    Checked (tools/cypher-lint/lint.mjs): syntax and semantics, parameters against each statement's
    example ``params``, functions and procedures against Neo4j 5's built-in lists, labels,
    relationship types and graph properties against the allow-list only (in reads and in writes;
    the types rendered from relation names are declared for the catalogue's rendered examples),
    and row fields (``r.<key>`` of ``UNWIND $rows AS r``) against the keys of the parameter maps.
    """
    if not (LINT_DIR / "node_modules" / "@neo4j-cypher" / "language-support").is_dir():
        pytest.fail("the Cypher linter is not installed: run `make lint-deps`")
    node = shutil.which("node")
    assert node, "node is required for the Cypher lint"
    schema = {
        "labels": [label.value for label in Label],
        "relationshipTypes": sorted({rel.value for rel in Rel} | set(example_relationship_types())),
        "propertyKeys": sorted(PROPERTY_KEYS),
    }
    completed = subprocess.run(
        [node, str(LINT_DIR / "lint.mjs")],
        input=json.dumps({"schema": schema, "statements": statements}),
        capture_output=True,
        text=True,
        check=True,
        timeout=600,  # a hang guard: linting every statement takes 40–150 s on 2 busy cores
    )
    return {r["name"]: r["diagnostics"] for r in json.loads(completed.stdout)}
