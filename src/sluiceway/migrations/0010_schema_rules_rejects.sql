-- Schemas, validation rules and rejected rows.
-- A commit records its columns' inferred types (commits.schema: [{name, type, nullable}]);
-- a dataset shows its main commit's. A dataset keeps the validation rules every import into
-- it is checked against (datasets.rules). Each loaded range keeps what it found out about
-- its values (import_chunks.profile: per column, nulls and which types every value fits)
-- and how many of its rows it rejected into its own report object (rejected_*).
-- depends: 0009_import_chunk_scan

ALTER TABLE dsa_core.commits ADD COLUMN schema jsonb;
ALTER TABLE dsa_core.datasets ADD COLUMN rules jsonb NOT NULL DEFAULT '{}'::jsonb;
ALTER TABLE dsa_jobs.import_chunks
    ADD COLUMN profile jsonb,
    ADD COLUMN rejected_count bigint NOT NULL DEFAULT 0,
    ADD COLUMN rejected_key text;
