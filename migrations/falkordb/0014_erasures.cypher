// Erased users' tombstones are found by id (the SHA-1 of the user id) by every event batch.
CREATE INDEX FOR (n:Erasure) ON (n.id);
GRAPH.CONSTRAINT CREATE UNIQUE NODE Erasure PROPERTIES 1 id;
