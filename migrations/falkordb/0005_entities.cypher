// Knowledge-graph entities that are not items (artists, genres, materials...) have unique ids.
CREATE INDEX FOR (n:Entity) ON (n.id);
GRAPH.CONSTRAINT CREATE UNIQUE NODE Entity PROPERTIES 1 id;
