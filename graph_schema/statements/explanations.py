"""Explanation paths: typed meta-paths of at most 3 hops from a user to candidate items.

``EXPLANATION_PATHS`` finds every path kind but ``co_user`` for a batch of
target items in one statement; ``EXPLANATION_CO_USERS`` finds the co-user paths
of one target, and the caller sends one per target that needs it, pipelined
(:func:`kgrec.explanations.read_co_user_paths`):
its scan of the target's users must stop at a LIMIT, and no clause both engines
accept limits per row of a batch (FalkorDB 4.16 has no ``CALL (x) {...}``;
Neo4j 5 deprecates ``CALL { WITH x ... }``).
Every branch returns the same columns: the target, the path kind, the
path's nodes (label, id, name; an entity also its kind and ``linked``, the
number of items its relation links to it) and relationships (type, relation,
direction, weight, weight_ts, verb), and a support count. ``direction`` is
``out`` when the relationship points from the node before it to the node after
it; ``relation`` is the knowledge edge's exact relation name (null elsewhere).

Co-purchase paths are the costliest to search for (a user's recent items have
thousands of co-purchase links between them), so the caller proposes them:
``$forward`` and ``$backward`` hold the (hub, target) pairs that the served
model's item–item graphs link (:func:`kgrec.explanations.co_purchase_pairs`),
and the statement keeps those the graph confirms, with the user's edge to the
hub. A backward pair is confirmed from the target's side, whose few outgoing
links are walked: the hub's incoming links (thousands for a popular item) are
never expanded. The WITH keeps FalkorDB's planner from folding the two MATCH
clauses into one traversal through the hub's incoming edges (27.7 ms against
3.0 ms of the graph's time for one explanation at bench.scale's 16x). The other
kinds are searched in the graph from the user's ``$hubs`` most recent items and
strongest interests. No co-purchase branch matches a multi-type pattern between
two already-bound nodes (the far end is matched by id, or is a new variable
compared by id): FalkorDB 4.16 crashed (SIGSEGV) on that under concurrent writes
(bench/soak.py).

The open knowledge graph is read generically: any relationship with a
``relation`` property is a knowledge edge, whatever its type, so no relation
name is written here. Only outgoing edges of the user's items and of the
targets are expanded: an item's incoming edges include every user's
interaction, and an entity's include every item that has it (a genre may have
thousands), so neither is ever walked to find a path. Shared attributes are
joined on the entity in memory instead. A ``WITH`` between two MATCH clauses
keeps FalkorDB's planner from joining them and starting from the wrong end
(from the hubs' incoming edges, thousands of interactions each on the demo shop,
to find the targets' related items).

Paths:

- ``co_purchase``: user -INTERACTED-> item -(ALSO_BOUGHT|ALSO_VIEWED|BOUGHT_TOGETHER)- target
  (both directions; links added to the graph after the model was trained are
  found once the next model has them);
- ``related_item``: user -INTERACTED-> item -(any other knowledge relation)- target
  (both directions);
- ``shared_attribute``: user -INTERACTED-> item -[k]-> entity <-[k2]- target with
  k.relation = k2.relation (one witness item per target, entity and relation,
  the user's most recent; support = how many of the user's items share it).
  The entity's ``linked`` count is taken once per (entity, relation) that
  joins, except for the pairs in ``$counted``, whose counts the caller
  remembers (:class:`kgrec.explanations.EntityCounts`): counting walks every
  item of the entity, which is what a popular genre must not cost on every
  request. (A pattern comprehension anchored on null walks nothing on
  FalkorDB, while one inside a CASE branch is evaluated regardless.)
- ``same_brand``: user -INTERACTED-> item -MADE_BY-> brand <-MADE_BY- target (the brand's
  other items are never walked: the target's brand is matched, then each hub's edge to it);
- ``interest``: user -INTERESTED_IN-> brand|category|topic <-MADE_BY|IN_CATEGORY|ABOUT- target,
  from the user's $hubs strongest interests, decayed to $now as every reader of a weight
  decays it (a fresh interest outranks a stale heavier one; the target's few outgoing edges are walked, and
  the multi-type pattern never joins two bound nodes);
- ``co_user`` (``EXPLANATION_CO_USERS``): user -INTERACTED-> item <-INTERACTED- other user
  -INTERACTED-> target, from the user's $hubs most recent items. Only the first
  ``CO_USER_CANDIDATES`` users of the target the graph lists (flagged bots excluded) are
  candidates: the scan stops there, so a target with thousands of users costs what one with
  two hundred does (choosing its *most recent* users meant reading and sorting every one of
  its edges: about 20 ms of the graph's time for an item 30% of the demo shop's users saw).
  Support = how many candidates also have the hub. The other users are anonymous: the path's
  third node is ``{label: 'User', id: null, name: null, anonymous: true}`` and its two edges
  carry no weight or verb, so no reader learns who they are or what they did;
- ``reviewed_topic``: user -INTERACTED (reviewed)-> item -ABOUT-> topic <-ABOUT- target, from the
  user's $hubs most recent reviewed items (the topic's other items are never walked: the target's
  own ABOUT edge is checked).

A topic's name (``interest``, ``reviewed_topic``) is the active version's, whose ABOUT edges
the paths walk (``ACTIVE_NAMING`` in graph_schema/statements/topics.py).
"""

from graph_schema.allow_list import KNOWLEDGE_RELATIONS
from graph_schema.catalogue import read
from graph_schema.decay import decayed_weight
from graph_schema.statements.topics import ACTIVE_NAME, ACTIVE_NAMING

# How an INTERACTED edge reads in a sentence.
# The strongest thing the user did with the item, as the sentences say it ("which you {verb}"):
# the {verb} list in kgrec/relation_sentences.toml and the README's "Explanations" name these seven.
VERB = """CASE WHEN coalesce({r}.n_purchase, 0) > 0 THEN 'bought'
                WHEN coalesce({r}.n_rating, 0) > 0 THEN 'rated'
                WHEN coalesce({r}.n_review, 0) > 0 THEN 'reviewed'
                WHEN coalesce({r}.n_cart, 0) > 0 THEN 'added to the cart'
                WHEN coalesce({r}.n_fav, 0) > 0 THEN 'saved'
                WHEN coalesce({r}.n_click, 0) > 0 THEN 'clicked'
                ELSE 'viewed' END"""


def _node(label: str, var: str, name: str) -> str:
    return f"{{label: '{label}', id: {var}.id, name: coalesce({name}, {var}.id)}}"


def _interacted(var: str, direction: str) -> str:
    return (
        f"{{type: 'INTERACTED', relation: null, direction: '{direction}', weight: {var}.weight, "
        f"weight_ts: {var}.weight_ts, verb: {VERB.format(r=var)}}}"
    )


def _plain(rel_type: str, direction: str, relation: str = "null") -> str:
    return (
        f"{{type: {rel_type}, relation: {relation}, direction: '{direction}', "
        "weight: null, weight_ts: null, verb: null}"
    )


# The item–item knowledge relationship types a co-purchase path may take; a related-item
# path takes any other.
_CO_PURCHASE_TYPES = "|".join(KNOWLEDGE_RELATIONS.values())
_CO_PURCHASE_LIST = "[" + ", ".join(f"'{rel.value}'" for rel in KNOWLEDGE_RELATIONS.values()) + "]"

_USER = _node("User", "u", "u.id")
# The target's edge to the interest: a brand makes it, a category holds it, a topic is what it is about.
_INTEREST_LINK = (
    "CASE labels(t)[0] WHEN 'Brand' THEN 'MADE_BY' WHEN 'Topic' THEN 'ABOUT' ELSE 'IN_CATEGORY' END"
)
_HUB = _node("Item", "h", "h.title")
# The other customers of a co-user path are never named: no id, no name, none of their edges' weights.
_ANONYMOUS_USER = "{label: 'User', id: null, name: null, anonymous: true}"
_TARGET = _node("Item", "i", "i.title")
_ENTITY = "{label: 'Entity', id: e.id, name: coalesce(e.name, e.id), kind: e.kind, linked: linked}"

# The user's side is bounded: the $hubs most recent interactions and strongest
# interests, so a heavy user's explanation costs about the same as a light one's.
# Co-users are found from the target's side (its users' items that are hubs):
# a popular hub's thousands of users are never expanded.
_RECENT_HUBS = """
    MATCH (u:User {{id: $user_id}})-[r:INTERACTED]->(h:Item)
    WITH u, r, h ORDER BY coalesce(r.last_ts, r.last_seq, 0) DESC, h.id LIMIT {limit}
    UNWIND $item_ids AS target_id
"""

# A co-user path is looked for among this many of the target's users only (the first the
# graph lists): a popular item's thousands of users, each walked to all their items, made one
# explanation cost tens of ms.
CO_USER_CANDIDATES = 200

# The same bound, without the targets: the user's $hubs most recent items.
# (Shared attributes carry lists, not maps, between clauses: the lint accepts only
# graph properties as map keys. links: [entity, relation, type, hub, interaction, recency];
# hits: [target, type, witness link, support]. The witness is the most recent hub.)
_RECENT_HUBS_ONLY = """MATCH (u:User {id: $user_id})-[r:INTERACTED]->(h:Item)
    WITH u, r, h ORDER BY coalesce(r.last_ts, r.last_seq, 0) DESC, h.id LIMIT $hubs"""

EXPLANATION_PATHS = read(
    "explanation_paths",
    f"""
    MATCH (u:User {{id: $user_id}})
    UNWIND $forward AS pair
    MATCH (u)-[r:INTERACTED]->(h:Item {{id: pair.hub}})
    MATCH (h)-[k:{_CO_PURCHASE_TYPES}]->(i:Item {{id: pair.target}})
    RETURN pair.target AS target_id, 'co_purchase' AS kind, [{_USER}, {_HUB}, {_TARGET}] AS nodes,
           [{_interacted("r", "out")}, {_plain("type(k)", "out", "k.relation")}] AS rels, 1 AS support
    UNION ALL
    MATCH (u:User {{id: $user_id}})
    UNWIND $backward AS pair
    MATCH (u)-[r:INTERACTED]->(h:Item {{id: pair.hub}})
    WITH pair, u, r, h
    MATCH (i:Item {{id: pair.target}})-[k:{_CO_PURCHASE_TYPES}]->(x:Item)
    WHERE x.id = pair.hub
    RETURN pair.target AS target_id, 'co_purchase' AS kind, [{_USER}, {_HUB}, {_TARGET}] AS nodes,
           [{_interacted("r", "out")}, {_plain("type(k)", "in", "k.relation")}] AS rels, 1 AS support
    UNION ALL
    {_RECENT_HUBS_ONLY}
    MATCH (h)-[k]->(i:Item)
    WHERE k.relation IS NOT NULL AND NOT type(k) IN {_CO_PURCHASE_LIST} AND i.id IN $item_ids AND i <> h
    RETURN i.id AS target_id, 'related_item' AS kind, [{_USER}, {_HUB}, {_TARGET}] AS nodes,
           [{_interacted("r", "out")}, {_plain("type(k)", "out", "k.relation")}] AS rels, 1 AS support
    UNION ALL
    {_RECENT_HUBS_ONLY}
    WITH u, collect(h) AS hubs
    UNWIND $item_ids AS target_id
    MATCH (i:Item {{id: target_id}})-[k]->(h:Item)
    WHERE k.relation IS NOT NULL AND NOT type(k) IN {_CO_PURCHASE_LIST} AND h IN hubs AND h <> i
    WITH target_id, u, i, k, h
    MATCH (u)-[r:INTERACTED]->(h)
    RETURN target_id, 'related_item' AS kind, [{_USER}, {_HUB}, {_TARGET}] AS nodes,
           [{_interacted("r", "out")}, {_plain("type(k)", "in", "k.relation")}] AS rels, 1 AS support
    UNION ALL
    {_RECENT_HUBS_ONLY}
    MATCH (h)-[k]->(e:Entity)
    WHERE k.relation IS NOT NULL
    WITH collect([e, k.relation, type(k), h, r, coalesce(r.last_ts, r.last_seq, 0)]) AS links,
         collect(DISTINCT e) AS entities
    UNWIND $item_ids AS target_id
    MATCH (i:Item {{id: target_id}})-[k2]->(e:Entity)
    WHERE k2.relation IS NOT NULL AND e IN entities
    WITH i, k2, e, [l IN links WHERE l[0] = e AND l[1] = k2.relation AND l[3] <> i] AS witnesses
    WHERE size(witnesses) > 0
    WITH e, k2.relation AS relation, i, k2, witnesses,
         reduce(best = witnesses[0], c IN witnesses | CASE WHEN c[5] > best[5] THEN c ELSE best END)
         AS witness
    WITH e, relation, collect([i, type(k2), witness, size(witnesses)]) AS hits
    WITH e, relation, hits, CASE WHEN [e.id, relation] IN $counted THEN null ELSE e END AS uncounted
    WITH e, relation, hits,
         CASE WHEN uncounted IS NULL THEN null
              ELSE size([(uncounted)<-[y]-(o:Item) WHERE y.relation = relation | o.id]) END AS linked
    UNWIND hits AS hit
    WITH e, relation, linked, hit[0] AS i, hit[1] AS target_type, hit[2] AS witness, hit[3] AS support
    WITH e, relation, linked, i, target_type, support,
         witness[3] AS h, witness[4] AS r, witness[2] AS hub_type
    MATCH (u:User {{id: $user_id}})
    RETURN i.id AS target_id, 'shared_attribute' AS kind,
           [{_USER}, {_HUB}, {_ENTITY}, {_TARGET}] AS nodes,
           [{_interacted("r", "out")}, {_plain("hub_type", "out", "relation")},
            {_plain("target_type", "in", "relation")}] AS rels,
           support
    UNION ALL
    {_RECENT_HUBS.format(limit="$hubs")}
    MATCH (i:Item {{id: target_id}})-[:MADE_BY]->(b:Brand)
    WITH u, r, h, target_id, i, b
    MATCH (h)-[:MADE_BY]->(b)
    WHERE h <> i
    RETURN target_id, 'same_brand' AS kind,
           [{_USER}, {_HUB}, {_node("Brand", "b", "b.name")}, {_TARGET}] AS nodes,
           [{_interacted("r", "out")}, {_plain("'MADE_BY'", "out")}, {_plain("'MADE_BY'", "in")}] AS rels,
           1 AS support
    UNION ALL
    MATCH (u:User {{id: $user_id}})-[x:INTERESTED_IN]->(t)
    WITH u, x, t ORDER BY {decayed_weight("x.weight", "x.weight_ts")} DESC, t.id LIMIT $hubs
    WITH u, collect(t) AS interests
    UNWIND $item_ids AS target_id
    MATCH (i:Item {{id: target_id}})-[:MADE_BY|IN_CATEGORY|ABOUT]->(t)
    WHERE t IN interests
    WITH target_id, u, i, t
    MATCH (u)-[x:INTERESTED_IN]->(t){ACTIVE_NAMING}
    RETURN target_id, 'interest' AS kind,
           [{_USER}, {{label: labels(t)[0], id: t.id, name: coalesce({ACTIVE_NAME}, t.id)}},
            {_TARGET}] AS nodes,
           [{{type: 'INTERESTED_IN', relation: null, direction: 'out', weight: x.weight,
              weight_ts: x.weight_ts, verb: null}},
            {_plain(_INTEREST_LINK, "in")}] AS rels,
           1 AS support
    UNION ALL
    MATCH (u:User {{id: $user_id}})-[r:INTERACTED]->(h:Item)
    WHERE coalesce(r.n_review, 0) > 0
    WITH u, r, h ORDER BY coalesce(r.last_ts, r.last_seq, 0) DESC, h.id LIMIT $hubs
    MATCH (h)-[:ABOUT]->(t:Topic)
    UNWIND $item_ids AS target_id
    MATCH (i:Item {{id: target_id}})
    WHERE h <> i AND (i)-[:ABOUT]->(t){ACTIVE_NAMING}
    RETURN target_id, 'reviewed_topic' AS kind,
           [{_USER}, {_HUB}, {_node("Topic", "t", ACTIVE_NAME)}, {_TARGET}] AS nodes,
           [{_interacted("r", "out")}, {_plain("'ABOUT'", "out")}, {_plain("'ABOUT'", "in")}] AS rels,
           1 AS support
    """,
    user_id="A1YJEY40YUW4SE",
    item_ids=["B004756YJA"],
    hubs=30,
    now=1_700_000_000_000,
    half_life_ms=2_592_000_000,
    forward=[{"hub": "B000052YAN", "target": "B004756YJA"}],
    backward=[{"hub": "B000052YAN", "target": "B004756YJA"}],
    counted=[["m.0jzc", "film.film.genre"]],
)

# One target per read (pipelined with EXPLANATION_PATHS, one round trip): only a LIMIT
# stops a scan of the target's users early, and a LIMIT cannot apply per row of a batch
# in the Cypher both engines accept (FalkorDB 4.16 has no CALL (x) {...}, Neo4j 5
# deprecates CALL { WITH x ... }).
EXPLANATION_CO_USERS = read(
    "explanation_co_users",
    f"""
    MATCH (u:User {{id: $user_id}})-[r:INTERACTED]->(h:Item)
    WITH u, r, h ORDER BY coalesce(r.last_ts, r.last_seq, 0) DESC, h.id LIMIT $hubs
    WITH u, collect(h) AS hubs
    MATCH (i:Item {{id: $item_id}})
    WITH u, hubs, i
    MATCH (i)<-[ri:INTERACTED]-(other:User)
    WHERE other <> u AND coalesce(other.flagged_bot, false) = false
    WITH u, hubs, i, other LIMIT {CO_USER_CANDIDATES}
    MATCH (other)-[:INTERACTED]->(h)
    WHERE h IN hubs AND h <> i
    WITH u, h, i, count(DISTINCT other) AS support
    MATCH (u)-[r:INTERACTED]->(h)
    RETURN i.id AS target_id, 'co_user' AS kind,
           [{_USER}, {_HUB}, {_ANONYMOUS_USER}, {_TARGET}] AS nodes,
           [{_interacted("r", "out")}, {_plain("'INTERACTED'", "in")},
            {_plain("'INTERACTED'", "out")}] AS rels,
           support
    """,
    user_id="A1YJEY40YUW4SE",
    item_id="B004756YJA",
    hubs=30,
)
