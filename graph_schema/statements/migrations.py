"""Bookkeeping statements for ``kgrec migrate``."""

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
