// Event ids are idempotency keys: a second write of the same id violates the
// constraint, which rolls the whole ingestion statement back.
CREATE INDEX FOR (n:Event) ON (n.id);
CREATE INDEX FOR (n:Event) ON (n.received_at);
GRAPH.CONSTRAINT CREATE UNIQUE NODE Event PROPERTIES 1 id;
