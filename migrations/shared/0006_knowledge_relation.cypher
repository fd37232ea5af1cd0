// Every knowledge edge carries its exact relation name (README, "Graph model"); co-purchase
// edges written before the open knowledge graph get theirs here. Idempotent: only edges
// without one are touched.
MATCH (:Item)-[k:ALSO_BOUGHT]->(:Item) WHERE k.relation IS NULL SET k.relation = 'also_bought';
MATCH (:Item)-[k:ALSO_VIEWED]->(:Item) WHERE k.relation IS NULL SET k.relation = 'also_viewed';
MATCH (:Item)-[k:BOUGHT_TOGETHER]->(:Item) WHERE k.relation IS NULL SET k.relation = 'bought_together';
MERGE (s:SchemaInfo {id: 'kgrec'}) SET s.schema_version = 2;
