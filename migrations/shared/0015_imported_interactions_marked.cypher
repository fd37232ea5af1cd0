// Before 2026-12-07 `kgrec import` set each user-item edge to the data set's values; it now adds
// them to what events added, once per pair, and marks the edge `imported_at` (README, "Importing
// again into a live graph"). In a graph that records an import, every interaction edge is marked
// with that import's start, so importing that file again adds nothing to the pairs it wrote (a
// pair only events had is marked too: a later file's rows for it are taken as imported). A graph
// with no import record is left as it is. Idempotent: marked edges no longer match.
MATCH (r:Revision {id: 'import'}) MATCH (:User)-[e:INTERACTED]->(:Item) WHERE e.imported_at IS NULL SET e.imported_at = r.started_at;
