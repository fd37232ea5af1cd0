// Records the graph-model version (see README, "Graph model") in the graph itself.
MERGE (s:SchemaInfo {id: 'kgrec'}) SET s.schema_version = 1;
