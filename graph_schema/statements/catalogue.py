"""The catalogue API: item upserts and delisting, each bumping the catalogue revision atomically.

Every write here increments ``(:Revision {id: 'catalogue'}).revision`` and stamps
the items it changes with the new value (``Item.revision``, indexed) in the same
statement. A serving process polls the counter (one node read) and, when it moved,
reads only the items stamped after the revision it last saw.

An upsert sets the fields the client gave (``SET i += it.props``: a null removes
the property), replaces the brand and the categories when they are given, and,
for each attribute relation given, replaces that relation's values. The
attribute edges need their relationship types in the text, so the statement is
rendered per set of (type, value label) pairs as event ingestion renders its
own (:func:`graph_schema.statements.events.attribute_link_keys`).
"""

from __future__ import annotations

from collections.abc import Iterable
from functools import lru_cache
from typing import Any

from graph_schema.allow_list import Label
from graph_schema.catalogue import Statement, read, write
from graph_schema.statements.events import attribute_link_keys
from graph_schema.statements.knowledge import (
    ATTRIBUTE_NODES,
    ITEM_FACT_LINKS,
    TREE_UNCHANGED,
    absorb_entities,
    attribute_link_stages,
    bump_catalogue,
)

CATALOGUE = "catalogue"  # the id of the catalogue's Revision node

# An Entity with a batch item's id becomes that Item first (absorb_entities), before the revision
# is locked, as event ingestion does.
_BUMP = (
    TREE_UNCHANGED
    + absorb_entities("[item IN $items | item.id]")
    + """
    WITH count(*) AS stage
"""
    + bump_catalogue()
    + """
    WITH rev.revision AS revision
"""
)

_ITEMS = (
    """
    UNWIND $items AS it
    MERGE (i:Item {id: it.id})
    ON CREATE SET i.created_at = $now, i.listed_at = $now
    SET i += it.props, i.listed = true, i.revision = revision, i.updated_at = $now
    WITH it, i, it.brands AS brands
"""
    + ITEM_FACT_LINKS
    + """
    WITH count(*) AS stage
    UNWIND $replaced_brands AS rb
    MATCH (:Item {id: rb.id})-[old:MADE_BY]->(b:Brand)
    WHERE NOT b.id IN rb.keep
    DELETE old
    WITH count(*) AS stage
    UNWIND $replaced_categories AS rc
    MATCH (:Item {id: rc.id})-[old:IN_CATEGORY]->(c:Category)
    WHERE NOT c.id IN rc.keep
    DELETE old
    WITH count(*) AS stage
    UNWIND $replaced_attributes AS ra
    MATCH (:Item {id: ra.id})-[old]->(t)
    WHERE old.relation = ra.relation AND NOT t.id IN ra.keep
    DELETE old
"""
)

_ATTRIBUTE_NODES = ATTRIBUTE_NODES

_DONE = """
    WITH count(*) AS stage
    MATCH (rev:Revision {id: 'catalogue'})
    RETURN rev.revision AS revision
"""

_UPSERT_PARAMS: dict[str, Any] = {
    "now": 1700000000000,
    "items": [
        {
            "id": "B0001",
            "props": {
                "title": "Lipstick",
                "description": "A matte red lipstick with shea butter.",
                "price": 9.5,
                "currency": "EUR",
                "available": True,
                "stock": 3,
                "listed_at": 1700000000000,
                "delisted_at": None,
            },
            "brands": ["Acme"],
            "categories": ["Beauty", "Lips"],
        }
    ],
    "category_links": [{"child_id": "Lips", "parent_id": "Beauty"}],
    "tree_ids": ["Beauty", "Lips"],
    "tree_links": [["Beauty", "Care"]],
    "replaced_brands": [{"id": "B0001", "keep": ["Acme"]}],
    "replaced_categories": [{"id": "B0001", "keep": ["Beauty", "Lips"]}],
    "replaced_attributes": [{"id": "B0001", "relation": "material", "keep": ["cotton"]}],
}


def _stages(*parts: str) -> str:
    return "\n".join(part.strip("\n") for part in parts)


UPSERT_CATALOGUE_ITEMS: Statement = write(
    "upsert_catalogue_items", _stages(_BUMP, _ITEMS, _DONE), **_UPSERT_PARAMS
)


@lru_cache(maxsize=1024)
def _upsert_with_attributes(links: tuple[tuple[str, Label], ...]) -> Statement:
    # Each type comes from relationship_type() (through attribute_link_keys), each label from the allow-list.
    stages, name = attribute_link_stages(links)
    example = [{"head": "B0001", "relation": "material", "tail": "cotton"}]
    return write(
        f"upsert_catalogue_items_with_{name}",
        _stages(_BUMP, _ITEMS, _ATTRIBUTE_NODES, *stages, _DONE),
        **_UPSERT_PARAMS,
        attribute_entities=["cotton"],
        attribute_items=["B0002"],
        **{f"attributes_{n}": example for n in range(len(links))},
    )


def upsert_catalogue_statement(attribute_links: Iterable[tuple[str, Label]] = ()) -> Statement:
    """The upsert for a batch whose attributes use ``attribute_links`` ((relation, Item|Entity) pairs).

    Takes the parameters of :data:`UPSERT_CATALOGUE_ITEMS`, plus, with attributes,
    ``$attribute_entities``, ``$attribute_items`` and one ``$attributes_<n>`` per key
    of :func:`~graph_schema.statements.events.attribute_link_keys`, as event
    ingestion does. Returns the new catalogue revision.
    """
    keys = attribute_link_keys(attribute_links)
    return _upsert_with_attributes(keys) if keys else UPSERT_CATALOGUE_ITEMS


# The rendered form the lint and the effect test check: hostile-but-valid names, both value labels.
UPSERT_CATALOGUE_ITEMS_WITH_ATTRIBUTES = upsert_catalogue_statement(
    [("film.film.genre", Label.ENTITY), ("similar_to", Label.ITEM)]
)

# DELETE /v1/items/{id}: the item stays (with its history), hidden from now on.
DELIST_ITEM = write(
    "delist_item",
    """
    MATCH (i:Item {id: $item_id})
"""
    + bump_catalogue()
    + """
    WITH i, rev
    SET i.delisted_at = CASE WHEN i.delisted_at IS NULL OR i.delisted_at > $now
                             THEN $now ELSE i.delisted_at END,
        i.revision = rev.revision, i.updated_at = $now
    RETURN i.id AS id, i.delisted_at AS delisted_at, rev.revision AS revision
    """,
    item_id="B0001",
    now=1700000000000,
)

CATALOGUE_REVISION = read(
    "catalogue_revision",
    """
    MATCH (rev:Revision {id: $id})
    RETURN rev.revision AS revision
    """,
    id=CATALOGUE,
)

# An item's (i) brands and categories, each category with its parents' ids.
_BRANDS_AND_CATEGORIES = """
    OPTIONAL MATCH (i)-[:MADE_BY]->(b:Brand)
    WITH i, collect(b.id) AS brands
    OPTIONAL MATCH (i)-[:IN_CATEGORY]->(c:Category)
    OPTIONAL MATCH (c)-[:SUBCATEGORY_OF]->(p:Category)
    WITH i, brands, c, collect(p.id) AS parents
    WITH i, brands, collect({id: c.id, parents: parents}) AS categories
"""

# Items the catalogue API changed after revision $since (Item.revision is indexed), with their
# brands and categories (each with its parents: the links a category path wrote), which serving
# lays over the model's facts (kgrec.catalogue.CatalogueSnapshot.facts).
CATALOGUE_CHANGES = read(
    "catalogue_changes",
    """
    MATCH (i:Item)
    WHERE i.revision > $since
    """
    + _BRANDS_AND_CATEGORIES
    + """
    RETURN i.id AS id, i.price AS price, i.available AS available,
           i.listed_at AS listed_at, i.delisted_at AS delisted_at, i.revision AS revision,
           i.updated_at AS updated_at, brands, categories
    """,
    since=0,
)

# The stored category links above the given ids (the ids' own links included), read before a
# category path is written to refuse one that would close a loop (kgrec.category_tree.cycle_problems).
CATEGORY_LINKS_ABOVE = read(
    "category_links_above",
    """
    UNWIND $ids AS id
    MATCH (:Category {id: id})-[:SUBCATEGORY_OF*0..]->(c:Category)-[:SUBCATEGORY_OF]->(p:Category)
    RETURN DISTINCT c.id AS child, p.id AS parent
    """,
    ids=["Makeup", "Beauty"],
)

# One item as the graph holds it: its fields, brands, categories (with their parents), attributes.
CATALOGUE_ITEM = read(
    "catalogue_item",
    """
    MATCH (i:Item {id: $item_id})
    """
    + _BRANDS_AND_CATEGORIES
    + """
    OPTIONAL MATCH (i)-[k]->(t)
    WHERE k.relation IS NOT NULL
    RETURN i.id AS id, i.title AS title, i.description AS description, i.price AS price,
           i.currency AS currency, i.available AS available, i.stock AS stock, i.listed AS listed,
           i.listed_at AS listed_at,
           i.delisted_at AS delisted_at, i.created_at AS created_at, i.updated_at AS updated_at,
           brands, categories, collect({relation: k.relation, value: t.id}) AS attributes
    """,
    item_id="B0001",
)
