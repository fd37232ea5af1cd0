// One id, one node (README, "One id, one node"): a graph written before 2026-12-05 may hold an
// Entity and an Item with one id. Before this file's statement, kgrec.migrations.merge_twin_entities
// moves each such Entity's edges onto its Item (one rendered statement per edge type, read from the
// graph, so they cannot be written here) and deletes the Entity. Idempotent: merged Entities are gone.
MERGE (s:SchemaInfo {id: 'kgrec'}) SET s.schema_version = 4;
