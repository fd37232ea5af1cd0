"""A ready Cypher query that shows one explanation path in Neo4j Browser.

This is text for people to paste, not a statement kgrec runs with parameters,
so every id is written as a safely quoted string literal. The labels and
relationship types come from the fixed allow-list in :mod:`graph_schema.allow_list`;
a knowledge edge (a relationship with a ``relation``) is written as the type
:func:`graph_schema.relation_names.relationship_type` renders from its relation
name, with the exact name as a quoted ``relation`` property, so the query finds
that edge and not another relation of the same type. Anything else is refused.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from graph_schema.allow_list import Label, Rel
from graph_schema.relation_names import relationship_type

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


def _relationship(rel: Mapping[str, Any]) -> str:
    """``[:TYPE]`` or ``[:TYPE {relation: '…'}]`` for one relationship of a path."""
    relation = rel.get("relation")
    if relation is None:
        return f"[:{Rel(rel['type']).value}]"
    rel_type = relationship_type(relation)  # refuses a name that breaks the rule
    if rel.get("type") not in (None, rel_type):
        raise ValueError(f"relation {relation!r} has type {rel_type}, not {rel['type']!r}")
    return f"[:{rel_type} {{relation: {cypher_string(relation)}}}]"


def path_cypher(nodes: Sequence[Mapping[str, Any]], rels: Sequence[Mapping[str, Any]]) -> str:
    """``MATCH p = (n0:Label {id: '…'})-[:TYPE]->(n1 …) … RETURN p`` for exactly this path.

    A node marked ``anonymous`` (a co-user path's other customer) is written without its
    id, ``(n2:User)``, and the query ends ``LIMIT 1``: it re-finds a path of the same
    shape through the same named nodes, not a named person.

    Raises ValueError for a label or type outside the model, or a relation name
    that breaks the rule of :mod:`graph_schema.relation_names`.
    """
    if len(rels) != len(nodes) - 1:
        raise ValueError("a path has one relationship fewer than nodes")
    parts = []
    anonymous = False
    for k, node in enumerate(nodes):
        label = Label(node["label"]).value
        if node.get("anonymous"):
            anonymous = True
            parts.append(f"(n{k}:{label})")
        else:
            parts.append(f"(n{k}:{label} {{id: {cypher_string(str(node['id']))}}})")
        if k < len(rels):
            edge = _relationship(rels[k])
            parts.append(f"-{edge}->" if rels[k]["direction"] == "out" else f"<-{edge}-")
    # An anonymous node (another customer) matches any node of its label on the path: the query
    # shows one such path, which exists whenever the served one does, without naming anyone.
    return f"MATCH p = {''.join(parts)} RETURN p" + (" LIMIT 1" if anonymous else "")
