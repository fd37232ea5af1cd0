"""Reads of the exploration bandit (kgrec/exploration.py): its topic arms."""

from graph_schema.catalogue import read

# The topics of $ids (a model's items its version's topic-items file does not hold: folded in after
# training), as the ABOUT edges of $version (the version whose topics they are) have them.
ITEM_TOPICS = read(
    "item_topics",
    """
    UNWIND $ids AS item_id
    MATCH (i:Item {id: item_id})-[a:ABOUT]->(t:Topic)
    WHERE a.version = $version
    RETURN i.id AS item_id, t.id AS topic_id
    """,
    ids=["i1"],
    version="v1700000000000",
)

# Every item's topics in a version (a version without a topic-items file: one read, not one per
# batch of its items).
VERSION_ITEM_TOPICS = read(
    "version_item_topics",
    """
    MATCH (i:Item)-[a:ABOUT]->(t:Topic)
    WHERE a.version = $version
    RETURN i.id AS item_id, t.id AS topic_id
    """,
    version="v1700000000000",
)
