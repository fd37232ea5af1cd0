"""Knowledge relation names, and the one rule that turns one into a relationship type.

A relation name (``kg_triples.csv``'s ``relation`` column, an event's or the
catalogue's item attributes) is 1 to 128 characters of letters, digits, ``.``,
``_``, ``-``, ``/`` and ``:``. Each relation gets its own relationship type, so
Neo4j Browser shows ``ORIGIN`` or ``FILM_GENRE`` on the edge, and every such
edge also carries the exact name as its ``relation`` property (two names may map
to one type: ``film.genre`` and ``film_genre``; the property tells them apart).

:func:`relationship_type` is the only place a relation name reaches Cypher
text. It refuses anything that breaks the rule above, then:

1. upper-cases the name;
2. turns every run of characters other than ``A``–``Z`` and ``0``–``9`` into one ``_``;
3. strips ``_`` from both ends;
4. prefixes ``KG_`` when the result starts with a digit, is one of kgrec's own
   relationship types (``INTERACTED``, ``MADE_BY``, ...), or is a co-purchase type
   (``ALSO_BOUGHT``, ``ALSO_VIEWED``, ``BOUGHT_TOGETHER``) reached from any name
   but that relation's own (``also_bought``, ...), so data can never write an edge
   the service reads as something else; a result with no letter or digit left
   becomes ``KG``.

``also_bought`` becomes ``ALSO_BOUGHT``, ``also-bought`` becomes ``KG_ALSO_BOUGHT``,
``film.film.genre`` becomes ``FILM_FILM_GENRE``, ``interacted`` becomes
``KG_INTERACTED``.
"""

from __future__ import annotations

import re

MAX_RELATION_LENGTH = 128
RELATION_PATTERN = r"^[A-Za-z0-9._/:-]{1,128}$"
_RELATION = re.compile(RELATION_PATTERN)
_NOT_TYPE_CHARACTER = re.compile(r"[^A-Z0-9]+")

# Relationship types kgrec itself reads and writes (graph_schema.allow_list.Rel
# checks at import time that this list covers every one of them).
RESERVED_TYPES: frozenset[str] = frozenset(
    {
        "INTERACTED",
        "INTERESTED_IN",
        "MADE_BY",
        "IN_CATEGORY",
        "SUBCATEGORY_OF",
        "EMBEDDING",
        "POPULARITY_ADJUSTMENT",
        "ABOUT",
        "TAGGED",
        "USED_TAG",
        "HAS_TOPIC",
    }
)


# Types that exactly one relation name may produce: the built-in co-purchase relations, which
# explanations read by type (graph_schema.allow_list.KNOWLEDGE_RELATIONS must agree).
OWNED_TYPES: dict[str, str] = {
    "ALSO_BOUGHT": "also_bought",
    "ALSO_VIEWED": "also_viewed",
    "BOUGHT_TOGETHER": "bought_together",
}


class RelationNameError(ValueError):
    """A relation name that breaks the rule; the message names the value and the rule."""


def relation_problem(name: object) -> str | None:
    """Why ``name`` is not a valid relation name (worded to follow "relation"); None if valid."""
    if not isinstance(name, str):
        return f"must be a string, not {type(name).__name__}"
    if not _RELATION.fullmatch(name):  # match() would let a final newline through `$`
        shown = repr(name) if len(name) <= 140 else f"{name[:140]!r}… ({len(name)} characters)"
        return (
            f"{shown} must be 1 to {MAX_RELATION_LENGTH} characters of letters, digits, "
            "'.', '_', '-', '/' and ':'"
        )
    return None


def relationship_type(name: str) -> str:
    """The relationship type of the knowledge relation ``name`` (rule in the module docstring).

    Raises :class:`RelationNameError` for a name that breaks the rule, so nothing
    else can reach Cypher text through a relation.
    """
    problem = relation_problem(name)
    if problem is not None:
        raise RelationNameError(f"relation {problem}")
    rel_type = _NOT_TYPE_CHARACTER.sub("_", name.upper()).strip("_")
    if (
        not rel_type
        or rel_type[0].isdigit()
        or rel_type in RESERVED_TYPES
        or OWNED_TYPES.get(rel_type, name) != name
    ):
        rel_type = f"KG_{rel_type}" if rel_type else "KG"
    return rel_type
