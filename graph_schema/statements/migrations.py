"""Bookkeeping statements for ``kgrec migrate``."""

from graph_schema.allow_list import PROPERTY_KEYS
from graph_schema.catalogue import read, write

APPLIED_MIGRATIONS = read(
    "applied_migrations",
    """
    MATCH (m:Migration)
    RETURN m.id AS id, m.version AS version, m.name AS name, m.scope AS scope,
           m.checksum AS checksum, m.applied_at AS applied_at
    ORDER BY m.version, m.scope
    """,
)

RECORD_MIGRATION = write(
    "record_migration",
    """
    MERGE (m:Migration {id: $id})
    ON CREATE SET m.version = $version, m.name = $name, m.scope = $scope,
                  m.checksum = $checksum, m.applied_at = $applied_at
    RETURN m.checksum AS checksum
    """,
    id="0001/neo4j",
    version="0001",
    name="constraints",
    scope="neo4j",
    checksum="sha256:0",
    applied_at=1700000000000,
)

# FalkorDB adds a key that a CREATE or MERGE map is the first to name to its key table while it
# plans the statement, and takes it back out when that run fails; the cached plan keeps the id,
# so the next new key gets it and every later run of that plan stores its value under the other
# key (e.g. a USED_TAG's item_id read back as write_lock). With every allow-listed key set once on
# a scratch node, which is deleted in the same statement (the key table keeps the names), no
# statement of kgrec ever names a new key.
REGISTER_PROPERTY_KEYS = write(
    "register_property_keys",
    "CREATE (k:Migration) SET "
    + ", ".join(f"k.{key} = true" for key in PROPERTY_KEYS)
    + " DELETE k RETURN count(*) AS registered",
)
