// Knowledge-graph entities that are not items (artists, genres, materials...) have unique ids.
CREATE CONSTRAINT entity_id IF NOT EXISTS FOR (n:Entity) REQUIRE n.id IS UNIQUE;
