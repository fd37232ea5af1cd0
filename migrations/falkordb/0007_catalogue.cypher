// The catalogue API and business rules: serving processes read the items changed after a revision (Item.revision),
// and the counter node that every catalogue write bumps is found by id.
CREATE INDEX FOR (n:Item) ON (n.revision);
CREATE INDEX FOR (n:Revision) ON (n.id);
GRAPH.CONSTRAINT CREATE UNIQUE NODE Revision PROPERTIES 1 id;
// Business rules are found by id.
CREATE INDEX FOR (n:Rule) ON (n.id);
GRAPH.CONSTRAINT CREATE UNIQUE NODE Rule PROPERTIES 1 id;
