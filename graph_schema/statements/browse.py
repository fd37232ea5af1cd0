"""Reads for browsing the graph (the console and any client): search, a user's timeline, a neighbourhood.

Search looks at ids (exact or prefix) and at names and titles (case-insensitive
substring). Names have no full-text index both engines share, so a name search
scans the label; every branch stops at ``$limit`` rows. The engines lower-case
differently (FalkorDB letter by letter: a word-final capital sigma becomes σ, not ς,
and İ becomes i, not i̇), so a name and the needle are both folded past those
differences (``$folds``, :data:`kgrec.browse.SEARCH_FOLDS`) before they are compared.
"""

from graph_schema.behaviours import COUNTER_PROPERTIES
from graph_schema.catalogue import read
from graph_schema.statements.topics import active_name, active_naming

# Each searchable label, with the property that names its nodes.
SEARCH_LABELS = {
    "User": None,
    "Item": "title",
    "Brand": "name",
    "Category": "name",
    "Entity": "name",
    "Topic": "name",
}

_SEARCH_BRANCH = """
    MATCH (n:{label})
    WHERE '{label}' IN $labels
      AND (n.id STARTS WITH $query {name_match})
    RETURN '{label}' AS label, n.id AS id, {name} AS name
    LIMIT $limit
"""
_FOLDED_CONTAINS = "reduce(s = toLower({name}), f IN $folds | replace(s, f[0], f[1])) CONTAINS $needle"
# A topic is found and shown by the active version's name for it, as the topics' own reads give it
# (active_name); the other labels keep one WHERE on the node, where an id index can serve the prefix.
_TOPIC_SEARCH_BRANCH = f"""
    MATCH (n:Topic)
    WHERE 'Topic' IN $labels{active_naming("n")}
    WITH n, {active_name("n")} AS name
    WHERE n.id STARTS WITH $query OR {_FOLDED_CONTAINS.format(name="name")}
    RETURN 'Topic' AS label, n.id AS id, coalesce(name, n.id) AS name
    LIMIT $limit
"""


def _search_branch(label: str, name_property: str | None) -> str:
    # Labels and properties come from the fixed table above, never from a request.
    if label == "Topic":
        return _TOPIC_SEARCH_BRANCH
    if name_property is None:
        return _SEARCH_BRANCH.format(label=label, name_match="", name="n.id")
    return _SEARCH_BRANCH.format(
        label=label,
        name_match="OR " + _FOLDED_CONTAINS.format(name=f"n.{name_property}"),
        name=f"coalesce(n.{name_property}, n.id)",
    )


SEARCH = read(
    "browse_search",
    "UNION ALL".join(_search_branch(label, prop) for label, prop in SEARCH_LABELS.items()),
    labels=["User", "Item"],
    query="B0047",
    needle="lipstick",
    folds=[["\u03c2", "\u03c3"], ["i\u0307", "i"]],
    limit=20,
)

_COUNTERS = ", ".join(f"coalesce(r.{name}, 0) AS {name}" for name in COUNTER_PROPERTIES)

# A user's latest interactions, one row per item, most recent first, with the item's brands and categories.
USER_TIMELINE = read(
    "browse_user_timeline",
    f"""
    MATCH (:User {{id: $user_id}})-[r:INTERACTED]->(i:Item)
    WITH r, i, coalesce(r.last_ts, r.last_seq, 0) AS position
    ORDER BY position DESC
    LIMIT $limit
    OPTIONAL MATCH (i)-[:MADE_BY]->(b:Brand)
    WITH r, i, position, collect(DISTINCT b.id) AS brands
    OPTIONAL MATCH (i)-[:IN_CATEGORY]->(c:Category)
    WITH r, i, position, brands, collect(DISTINCT c.id) AS categories
    RETURN i.id AS item_id, i.title AS title, r.first_ts AS first_ts, r.last_ts AS last_ts,
           r.last_seq AS last_seq, r.weight AS weight, r.weight_ts AS weight_ts, brands, categories,
           {_COUNTERS}
    ORDER BY position DESC
    """,
    user_id="A1YJEY40YUW4SE",
    limit=50,
)

# Up to $first neighbours of an item (either direction, any relationship but a model's; brands,
# categories and entities first, then users, then items), each with its neighbours b (r2: the
# edge; none for a user: a user's other items would be every customer's basket). Model versions
# are never part of a neighbourhood. A topic's name is the active version's (active_name), as the
# topics' own reads give it. The opening, a second neighbour's shown fields and the rows are shared
# with the read before 2026-12-07 (graph_schema/bench_statements.py).
NEIGHBOURHOOD_OPENING = f"""
    MATCH (i:Item {{id: $item_id}})-[r1]-(a)
    WHERE NOT a:ModelVersion
    WITH i, r1, a
    ORDER BY CASE WHEN a:Item THEN 2 WHEN a:User THEN 1 ELSE 0 END, a.id
    LIMIT $first{active_naming("a", "a_naming")}
    WITH i, r1, a, coalesce({active_name("a", "a_naming")}, a.title, a.id) AS name
    OPTIONAL MATCH (a)-[r2]-(b)
    WHERE NOT a:User AND NOT b:ModelVersion AND NOT b:User AND b <> i"""
NEIGHBOURHOOD_HOP = """CASE WHEN b IS NULL THEN NULL ELSE {
             label: labels(b)[0], id: b.id, name: coalesce(b_name, b.title, b.id),
             type: type(r2), relation: r2.relation, outgoing: startNode(r2) = a
         } END"""
NEIGHBOURHOOD_ROWS = """
    RETURN labels(a)[0] AS label, a.id AS id, name,
           type(r1) AS type, r1.relation AS relation, startNode(r1) = i AS outgoing,
           r1.weight AS weight, second
    """

# The neighbourhood with up to $per_node of each first neighbour's neighbours, the lowest ids. They
# are cut to $per_node before any is named: a category's every item would otherwise be looked up
# for a name, to keep three (bench/item_neighbourhood.py); k keeps the cut's order through the
# lookup. Ties in id (two edges to one node, a Category and an Entity of one id) are ordered too,
# so the same graph always shows the same three.
ITEM_NEIGHBOURHOOD = read(
    "browse_item_neighbourhood",
    NEIGHBOURHOOD_OPENING
    + f"""
    WITH i, r1, a, name, r2, b
    ORDER BY b.id, labels(b)[0], type(r2), r2.relation
    WITH i, r1, a, name, collect(CASE WHEN b IS NULL THEN NULL ELSE [r2, b] END)[0..$per_node] AS kept
    UNWIND CASE WHEN size(kept) = 0 THEN [null] ELSE range(0, size(kept) - 1) END AS k
    WITH i, r1, a, name, k, kept[k][0] AS r2, kept[k][1] AS b{active_naming("b", "b_naming")}
    WITH i, r1, a, name, k, r2, b, {active_name("b", "b_naming")} AS b_name
    ORDER BY k
    WITH i, r1, a, name, collect({NEIGHBOURHOOD_HOP}) AS second"""
    + NEIGHBOURHOOD_ROWS,
    item_id="B004756YJA",
    first=40,
    per_node=3,
)
