// Scheduled retraining: the one (:Schedule {id: 'retrain'}) node is found by id, and MERGE never makes two.
CREATE CONSTRAINT schedule_id IF NOT EXISTS FOR (n:Schedule) REQUIRE n.id IS UNIQUE;
