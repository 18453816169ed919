-- A failed job says what kind of failure it was, not only in words: error_code is the code
-- of sluiceway's error hierarchy (malformed_file, database_unavailable, ...; docs/api.md),
-- so a caller can tell a file to fix from a service to retry. A range and an export part keep
-- their own error's code, which their job's failure reports. NULL: not failed, or failed
-- before this migration.
-- depends: 0014_block_profiles

ALTER TABLE dsa_jobs.analysis_runs ADD COLUMN error_code text;
ALTER TABLE dsa_jobs.import_chunks ADD COLUMN error_code text;
ALTER TABLE dsa_jobs.export_parts ADD COLUMN error_code text;
