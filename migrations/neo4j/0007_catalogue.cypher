// The catalogue API and business rules: serving processes read the items changed after a revision (Item.revision),
// and the counter node that every catalogue write bumps is found by id.
CREATE INDEX item_revision IF NOT EXISTS FOR (n:Item) ON (n.revision);
CREATE CONSTRAINT revision_id IF NOT EXISTS FOR (n:Revision) REQUIRE n.id IS UNIQUE;
// Business rules are found by id.
CREATE CONSTRAINT rule_id IF NOT EXISTS FOR (n:Rule) REQUIRE n.id IS UNIQUE;
