"""Reads of the exploration bandit (kgrec/exploration.py): its topic arms."""

from graph_schema.catalogue import read

# Every item's topic (the active version's ABOUT edges): the items of each topic arm.
ITEM_TOPICS = read(
    "item_topics",
    """
    MATCH (i:Item)-[:ABOUT]->(t:Topic)
    RETURN i.id AS item_id, t.id AS topic_id
    """,
)
