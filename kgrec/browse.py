"""Browsing the graph: search by id or name, a user's latest interactions, an item's neighbourhood.

Each function is one endpoint's answer, built from one or two reads of the
catalogue in :mod:`graph_schema.statements.browse`; the console draws them.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

from graph_schema.behaviours import BEHAVIOURS
from graph_schema.statements.browse import ITEM_NEIGHBOURHOOD, SEARCH, SEARCH_LABELS, USER_TIMELINE
from graph_schema.statements.serving import ITEM_EXISTS
from kgrec.decay import decayed, shown_weight
from kgrec.errors import NotFound
from kgrec.gateway import GraphGateway

SEARCH_KINDS = tuple(label.lower() for label in SEARCH_LABELS)
# Replacements after lower-casing, on both sides of a name search: where the engines' toLower and
# Python's str.lower disagree (FalkorDB lower-cases letter by letter, Neo4j and Python by context).
# final sigma -> sigma; i + combining dot (İ lower-cased by context) -> i, other dotted letters kept
SEARCH_FOLDS = (("\u03c2", "\u03c3"), ("i\u0307", "i"))


def folded(text: str) -> str:
    """``text`` lower-cased as a name search compares it, the same on every engine."""
    text = text.lower()
    for old, new in SEARCH_FOLDS:
        text = text.replace(old, new)
    return text


def _rank(hit: dict[str, Any], query: str) -> tuple[int, int, str]:
    # Exact ids first, then id prefixes, then names that start with the query, then the rest.
    needle = folded(query)
    name = folded(str(hit["name"]))
    if hit["id"] == query:
        tier = 0
    elif hit["id"].startswith(query):
        tier = 1
    elif name.startswith(needle):
        tier = 2
    else:
        tier = 3
    return tier, len(name), hit["id"]


def search(gateway: GraphGateway, query: str, kinds: Iterable[str], limit: int) -> dict[str, Any]:
    """Users, items, brands, categories and entities whose id starts with ``query`` or whose name has it."""
    wanted = set(kinds) or set(SEARCH_KINDS)
    labels = [label for label in SEARCH_LABELS if label.lower() in wanted]
    folds = [list(fold) for fold in SEARCH_FOLDS]
    params = {"labels": labels, "query": query, "needle": folded(query), "folds": folds, "limit": limit}
    rows = gateway.read(SEARCH, params)
    hits = [{"label": r["label"], "id": r["id"], "name": str(r["name"])} for r in rows]
    hits.sort(key=lambda hit: _rank(hit, query))
    return {"query": query, "results": hits[:limit]}


def user_timeline(gateway: GraphGateway, user_id: str, limit: int, half_life_ms: float) -> dict[str, Any]:
    """The user's latest interactions (one per item), newest first, with counts and weights decayed to now."""
    now = time.time() * 1000
    rows = gateway.read(USER_TIMELINE, {"user_id": user_id, "limit": limit})
    events = [
        {
            "item_id": r["item_id"],
            "title": r["title"],
            "first_ts": r["first_ts"],
            "last_ts": r["last_ts"],
            "last_seq": r["last_seq"],
            "weight": shown_weight(decayed(r["weight"], r["weight_ts"], now, half_life_ms)),
            "brands": sorted(r["brands"]),
            "categories": sorted(r["categories"]),
            "counts": {name: int(r[f"n_{name}"]) for name in BEHAVIOURS if r[f"n_{name}"]},
        }
        for r in rows
    ]
    return {"user_id": user_id, "events": events}


def _node(label: str, node_id: str, name: Any) -> dict[str, str]:
    return {"key": f"{label}:{node_id}", "label": label, "id": node_id, "name": str(name)}


def _edge(source: str, target: str, outgoing: bool, row: dict[str, Any]) -> dict[str, Any]:
    start, end = (source, target) if outgoing else (target, source)
    weight = row.get("weight")
    return {
        "source": start,
        "target": end,
        "type": row["type"],
        "relation": row.get("relation"),
        "weight": None if weight is None else shown_weight(weight),
    }


def item_neighbourhood(gateway: GraphGateway, item_id: str, first: int, per_node: int) -> dict[str, Any]:
    """The item's neighbours (up to ``first``) and theirs (up to ``per_node`` each, users not expanded)."""
    if not gateway.read(ITEM_EXISTS, {"item_id": item_id}):
        raise NotFound("item_id", item_id, f"no item with id {item_id!r}")
    rows = gateway.read(ITEM_NEIGHBOURHOOD, {"item_id": item_id, "first": first, "per_node": per_node})
    centre = _node("Item", item_id, item_id)
    nodes: dict[str, dict[str, str]] = {centre["key"]: centre}
    edges: list[dict[str, Any]] = []
    for row in rows:
        near = _node(row["label"], row["id"], row["name"])
        nodes.setdefault(near["key"], near)
        edges.append(_edge(centre["key"], near["key"], bool(row["outgoing"]), row))
        for hop in row["second"] or []:
            far = _node(hop["label"], hop["id"], hop["name"])
            nodes.setdefault(far["key"], far)
            edges.append(_edge(near["key"], far["key"], bool(hop["outgoing"]), hop))
    return {"item_id": item_id, "nodes": list(nodes.values()), "relationships": edges}
