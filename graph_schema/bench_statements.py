"""Statements the product never sends: the benchmarks' own reads, and the tests' checks of a graph.

They stay out of the serving catalogue (``graph_schema.statements``,
:func:`graph_schema.catalogue.all_statements`), which holds only what kgrec sends; the lint test
walks them as well (:func:`graph_schema.catalogue.bench_statements`).
"""

from __future__ import annotations

from graph_schema.catalogue import Statement, read
from graph_schema.statements.audiences import AUDIENCE_TARGETS
from graph_schema.statements.browse import NEIGHBOURHOOD_HOP, NEIGHBOURHOOD_OPENING, NEIGHBOURHOOD_ROWS
from graph_schema.statements.models import FOLDED_ROWS
from graph_schema.statements.topics import active_name, active_naming

# --- the benchmarks ------------------------------------------------------------------------------

# FOLDED_ITEMS as it was before 2026-12-07, walking every EMBEDDING edge of the version: for
# bench/folded_items.py's same-run comparison (serving reads FOLDED_ITEMS).
FOLDED_ITEMS_BY_WALK = read(
    "folded_items_by_walk",
    "MATCH (:ModelVersion {id: $version})-[e:EMBEDDING]->(i:Item)\n"
    "    WHERE e.folded_at IS NOT NULL" + FOLDED_ROWS,
    version="v1700000000000",
)

# The targets with the most interested users, by a full scan of the edges: bench/merchandising.py
# picks the brands and categories whose audiences it pages (serving reads one target's audience,
# graph_schema.statements.audiences).
LARGEST_AUDIENCES: dict[str, Statement] = {
    kind: read(
        f"largest_audiences_{kind}",
        f"""
        MATCH (t:{label})<-[x:{rel}]-(:User)
        RETURN t.id AS id, count(x) AS users
        ORDER BY users DESC, id
        LIMIT $limit
        """,
        limit=10,
    )
    for kind, (label, rel) in AUDIENCE_TARGETS.items()
}

# ITEM_NEIGHBOURHOOD as it was before 2026-12-07, naming every second neighbour (the active
# version's HAS_TOPIC looked up for each) before the cut to $per_node: for
# bench/item_neighbourhood.py's same-run comparison (the console reads ITEM_NEIGHBOURHOOD).
ITEM_NEIGHBOURHOOD_NAMING_ALL = read(
    "item_neighbourhood_naming_all",
    NEIGHBOURHOOD_OPENING
    + active_naming("b", "b_naming")
    + f"""
    WITH i, r1, a, name, r2, b, {active_name("b", "b_naming")} AS b_name
    ORDER BY b.id
    WITH i, r1, a, name, collect({NEIGHBOURHOOD_HOP})[0..$per_node] AS second"""
    + NEIGHBOURHOOD_ROWS,
    item_id="B004756YJA",
    first=40,
    per_node=3,
)

# --- the tests' checks ---------------------------------------------------------------------------

# How many distinct items some user interacted with: tests/test_import.py checks an import against
# the data set's own count (nothing kgrec serves or trains needs the number).
INTERACTED_ITEM_COUNT = read(
    "interacted_item_count",
    """
    MATCH (:User)-[:INTERACTED]->(i:Item)
    RETURN count(DISTINCT i) AS count
    """,
)
