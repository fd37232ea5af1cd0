// Only also_bought, also_viewed and bought_together may have the co-purchase types, which
// explanations read by type (README, "Relation → relationship type"). Under the earlier rule other
// names reached them too (`also-bought`, `Also_Bought`); such edges move to the type the rule now
// gives them (KG_ALSO_BOUGHT, ...), keeping their properties. Idempotent: moved edges no longer match.
MATCH (a)-[k:ALSO_BOUGHT]->(b) WHERE k.relation <> 'also_bought' MERGE (a)-[n:KG_ALSO_BOUGHT {relation: k.relation}]->(b) SET n += properties(k) DELETE k;
MATCH (a)-[k:ALSO_VIEWED]->(b) WHERE k.relation <> 'also_viewed' MERGE (a)-[n:KG_ALSO_VIEWED {relation: k.relation}]->(b) SET n += properties(k) DELETE k;
MATCH (a)-[k:BOUGHT_TOGETHER]->(b) WHERE k.relation <> 'bought_together' MERGE (a)-[n:KG_BOUGHT_TOGETHER {relation: k.relation}]->(b) SET n += properties(k) DELETE k;
MERGE (s:SchemaInfo {id: 'kgrec'}) SET s.schema_version = 3;
