"""Statements only the benchmarks send (a read as it was before, timed against today's in one run).

The product never sends these, so they stay out of the serving catalogue
(``graph_schema.statements``, :func:`graph_schema.catalogue.all_statements`); the lint test
walks them as well (:func:`graph_schema.catalogue.bench_statements`).
"""

from __future__ import annotations

from graph_schema.catalogue import read
from graph_schema.statements.models import FOLDED_ROWS

# FOLDED_ITEMS as it was before 2026-12-07, walking every EMBEDDING edge of the version: for
# bench/folded_items.py's same-run comparison (serving reads FOLDED_ITEMS).
FOLDED_ITEMS_BY_WALK = read(
    "folded_items_by_walk",
    "MATCH (:ModelVersion {id: $version})-[e:EMBEDDING]->(i:Item)\n"
    "    WHERE e.folded_at IS NOT NULL" + FOLDED_ROWS,
    version="v1700000000000",
)
