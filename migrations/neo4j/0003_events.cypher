// Event ids are idempotency keys: a second write of the same id violates the
// constraint, which rolls the whole ingestion transaction back.
CREATE CONSTRAINT event_id IF NOT EXISTS FOR (n:Event) REQUIRE n.id IS UNIQUE;
CREATE INDEX event_received_at IF NOT EXISTS FOR (n:Event) ON (n.received_at);
