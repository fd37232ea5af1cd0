// Scheduled retraining: the one (:Schedule {id: 'retrain'}) node is found by id, and MERGE never makes two.
CREATE INDEX FOR (n:Schedule) ON (n.id);
GRAPH.CONSTRAINT CREATE UNIQUE NODE Schedule PROPERTIES 1 id;
