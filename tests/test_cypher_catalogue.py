"""Every catalogue statement passes Neo4j's own linter; every read runs on the configured engine."""

from __future__ import annotations

import ast
import importlib
import pkgutil
from pathlib import Path
from typing import Any

import pytest

from graph_schema import statements as statements_package
from graph_schema.catalogue import FORBIDDEN_CONSTRUCTS, Statement, all_statements, bench_statements
from kgrec.gateway import GraphGateway
from kgrec.migrations import discover
from tests.conftest import REPO
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
    assert "largest_audiences_brand" in bench  # bench/merchandising.py's pick of targets
    assert "interacted_item_count" in bench  # tests/test_import.py's check of an import
    assert bench.isdisjoint(s.name for s in STATEMENTS)


# Where the product's code lives; graph_schema counts too (a statement returned by a function
# there that the product calls is reached), but not the benchmarks' and tests' module.
PRODUCT_DIRS = ("kgrec", "app", "workers", "kgrec_cli", "graph_schema")
NOT_PRODUCT = {Path("graph_schema/bench_statements.py")}

# Statements the product renders at run time, for each data set's own relations and attributes:
# the catalogue holds a rendered example of each template (the lint and tests/test_statement_effects.py
# check the template through it), which no product code names. Binding -> the renderer the example
# is made by, which the product calls.
RENDERED_EXAMPLES = {
    "EXAMPLE_LINKS": "link_knowledge",  # kgrec.importer: one per relation and pair of labels
    "LINK_KNOWLEDGE_EDGES": "link_knowledge",  # the built-in co-purchase relations, the same objects
    "EXAMPLE_TWIN_MOVES": "move_twin_edges",  # kgrec.migrations: one per type a twin entity holds
    "INGEST_EVENTS_WITH_ATTRIBUTES": "ingest_events_statement",  # kgrec.events.ingest
    "INGEST_LANGUAGE_EVENTS_WITH_ATTRIBUTES": "ingest_events_statement",
    "UPSERT_CATALOGUE_ITEMS_WITH_ATTRIBUTES": "upsert_catalogue_statement",  # kgrec.catalogue
}


def _bindings() -> dict[str, set[str]]:
    """Each catalogue statement's name -> the module-level names it is bound to (itself, or a dict)."""
    found: dict[str, set[str]] = {}
    for info in pkgutil.iter_modules(statements_package.__path__):
        module = importlib.import_module(f"{statements_package.__name__}.{info.name}")
        for binding, value in vars(module).items():
            for candidate in value.values() if isinstance(value, dict) else [value]:
                if isinstance(candidate, Statement):
                    found.setdefault(candidate.name, set()).add(binding)
    return found


def _named_in(path: Path) -> set[str]:
    """The identifiers code in ``path`` uses (loads, attributes, imports), not those it assigns."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Load):
            names.add(node.id)
        elif isinstance(node, ast.Attribute):
            names.add(node.attr)
        elif isinstance(node, ast.ImportFrom):
            names.update(alias.name for alias in node.names)
    return names


def _product_files() -> list[Path]:
    files = [p for d in PRODUCT_DIRS for p in sorted((REPO / d).rglob("*.py"))]
    return [p for p in files if p.relative_to(REPO) not in NOT_PRODUCT]


def _renderers_called() -> dict[str, set[str]]:
    """Each module-level name in graph_schema/statements -> the functions its value calls."""
    calls: dict[str, set[str]] = {}
    for path in sorted((REPO / "graph_schema" / "statements").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Assign | ast.AnnAssign) and node.value is not None:
                targets = node.targets if isinstance(node, ast.Assign) else [node.target]
                called = {
                    call.func.id
                    for call in ast.walk(node.value)
                    if isinstance(call, ast.Call) and isinstance(call.func, ast.Name)
                }
                calls.update((target.id, called) for target in targets if isinstance(target, ast.Name))
    return calls


def test_every_catalogue_statement_is_named_by_product_code() -> None:
    """A statement the product never sends (the benchmarks', the tests', a dead one) is not in the
    catalogue: some product module names it, or the dict that holds it, other than where it is
    defined. A benchmark's or a test's own goes to graph_schema/bench_statements.py. A rendered
    example counts when it is built by its renderer and the product (outside graph_schema) calls it."""
    files = _product_files()
    named = set().union(*(_named_in(p) for p in files))
    outside = set().union(*(_named_in(p) for p in files if p.relative_to(REPO).parts[0] != "graph_schema"))
    calls = _renderers_called()
    rendered = {
        binding
        for binding, renderer in RENDERED_EXAMPLES.items()
        if renderer in calls.get(binding, set()) and renderer in outside
    }
    bindings = _bindings()
    assert set(bindings) == {s.name for s in STATEMENTS}
    assert rendered == set(RENDERED_EXAMPLES)  # the allow-list names real examples of live renderers
    unreached = sorted(name for name, bound in bindings.items() if not bound & (named | rendered))
    assert unreached == []


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
