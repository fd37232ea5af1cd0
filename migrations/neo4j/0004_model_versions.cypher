// Model versions are found by id and by the active flag.
CREATE CONSTRAINT model_version_id IF NOT EXISTS FOR (n:ModelVersion) REQUIRE n.id IS UNIQUE;
CREATE INDEX model_version_active IF NOT EXISTS FOR (n:ModelVersion) ON (n.active);
