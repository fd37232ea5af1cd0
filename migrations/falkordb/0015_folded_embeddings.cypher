// Serving reads a version's folded-in items by EMBEDDING.folded_version (the version's id, set by
// every fold-in since 2026-12-07) through this index, not by walking all of the version's
// embeddings. Edges folded in before carry only folded_at: they get the id (once; idempotent).
CREATE INDEX FOR ()-[e:EMBEDDING]-() ON (e.folded_version);
MATCH (m:ModelVersion)-[e:EMBEDDING]->(:Item) WHERE e.folded_at IS NOT NULL AND e.folded_version IS NULL SET e.folded_version = m.id;
