// Model versions are found by id and by the active flag.
CREATE INDEX FOR (n:ModelVersion) ON (n.id);
CREATE INDEX FOR (n:ModelVersion) ON (n.active);
GRAPH.CONSTRAINT CREATE UNIQUE NODE ModelVersion PROPERTIES 1 id;
