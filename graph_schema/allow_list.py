"""The kgrec graph model: the fixed allow-list of labels, relationship types and properties.

Every label and relationship type that any statement uses comes from here; the
lint test declares exactly these to Neo4j's front-end, so a typo is an error.
The README's "Graph model" section documents the same model for Neo4j Browser users.
"""

from __future__ import annotations

from enum import StrEnum

from graph_schema.behaviours import BEHAVIOURS, COUNTER_PROPERTIES
from graph_schema.relation_names import OWNED_TYPES, RESERVED_TYPES

__all__ = ["ATTRIBUTE_RELATIONS", "BEHAVIOURS", "KNOWLEDGE_RELATIONS", "PROPERTY_KEYS", "Label", "Rel"]


class Label(StrEnum):
    """Node labels."""

    USER = "User"
    ITEM = "Item"
    BRAND = "Brand"
    CATEGORY = "Category"
    ENTITY = "Entity"  # a knowledge-graph node that is not an item: {id, kind, name}
    EVENT = "Event"
    MODEL_VERSION = "ModelVersion"
    MIGRATION = "Migration"
    SCHEMA_INFO = "SchemaInfo"
    # {id: 'catalogue'} and {id: 'rules'}: counters bumped by every catalogue or rule write,
    # polled by serving processes; {id: 'import'}: the last bulk import's data set, start and end
    REVISION = "Revision"
    # a business rule (block, pin, boost, bury) applied by every serving process
    RULE = "Rule"
    TOPIC = "Topic"  # {id, name, keywords}: a topic mined from item text (stable id across versions)
    TAG = "Tag"  # {id}: a user-given tag, normalised (kgrec.events.ingest.normalised_tag)
    # {id: 'retrain'}: when beat last asked for a scheduled retraining, and the job it queued
    SCHEDULE = "Schedule"
    # {id, erased_at, cleanup_owed}: an erased user's tombstone; id is the SHA-1 of the user id
    ERASURE = "Erasure"


class Rel(StrEnum):
    """Relationship types kgrec itself reads and writes.

    Knowledge edges from the data (``kg_triples.csv``, event attributes) get one
    type per relation, rendered by :func:`graph_schema.relation_names.relationship_type`
    and carrying ``relation: <exact name>``; only the three built-in co-purchase
    types below are listed here, because kgrec reads them by name.
    """

    INTERACTED = "INTERACTED"  # (:User)-[:INTERACTED]->(:Item)
    INTERESTED_IN = "INTERESTED_IN"  # (:User)-[:INTERESTED_IN]->(:Brand|:Category)
    MADE_BY = "MADE_BY"  # (:Item)-[:MADE_BY]->(:Brand)
    IN_CATEGORY = "IN_CATEGORY"  # (:Item)-[:IN_CATEGORY]->(:Category)
    SUBCATEGORY_OF = "SUBCATEGORY_OF"  # (:Category)-[:SUBCATEGORY_OF]->(:Category)
    ALSO_BOUGHT = "ALSO_BOUGHT"  # (:Item)-[:ALSO_BOUGHT]->(:Item)
    ALSO_VIEWED = "ALSO_VIEWED"  # (:Item)-[:ALSO_VIEWED]->(:Item)
    BOUGHT_TOGETHER = "BOUGHT_TOGETHER"  # (:Item)-[:BOUGHT_TOGETHER]->(:Item)
    EMBEDDING = "EMBEDDING"  # (:ModelVersion)-[:EMBEDDING {vector}]->(:User|:Item|:Brand|:Category)
    # (:ModelVersion)-[:POPULARITY_ADJUSTMENT {delta}]->(:Item): erased users' share of the version's counts
    POPULARITY_ADJUSTMENT = "POPULARITY_ADJUSTMENT"
    ABOUT = "ABOUT"  # (:Item)-[:ABOUT {score, version}]->(:Topic)
    TAGGED = "TAGGED"  # (:Item)-[:TAGGED {count}]->(:Tag)
    # (:User)-[:USED_TAG {item_id, count}]->(:Tag): the user's share of that item's TAGGED count
    USED_TAG = "USED_TAG"
    # (:ModelVersion)-[:HAS_TOPIC {centroid, size, name, keywords, absorbs}]->(:Topic)
    HAS_TOPIC = "HAS_TOPIC"


# Item–item knowledge relations, keyed by the relation name used in kg_triples.csv.
KNOWLEDGE_RELATIONS: dict[str, Rel] = {
    "also_bought": Rel.ALSO_BOUGHT,
    "also_viewed": Rel.ALSO_VIEWED,
    "bought_together": Rel.BOUGHT_TOGETHER,
}

# kg_triples.csv relations that describe item attributes rather than item–item links.
ATTRIBUTE_RELATIONS: dict[str, Rel] = {
    "produced_by": Rel.MADE_BY,
    "belongs_to": Rel.IN_CATEGORY,
}

# Data can never write one of kgrec's own types through a relation name: relationship_type()
# prefixes KG_ to the reserved ones, which must therefore cover every type kgrec uses itself.
_UNRESERVED = (
    {rel.value for rel in Rel} - set(RESERVED_TYPES) - {rel.value for rel in KNOWLEDGE_RELATIONS.values()}
)
if _UNRESERVED:
    raise RuntimeError(f"graph_schema.relation_names.RESERVED_TYPES misses {sorted(_UNRESERVED)}")
if {rel.value: name for name, rel in KNOWLEDGE_RELATIONS.items()} != OWNED_TYPES:
    raise RuntimeError("graph_schema.relation_names.OWNED_TYPES must be the co-purchase relations' types")

# Every property key any statement reads or writes.
PROPERTY_KEYS: tuple[str, ...] = (
    # all nodes
    "id",
    # set and cleared within one statement, before it reads what a concurrent statement may
    # change: Neo4j reads committed data without a lock, and this write takes the node's lock first
    "write_lock",
    "name",
    "created_at",
    "updated_at",
    # Entity
    "kind",
    # every knowledge edge: the exact relation name (kg_triples.csv, event attributes)
    "relation",
    # Item
    "title",
    "price",
    "listed",
    "description",  # plain text (catalogue API, items.csv), read for topics only
    # Item, from the catalogue API (revision: the catalogue revision that last changed it)
    "currency",
    "available",
    "stock",
    "listed_at",
    "delisted_at",
    "revision",
    # Rule
    "action",
    "target_kind",
    "target",
    "position",
    "factor",
    "condition_kind",
    "condition",
    "starts_at",
    "ends_at",
    "surface",
    # User
    "flagged_bot",
    "flagged_at",
    "rate_minute",
    "rate_count",
    # Event (idempotency keys)
    "received_at",
    "content_hash",
    # Erasure (an erased user's tombstone)
    "erased_at",
    "cleanup_owed",
    # interaction and interest edges
    "weight",
    "weight_ts",
    "first_ts",
    "last_ts",
    "last_seq",
    "count",
    "rating",
    "rating_ts",
    *COUNTER_PROPERTIES,  # one per behaviour, see graph_schema.behaviours
    # Migration / SchemaInfo
    "version",
    "scope",
    "checksum",
    "applied_at",
    "schema_version",
    # ModelVersion and its EMBEDDING relationships
    "status",
    "active",
    "activated_at",
    "parameters",
    "counts",
    "metrics",
    "artifact",
    "vector",
    "folded_at",
    "folded_version",  # EMBEDDING of an item folded in: its version's id (indexed, FOLDED_ITEMS)
    "delta",
    "adjusted_at",
    # ModelVersion: the promotion gate's decision ('promoted' / 'kept'), why, its scores (JSON), when,
    # and whether a hook took the promoted candidate instead (an experiment variant: not activated)
    "gate_decision",
    "gate_reason",
    "gate_metrics",
    "gate_at",
    "gate_taken",
    # ModelVersion: the experiment the gate's hook took the candidate for ('' for none; absent on
    # decisions recorded before it), read back by the job's redelivery (kgrec.gate_experiments)
    "gate_experiment",
    # ModelVersion: the token of the write-back that claimed it last (a redelivered job's newest
    # delivery); the write-back's later writes act only while it matches
    "owner",
    # ModelVersion of an incremental update: its parent version, the newest interaction time it saw
    "parent",
    "data_until",
    # ModelVersion: the version whose topic-items file the graph's ABOUT edges were all written from
    # when this one was activated (kgrec.topic_items.link_topic_items)
    "about_from",
    # Revision {id: 'about'}: writers of ABOUT edges in flight, and until when they count as alive
    "running",
    "busy_until",
    # Schedule
    "requested_at",
    # Revision {id: 'import'}: the data set of the last bulk import, when it started and finished,
    # and when the first import of each data set started (its interactions without a time are
    # stamped then, so that an import run again changes nothing)
    "dataset",
    "started_at",
    "finished_at",
    "first_started_at",  # written until 2026-12-07; still read on a record kept before first_starts
    "first_starts",  # JSON text: {data set: first start} of every data set imported
    "job_id",
    # Topic, ABOUT, HAS_TOPIC (topics mined from item text) and review text on INTERACTED
    "keywords",
    "score",
    "centroid",
    "size",
    "absorbs",  # HAS_TOPIC: the retired topics this version's topic absorbed (workers.training.topics)
    "review_text",
    "item_id",  # USED_TAG: the item the user tagged (the tag is the edge's end)
    "review_ts",  # INTERACTED: when the kept review was written (absent on edges from before 2026-12-07)
    # User: the decayed sum of the user's text embeddings (searches, reviews, tags) and its stamp
    "text_vector",
    "text_vector_ts",
    # Item folded in after training: its topic-text embedding (to link it to a version activated later)
    "topic_vector",
)
