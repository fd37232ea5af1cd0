"""A ready Cypher query that shows one explanation path in Neo4j Browser.

This is text for people to paste, not a statement kgrec runs with parameters,
so every id is written as a safely quoted string literal. The labels and
relationship types come from the fixed allow-list in :mod:`graph_schema.allow_list`;
anything else is refused.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from graph_schema.allow_list import Label, Rel

_ESCAPES = {"\\": "\\\\", "'": "\\'", "\n": "\\n", "\r": "\\r", "\t": "\\t", "\b": "\\b", "\f": "\\f"}


def cypher_string(value: str) -> str:
    """``value`` as a single-quoted Cypher string literal; other control characters as \\uXXXX."""
    out = []
    for ch in value:
        if ch in _ESCAPES:
            out.append(_ESCAPES[ch])
        elif ord(ch) < 32 or ord(ch) == 127:
            out.append(f"\\u{ord(ch):04x}")
        else:
            out.append(ch)
    return "'" + "".join(out) + "'"


def path_cypher(nodes: Sequence[Mapping[str, Any]], rels: Sequence[Mapping[str, Any]]) -> str:
    """``MATCH p = (n0:Label {id: '…'})-[:TYPE]->(n1 …) … RETURN p`` for exactly this path."""
    if len(rels) != len(nodes) - 1:
        raise ValueError("a path has one relationship fewer than nodes")
    parts = []
    for k, node in enumerate(nodes):
        label = Label(node["label"]).value
        parts.append(f"(n{k}:{label} {{id: {cypher_string(str(node['id']))}}})")
        if k < len(rels):
            rel_type = Rel(rels[k]["type"]).value
            parts.append(f"-[:{rel_type}]->" if rels[k]["direction"] == "out" else f"<-[:{rel_type}]-")
    return f"MATCH p = {''.join(parts)} RETURN p"
