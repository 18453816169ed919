-- A failed job says what kind of failure it was, not only in words: error_code is the code
-- of sluiceway's error hierarchy (malformed_file, database_unavailable, ...; docs/api.md),
-- so a caller can tell a file to fix from a service to retry. A range and an export part keep
-- their own error's code, which their job's failure reports. NULL: not failed, or failed
-- before this migration.
-- depends: 0014_block_profiles

ALTER TABLE dsa_jobs.analysis_runs ADD COLUMN error_code text;
ALTER TABLE dsa_jobs.import_chunks ADD COLUMN error_code text;
ALTER TABLE dsa_jobs.export_parts ADD COLUMN error_code text;

-- An upload's state says it too (migration 0006's view, with error_code at its end).
CREATE OR REPLACE VIEW dsa_jobs.upload_states AS
SELECT u.*,
       CASE
           WHEN u.status = 'aborted' THEN 'aborted'
           WHEN r.status = 'completed' THEN 'fresh'
           WHEN r.status IN ('failed', 'cancelled') THEN 'failed'
           WHEN r.status = 'running' AND coalesce(r.progress->>'stage', 'planning')
                IN ('planning', 'scanning') THEN 'validating'
           WHEN r.status = 'running' THEN 'processing'
           WHEN u.status = 'uploading' THEN 'uploading'
           ELSE 'uploaded'
       END AS state,
       r.status::text AS job_status,
       r.progress->>'stage' AS stage,
       r.progress,
       r.error_message,
       r.output_summary,
       r.updated_at AS job_updated_at,
       r.error_code
FROM dsa_jobs.uploads u
JOIN dsa_jobs.analysis_runs r ON r.id = u.job_id;
