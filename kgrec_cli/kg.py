"""``kgrec kg``: look at the knowledge graph (relations and their triple counts)."""

from __future__ import annotations

import json
from typing import Any

import click
from rich.console import Console
from rich.table import Table

from graph_schema.allow_list import ATTRIBUTE_RELATIONS
from graph_schema.statements.knowledge import RELATION_COUNTS
from kgrec.config import Settings
from kgrec.gateway import GraphGateway
from kgrec.runtime import graph_session


def relation_counts(gateway: GraphGateway) -> list[dict[str, Any]]:
    """Each knowledge relation with its relationship type and triple count, by relation name.

    ``produced_by`` and ``belongs_to`` are the brand and category links (their edges have
    no ``relation`` property; their fixed types name them).
    """
    by_type = {rel.value: name for name, rel in ATTRIBUTE_RELATIONS.items()}
    types = {"attribute_types": list(by_type)}
    rows = [
        {
            "relation": row["relation"] or by_type[row["type"]],
            "type": row["type"],
            "triples": int(row["triples"]),
        }
        for row in gateway.read(RELATION_COUNTS, types)
    ]
    return sorted(rows, key=lambda r: (r["relation"], r["type"]))


@click.group("kg")
def kg() -> None:
    """Inspect the knowledge graph."""


@kg.command("relations")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON array of {relation, type, triples}.")
@click.pass_context
def relations_command(ctx: click.Context, as_json: bool) -> None:
    """Print each knowledge relation, its relationship type and its triple count."""
    settings: Settings = ctx.ensure_object(dict)["settings"]
    with graph_session(settings) as gateway:
        rows = relation_counts(gateway)
    if as_json:
        click.echo(json.dumps(rows))
        return
    table = Table("relation", "type", "triples")
    for row in rows:
        table.add_row(row["relation"], row["type"], f"{row['triples']:,}")
    Console().print(table)
    click.echo(f"{len(rows)} relation(s), {sum(r['triples'] for r in rows):,} triple(s)")
