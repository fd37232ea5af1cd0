// Erased users' tombstones are found by id (the SHA-1 of the user id) by every event batch.
CREATE CONSTRAINT erasure_id IF NOT EXISTS FOR (n:Erasure) REQUIRE n.id IS UNIQUE;
