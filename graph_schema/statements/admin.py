"""Statements for health checks, status and counts."""

from graph_schema.allow_list import Label
from graph_schema.catalogue import read, write

PING = read("ping", "RETURN 1 AS ok")

NODE_COUNTS = read(
    "node_counts",
    """
    MATCH (n)
    UNWIND labels(n) AS label
    RETURN label, count(*) AS count
    ORDER BY label
    """,
)

# Nodes per allow-listed label, each a label count (no scan of the whole graph): cheap enough
# for the periodic snapshot guard (kgrec.embedded.unloadable_labels).
LABEL_COUNTS = read(
    "label_counts",
    "\nUNION ALL\n".join(
        f"MATCH (n:{label}) RETURN '{label}' AS label, count(n) AS count" for label in Label
    ),
)

RELATIONSHIP_COUNTS = read(
    "relationship_counts",
    """
    MATCH ()-[r]->()
    RETURN type(r) AS type, count(*) AS count
    ORDER BY type
    """,
)

ITEM_COUNT = read(
    "item_count",
    """
    MATCH (i:Item)
    RETURN count(i) AS count
    """,
)

# Empties the graph in bounded batches (tests, scratch graphs); repeat until it deletes nothing.
DELETE_NODES_BATCH = write(
    "delete_nodes_batch",
    """
    MATCH (n)
    WITH n LIMIT $limit
    DETACH DELETE n
    """,
    limit=10000,
)
