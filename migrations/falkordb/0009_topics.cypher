// Topics mined from item text and user-given tags are found by id (events MERGE them).
CREATE INDEX FOR (n:Topic) ON (n.id);
GRAPH.CONSTRAINT CREATE UNIQUE NODE Topic PROPERTIES 1 id;
CREATE INDEX FOR (n:Tag) ON (n.id);
GRAPH.CONSTRAINT CREATE UNIQUE NODE Tag PROPERTIES 1 id;
