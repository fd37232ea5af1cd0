"""Every catalogue statement passes Neo4j's own linter; every read runs on the configured engine."""

from __future__ import annotations

from typing import Any

import pytest

from graph_schema.catalogue import FORBIDDEN_CONSTRUCTS, all_statements, bench_statements
from kgrec.gateway import GraphGateway
from kgrec.migrations import discover
from tests.cypher_lint import lint

STATEMENTS = all_statements()
# The benchmarks' own statements are held to the same rules as the catalogue's, outside it.
LINTED = STATEMENTS + bench_statements()


def test_catalogue_is_not_empty_and_names_are_unique() -> None:
    names = [s.name for s in STATEMENTS]
    assert len(names) == len(set(names))
    assert len(names) >= 15


def test_bench_only_statements_are_kept_out_of_the_catalogue_the_product_sends() -> None:
    bench = {s.name for s in bench_statements()}
    assert "folded_items_by_walk" in bench  # bench/folded_items.py's read of before
    assert bench.isdisjoint(s.name for s in STATEMENTS)


def test_every_statement_passes_neo4j_lint() -> None:
    results = lint([{"name": s.name, "cypher": s.cypher, "params": s.params} for s in LINTED])
    assert set(results) == {s.name for s in LINTED}
    # Errors fail; so do warnings about labels, types or properties outside the allow-list.
    problems = {name: diags for name, diags in results.items() if diags}
    assert problems == {}


def test_lint_catches_errors_and_undeclared_things() -> None:
    """The linter is live: a syntax error, an undeclared parameter and a stray label are all reported."""
    results = lint(
        [
            {"name": "syntax", "cypher": "MATCH (u:User RETURN u", "params": {}},
            {"name": "param", "cypher": "MATCH (u:User {id: $uid}) RETURN u", "params": {}},
            {"name": "label", "cypher": "MATCH (u:Usr) RETURN u.id", "params": {}},
        ]
    )
    assert any(d["severity"] == "error" for d in results["syntax"])
    assert any("$uid" in d["message"] for d in results["param"])
    assert any("Usr" in d["message"] for d in results["label"])


def test_neo4j_and_shared_migrations_pass_lint() -> None:
    statements = [
        {"name": f"{m.id}#{i}", "cypher": text, "params": {}}
        for m in discover("neo4j")
        for i, text in enumerate(m.statements())
    ]
    assert statements
    results = lint(statements)
    assert {name: d for name, d in results.items() if d} == {}


@pytest.mark.parametrize("statement", LINTED, ids=lambda s: s.name)
def test_statement_uses_only_the_shared_subset(statement: Any) -> None:
    used = [name for name, pattern in FORBIDDEN_CONSTRUCTS.items() if pattern.search(statement.cypher)]
    assert used == []
    # Each write is exactly one statement (FalkorDB has no multi-statement transactions).
    assert ";" not in statement.cypher


@pytest.mark.parametrize("statement", [s for s in LINTED if s.mode == "read"], ids=lambda s: s.name)
def test_read_statement_runs_on_the_graph(gateway: GraphGateway, statement: Any) -> None:
    """Every read executes with its declared example parameters on the real engine.

    Write statements are run on graphs where they touch rows, and their effects
    checked, in ``tests/test_statement_effects.py``.
    """
    rows = gateway.read(statement, statement.params)
    assert isinstance(rows, list)


def test_gateway_refuses_wrong_parameters(gateway: GraphGateway) -> None:
    statement = next(s for s in STATEMENTS if s.params)
    with pytest.raises(ValueError, match=statement.name):
        gateway.read(statement, {}) if statement.mode == "read" else gateway.write(statement, {})
