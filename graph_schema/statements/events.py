"""Event ingestion: one atomic statement per batch, plus the pruning of faded edges.

Interest edges (user → brand, user → category) are updated in the same pass as
the user–item edges: each touched item's MADE_BY and IN_CATEGORY targets,
aggregated per (user, target). Language events add two stages to the same
statement: tag counts (``(:Item)-[:TAGGED {count}]->(:Tag)``) and the topic
interests that review, tag and search text matched (``$topic_interests``,
aggregated per (user, topic) by :mod:`kgrec.events.ingest`), merged into the
INTERESTED_IN edges with the same decay as every interest. Topic interests come
from language only: what a user did with items is already their history. A third
language stage keeps each user's text vector (``User.text_vector``, stamped
``text_vector_ts``): the decayed sum of their texts' embeddings (``$text_vectors``,
one row per user), merged with the same decay.

The brand and category aggregation is :func:`kgrec.interests.interest_rows`
(the importer calls it) spelled out in Cypher: done in Python it needs the items'
targets first, one more read per batch (measured: a 1,000-event batch took about
half as long again). ``tests/test_decay.py`` checks the two agree.

FalkorDB evaluates an UNWIND batch without row-by-row visibility of earlier
SETs, so the ingester aggregates a batch first and every stage below touches
each node or relationship at most once. Stages are chained with ``WITH
count(*)``, which keeps the statement going when a stage has no rows.

Decay: a weight ``w`` stamped ``weight_ts`` is worth ``w * 2^(-(t - weight_ts) / half_life)``
at time ``t``. Merging new evidence moves the stamp to the later of the two
times, so out-of-order events are decayed correctly.
"""

from collections.abc import Iterable
from functools import lru_cache
from typing import Any

from graph_schema.allow_list import Label
from graph_schema.behaviours import BEHAVIOUR_TABLE
from graph_schema.catalogue import Statement, known_ids, read, write
from graph_schema.decay import decay_factor, decayed_weight
from graph_schema.relation_names import relationship_type
from graph_schema.statements.knowledge import (
    ATTRIBUTE_NODES,
    CATEGORY_PATH_LINKS,
    ITEM_FACTS,
    TREE_UNCHANGED,
    absorb_entities,
    attribute_link_stages,
    bump_catalogue_if,
    stamp_changed,
)

# Which of $ids are recorded, with the hash of the content each was recorded with (null: recorded
# before 2026-12-07, when no hash was kept): a resend of the same content is a retry, whose
# attribution may still be owed; another event under a used id is neither applied nor attributed.
SEEN_EVENTS = known_ids("seen_events", Label.EVENT.value, "evt-1", returned=("content_hash",))


def _stages(*parts: str) -> str:
    return "\n".join(part.strip("\n") for part in parts)


# Pairs carry only their non-zero counters; a missing key reads as null.
_COUNTERS = ",\n        ".join(
    f"r.{b.counter} = coalesce(r.{b.counter}, 0) + coalesce(p.counts.{b.counter}, 0)" for b in BEHAVIOUR_TABLE
)


_PAIR_ROW = {
    "user_id": "u1",
    "item_id": "i1",
    "counts": {"n_purchase": 1},
    "events": 1,
    "weight": 5.0,
    "ref_ts": 1700000000000,
    "first_ts": 1700000000000,
    "rating": None,
    "rating_ts": None,
    "review_text": None,
    "review_ts": None,
}


def _tombstone(row: str) -> str:
    """Bind ``gone`` to the tombstone of ``row``'s user (``row.erasure_id``), null if none."""
    return f"    OPTIONAL MATCH (gone:Erasure {{id: {row}.erasure_id}})\n"


def _not_erased_since(since: str) -> str:
    """The condition on ``gone`` (:func:`_tombstone`): no tombstone at or after ``since`` less the
    margin for client clocks ahead (``$erasure_margin_ms``, :func:`kgrec.erasure.tombstone_margin_ms`),
    that is no erasure that committed after the ingester read the tombstones."""
    return f"gone IS NULL OR gone.erased_at + $erasure_margin_ms < {since}"


def _unless_erased(row: str, since: str) -> str:
    """Keep the ``row``s (each with the user's ``erasure_id``) unless their user's tombstone is at or
    after ``since``."""
    return (
        _tombstone(row)
        + f"""    WITH {row}, gone
    WHERE {_not_erased_since(since)}
"""
    )


# Bots: the user's counter holds their latest minute with events (rate_minute, rate_count). The
# batch's events in that minute are added to it ($users' minutes: every minute of the batch with
# its count), whatever later minutes the batch has too, so a minute split over two batches is
# counted whole; the batch's latest minute becomes the counter, and its own minutes are checked
# one by one (burst). The batch that first flags a user stamps when (`flagged_at`, its receive
# time): an erasure compares it with a version's pull to tell whether the version counted them.
# An event names the brand of an item that has none (an item has one brand); only the
# catalogue API replaces a brand. Each user's write lock is taken before its counters are read,
# so on Neo4j two batches for one user run one after the other (its edges too) and neither
# loses the other's counts. An item whose price, brand or categories the batch changes is
# stamped with a new catalogue revision, as a catalogue write is, so serving lays the change
# over its model within a second (kgrec.catalogue); a batch that changes none leaves the
# revision alone, so event batches do not all queue on its node. The items are read first and
# written after the revision is bumped: on Neo4j both this and a catalogue write then lock the
# revision before the items, so the two never wait on each other's locks in opposite orders.
# An Entity with a batch item's id becomes that Item first (absorb_entities: one id, one node).
# The ingester leaves out the events older than their user's tombstone, which it reads first; an
# erasure that commits between that read and this write is caught here, row by row: a user is not
# created unless some of their events are newer than it, nor a pair, text vector or topic interest
# of theirs written unless all of its events are (_unless_erased).
# Each event id is recorded with its content's hash (Event.content_hash), SET after the CREATE:
# given in the CREATE's map, FalkorDB stored the new key under an id its key table lacked.
_BEFORE_PAIRS = (
    TREE_UNCHANGED
    + """
    UNWIND $event_rows AS er
    CREATE (e:Event {id: er.id, received_at: $now})
    SET e.content_hash = er.content_hash
    WITH count(*) AS stage
    UNWIND $users AS ur
"""
    + _unless_erased("ur", "ur.last_ts")
    + """
    MERGE (u:User {id: ur.id})
    ON CREATE SET u.created_at = $now, u.flagged_bot = false
    SET u.write_lock = true
    WITH u, ur,
         coalesce(u.rate_count, 0) + reduce(n = 0, m IN ur.minutes |
             n + CASE WHEN m.minute = u.rate_minute THEN m.count ELSE 0 END) AS in_stored_minute
    WITH u, ur, in_stored_minute,
         CASE WHEN u.rate_minute IS NULL OR ur.minute > u.rate_minute THEN ur.minute_count
              ELSE in_stored_minute END AS in_minute
    WITH u, ur, in_minute, coalesce(u.flagged_bot, false) AS was_bot,
         in_minute > $bot_limit OR in_stored_minute > $bot_limit OR ur.burst > $bot_limit AS over
    SET u.write_lock = null,
        u.rate_minute = CASE WHEN u.rate_minute IS NULL OR ur.minute > u.rate_minute
                             THEN ur.minute ELSE u.rate_minute END,
        u.rate_count = in_minute,
        u.flagged_bot = was_bot OR over,
        u.flagged_at = CASE WHEN NOT was_bot AND over THEN $now ELSE u.flagged_at END
    WITH count(*) AS stage
"""
    + absorb_entities("[item IN $items | item.id]")
    + """
    WITH count(*) AS stage
    UNWIND $items AS it
    MERGE (i:Item {id: it.id})
    ON CREATE SET i.created_at = $now
    WITH it, i, i.price AS held_price
    OPTIONAL MATCH (i)-[:MADE_BY]->(held:Brand)
    WITH it, i, held_price, count(held) AS held_brands
    OPTIONAL MATCH (i)-[:IN_CATEGORY]->(hc:Category)
    WITH it, i, held_price, held_brands, collect(hc.id) AS held_categories
    WITH collect(it) AS its, collect(i) AS nodes,
         collect(CASE WHEN held_brands = 0 THEN it.brands ELSE [] END) AS new_brands,
         collect((held_brands = 0 AND size(it.brands) > 0)
                 OR any(category_id IN it.categories WHERE NOT category_id IN held_categories)
                 OR (it.price IS NOT NULL AND (held_price IS NULL OR it.price <> held_price))) AS changes
"""
    + bump_catalogue_if("changes", {"its": "it", "nodes": "i", "new_brands": "brands", "changes": "changed"})
    + f"""
    SET i.listed = true, i.title = coalesce(it.title, i.title), i.price = coalesce(it.price, i.price),
        {stamp_changed("i", "changed")}
"""
    + ITEM_FACTS
    + """
    WITH count(*) AS stage
"""
    + CATEGORY_PATH_LINKS
)

# The pairs come grouped by user ($user_pairs: {erasure_id, pairs}), so that the tombstone is
# looked up once per user, not once per pair (a batch of one user's 1,000 ratings: one lookup).
_PAIRS = (
    """
    WITH count(*) AS stage
    UNWIND $user_pairs AS up
"""
    + _tombstone("up")
    + f"""    WITH up, gone
    UNWIND up.pairs AS p
    WITH p, gone
    WHERE {_not_erased_since("p.first_ts")}
    MATCH (u:User {{id: p.user_id}})
    MATCH (i:Item {{id: p.item_id}})
    MERGE (u)-[r:INTERACTED]->(i)
    ON CREATE SET r.received_at = $now
    WITH u, i, r, p,
         CASE WHEN r.weight_ts IS NULL OR p.ref_ts > r.weight_ts THEN p.ref_ts ELSE r.weight_ts END AS at,
         p.rating IS NOT NULL AND (r.rating_ts IS NULL OR p.rating_ts >= r.rating_ts) AS newer_rating,
         p.review_text IS NOT NULL AND (r.review_ts IS NULL OR p.review_ts >= r.review_ts) AS newer_review
    SET r.weight = {decayed_weight("coalesce(r.weight, 0.0)", "coalesce(r.weight_ts, at)", "at")}
                   + {decayed_weight("p.weight", "p.ref_ts", "at")},
        r.weight_ts = at,
        r.first_ts = CASE WHEN r.first_ts IS NULL OR p.first_ts < r.first_ts
                          THEN p.first_ts ELSE r.first_ts END,
        r.last_ts = CASE WHEN r.last_ts IS NULL OR p.ref_ts > r.last_ts THEN p.ref_ts ELSE r.last_ts END,
        r.rating = CASE WHEN newer_rating THEN p.rating ELSE r.rating END,
        r.rating_ts = CASE WHEN newer_rating THEN p.rating_ts ELSE r.rating_ts END,
        r.review_text = CASE WHEN newer_review THEN p.review_text ELSE r.review_text END,
        r.review_ts = CASE WHEN newer_review THEN p.review_ts ELSE r.review_ts END,
        {_COUNTERS}
    WITH u, i, p
    MATCH (i)-[:MADE_BY|IN_CATEGORY]->(t)
    WITH u, t, max(p.ref_ts) AS ref, collect(p) AS ps
    WITH u, t, ref,
         reduce(w = 0.0, q IN ps | w + {decayed_weight("q.weight", "q.ref_ts", "ref")}) AS added,
         reduce(n = 0, q IN ps | n + q.events) AS events,
         reduce(lo = ref, q IN ps | CASE WHEN q.first_ts < lo THEN q.first_ts ELSE lo END) AS first_seen
"""
)

# Adds (added, stamped ref; events; first_seen) to the interest edge u → t, both decayed to the later stamp.
_MERGE_INTEREST = f"""
    MERGE (u)-[x:INTERESTED_IN]->(t)
    WITH x, ref, added, events, first_seen,
         CASE WHEN x.weight_ts IS NULL OR ref > x.weight_ts THEN ref ELSE x.weight_ts END AS at
    SET x.weight = {decayed_weight("coalesce(x.weight, 0.0)", "coalesce(x.weight_ts, at)", "at")}
                   + {decayed_weight("added", "ref", "at")},
        x.weight_ts = at,
        x.count = coalesce(x.count, 0) + events,
        x.first_ts = CASE WHEN x.first_ts IS NULL OR first_seen < x.first_ts
                          THEN first_seen ELSE x.first_ts END,
        x.last_ts = CASE WHEN x.last_ts IS NULL OR ref > x.last_ts THEN ref ELSE x.last_ts END
"""

# Tags on items the graph has (ingestion refuses a tag on an unknown item before writing).
# Each row is one user's count of one tag on one item: the user's own share is kept on
# (:User)-[:USED_TAG {item_id, count}]->(:Tag), so that erasing them takes it off the item's count
# (ERASE_USER); a tag of a user erased since is not written.
_TAGS = (
    """
    WITH count(*) AS stage
    UNWIND $tags AS tg
"""
    + _unless_erased("tg", "tg.first_ts")
    + """
    MATCH (u:User {id: tg.user_id})
    MATCH (i:Item {id: tg.item_id})
    MERGE (g:Tag {id: tg.tag})
    ON CREATE SET g.created_at = $now
    MERGE (u)-[ut:USED_TAG {item_id: tg.item_id}]->(g)
    SET ut.count = coalesce(ut.count, 0) + tg.count
    WITH i, g, sum(tg.count) AS added
    MERGE (i)-[r:TAGGED]->(g)
    SET r.count = coalesce(r.count, 0) + added
"""
)

# The user's text vector: the stored one and the batch's, both decayed to the later stamp, summed.
_TEXT_VECTORS = (
    """
    WITH count(*) AS stage
    UNWIND $text_vectors AS tv
"""
    + _unless_erased("tv", "tv.first_ts")
    + """
    MATCH (u:User {id: tv.user_id})
    WITH u, tv, CASE WHEN u.text_vector_ts IS NULL OR tv.ref_ts > u.text_vector_ts
                     THEN tv.ref_ts ELSE u.text_vector_ts END AS at
    WITH u, tv, at, """
    + decay_factor("tv.ref_ts", "at")
    + """ AS fresh,
         CASE WHEN u.text_vector IS NULL OR size(u.text_vector) <> size(tv.vector) THEN 0.0
              ELSE """
    + decay_factor("u.text_vector_ts", "at")
    + """ END AS kept
    SET u.text_vector = [k IN range(0, size(tv.vector) - 1) |
                         tv.vector[k] * fresh
                         + CASE WHEN kept > 0.0 THEN u.text_vector[k] * kept ELSE 0.0 END],
        u.text_vector_ts = at
"""
)

# Topic interests from text, one row per (user, topic); a topic retired since the match is skipped.
_TEXT_TOPICS = (
    """
    WITH count(*) AS stage
    UNWIND $topic_interests AS ti
"""
    + _unless_erased("ti", "ti.first_ts")
    + """
    MATCH (u:User {id: ti.user_id})
    MATCH (t:Topic {id: ti.topic_id})
    WITH u, t, ti.ref_ts AS ref, ti.weight AS added, ti.events AS events, ti.first_ts AS first_seen
"""
)

_RETURN = """
    RETURN count(*) AS done
"""
# A batch without language gets the statement without its stages (no empty UNWINDs to pay for).
_PAIRS_AND_INTERESTS = _stages(_PAIRS, _MERGE_INTEREST, _RETURN)
_WITH_LANGUAGE = _stages(
    _PAIRS, _MERGE_INTEREST, _TAGS, _TEXT_VECTORS, _TEXT_TOPICS, _MERGE_INTEREST, _RETURN
)

_INGEST_PARAMS: dict[str, Any] = {
    "now": 1700000000000,
    "half_life_ms": 1209600000.0,
    "bot_limit": 120,
    "erasure_margin_ms": 300000,
    "event_rows": [{"id": "evt-1", "content_hash": "c0ffee"}],
    "users": [
        {
            "id": "u1",
            "erasure_id": "c5ea71554c774daf7fab320fc3476afc0617eb00",
            "last_ts": 1700000000000,
            "minute": 28333333,
            "minute_count": 1,
            "burst": 1,
            "minutes": [{"minute": 28333333, "count": 1}],
        }
    ],
    "items": [{"id": "i1", "title": None, "price": None, "brands": ["Acme"], "categories": ["Beauty"]}],
    "category_links": [{"child_id": "Face", "parent_id": "Beauty"}],
    "tree_ids": ["Beauty", "Face"],
    "tree_links": [["Beauty", "Care"]],
    "user_pairs": [{"erasure_id": "c5ea71554c774daf7fab320fc3476afc0617eb00", "pairs": [_PAIR_ROW]}],
}
_LANGUAGE_PARAMS: dict[str, Any] = {
    "tags": [
        {
            "user_id": "u1",
            "erasure_id": "c5ea71554c774daf7fab320fc3476afc0617eb00",
            "item_id": "i1",
            "tag": "space opera",
            "count": 1,
            "first_ts": 1700000000000,
        }
    ],
    "topic_interests": [
        {
            "user_id": "u1",
            "erasure_id": "c5ea71554c774daf7fab320fc3476afc0617eb00",
            "topic_id": "topic-1",
            "weight": 3.0,
            "ref_ts": 1700000000000,
            "events": 1,
            "first_ts": 1700000000000,
        }
    ],
    "text_vectors": [
        {
            "user_id": "u1",
            "erasure_id": "c5ea71554c774daf7fab320fc3476afc0617eb00",
            "first_ts": 1700000000000,
            "ref_ts": 1700000000000,
            "vector": [0.6, 0.8],
        }
    ],
}


INGEST_EVENTS: Statement = write(
    "ingest_events", _stages(_BEFORE_PAIRS, _PAIRS_AND_INTERESTS), **_INGEST_PARAMS
)
# A batch with tags or text matched to topics: $tags and $topic_interests too.
INGEST_LANGUAGE_EVENTS: Statement = write(
    "ingest_language_events", _stages(_BEFORE_PAIRS, _WITH_LANGUAGE), **_INGEST_PARAMS, **_LANGUAGE_PARAMS
)

# Item attributes (an event's item.attributes): the values that are not items become Entity
# nodes, unknown values of the co-purchase relations unlisted items, and each (item, relation,
# value) a typed knowledge edge. The edges need their relationship types in the text, so the
# statement is rendered for the (type, value label) pairs a batch uses, with one stage and one
# $attributes_<n> parameter per pair, and stays one atomic statement (FalkorDB has no
# multi-statement transactions).
_ATTRIBUTE_NODES = ATTRIBUTE_NODES


@lru_cache(maxsize=1024)
def _ingest_with_attributes(links: tuple[tuple[str, Label], ...], language: bool = False) -> Statement:
    # Each type comes from relationship_type(), each label from the fixed allow-list.
    stages, name = attribute_link_stages(links)
    example = [{"head": "i1", "relation": "film.film.genre", "tail": "m.0jzc"}]
    return write(
        f"ingest_{'language_' if language else ''}events_with_{name}",
        _stages(
            _BEFORE_PAIRS, _ATTRIBUTE_NODES, *stages, _WITH_LANGUAGE if language else _PAIRS_AND_INTERESTS
        ),
        **_INGEST_PARAMS,
        **(_LANGUAGE_PARAMS if language else {}),
        attribute_entities=["m.0jzc"],
        attribute_items=["i2"],
        **{f"attributes_{n}": example for n in range(len(links))},
    )


def ingest_events_statement(
    attribute_links: Iterable[tuple[str, Label]] = (), *, language: bool = False
) -> Statement:
    """The ingestion statement for a batch whose item attributes use ``attribute_links``
    (``language``: with the stages of tags and topic interests, see the module docstring).

    ``attribute_links`` are (relation name, value label) pairs, value label Item or
    Entity; none gives :data:`INGEST_EVENTS`. The rendered statement takes
    ``$attribute_entities`` and ``$attribute_items`` (ids to MERGE) and, in the
    order of :func:`attribute_link_keys`, one ``$attributes_<n>`` list of
    ``{head, relation, tail}`` per key. Raises
    :class:`~graph_schema.relation_names.RelationNameError` for a bad name.
    """
    keys = attribute_link_keys(attribute_links)
    if keys:
        return _ingest_with_attributes(keys, language)
    return INGEST_LANGUAGE_EVENTS if language else INGEST_EVENTS


def attribute_link_keys(attribute_links: Iterable[tuple[str, Label]]) -> tuple[tuple[str, Label], ...]:
    """The sorted, distinct (relationship type, value label) pairs of ``attribute_links``."""
    keys = set()
    for relation, label in attribute_links:
        if label not in (Label.ITEM, Label.ENTITY):
            raise ValueError(f"attribute values are Item or Entity nodes, not {label}")
        keys.add((relationship_type(relation), label))
    return tuple(sorted(keys))


# The rendered form the lint and the effect test check: hostile-but-valid names, both value labels.
_EXAMPLE_LINKS = [("film.film.genre", Label.ENTITY), ("rdf:type", Label.ENTITY), ("similar_to", Label.ITEM)]
INGEST_EVENTS_WITH_ATTRIBUTES = ingest_events_statement(_EXAMPLE_LINKS)
INGEST_LANGUAGE_EVENTS_WITH_ATTRIBUTES = ingest_events_statement(_EXAMPLE_LINKS, language=True)

# A page of user ids after $after, in id order, for a prune by user batches (kgrec.maintenance): the
# pattern of the fold-in sweep's pages (ITEMS_WITHOUT_EMBEDDING). `toString(u.id)` keeps the range
# off FalkorDB's index on User.id, which answers it wrongly over ids mixing cases, digits and
# punctuation (graph_schema/statements/training.py); each page is a scan of the users, so pages are
# large (10,000 ids) and a prune's statements take them 1,000 users at a time.
PRUNE_USER_PAGE = read(
    "prune_user_page",
    """
    MATCH (u:User)
    WHERE toString(u.id) > $after
    RETURN u.id AS id
    ORDER BY id
    LIMIT $limit
    """,
    after="",
    limit=10000,
)

# Faded interest edges, and faded user–item edges that hold none of the behaviours kept
# as history (purchases and ratings: exclusion and training need them).
_NO_HISTORY = " AND ".join(f"coalesce(r.{b.counter}, 0) = 0" for b in BEHAVIOUR_TABLE if b.kept_when_faded)
_FADED = f"{decayed_weight('r.weight', 'r.weight_ts')} < $threshold AND {_NO_HISTORY}"
_DECAY = {"now": 1700000000000, "half_life_ms": 1209600000.0, "threshold": 0.01, "limit": 10000}

# Over every user: one pass when fewer than $limit have faded (a prune's usual case).
PRUNE_FADED_EDGES = write(
    "prune_faded_edges",
    f"""
    MATCH (:User)-[r:INTERACTED|INTERESTED_IN]->()
    WHERE {_FADED}
    WITH r LIMIT $limit
    DELETE r
    RETURN count(*) AS pruned
    """,
    **_DECAY,
)

# Over the users $ids only: when more have faded, each statement of the global one would walk
# again, from the first user, every edge it keeps; a batch reads just its users' edges.
PRUNE_FADED_EDGES_OF_USERS = write(
    "prune_faded_edges_of_users",
    f"""
    UNWIND $ids AS user_id
    MATCH (:User {{id: user_id}})-[r:INTERACTED|INTERESTED_IN]->()
    WHERE {_FADED}
    WITH r LIMIT $limit
    DELETE r
    RETURN count(*) AS pruned
    """,
    ids=["u"],
    **_DECAY,
)

# Idempotency keys older than the retention window.
PRUNE_OLD_EVENTS = write(
    "prune_old_events",
    """
    MATCH (e:Event)
    WHERE e.received_at < $before
    WITH e LIMIT $limit
    DELETE e
    RETURN count(*) AS pruned
    """,
    before=1700000000000,
    limit=10000,
)
