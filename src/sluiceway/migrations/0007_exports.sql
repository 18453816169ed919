-- Exports as a state machine (issue 5): one row per part of an export job, the per-dataset
-- setting that exports every new commit, and export schedules.
-- depends: 0006_documents_sessions_upload_states

-- One row per part: which rows of the commit it holds, the S3 multipart upload it writes
-- (so a failure can abort it), and what it wrote (for the manifest). It is also the
-- export's checkpoint: the manifest step reads every part's state from here, because a
-- Distributed Map does not always fail when one of its iterations does.
CREATE TABLE dsa_jobs.export_parts (
    job_id       uuid   NOT NULL REFERENCES dsa_jobs.analysis_runs (id) ON DELETE CASCADE,
    part_no      int    NOT NULL,
    from_row     bigint NOT NULL,  -- first row number of the commit in this part
    to_row       bigint NOT NULL,  -- one past the last
    object_key   text   NOT NULL,
    s3_upload_id text,             -- the open multipart upload, while the part is written
    status       text   NOT NULL DEFAULT 'planned'
                 CHECK (status IN ('planned', 'writing', 'written', 'failed', 'aborted')),
    rows_done    bigint NOT NULL DEFAULT 0,  -- rows of the range read so far (progress)
    row_count    bigint,           -- rows written (after the filter)
    bytes        bigint,
    sha256       text,
    etag         text,
    error        text,
    updated_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (job_id, part_no),
    CHECK (from_row >= 1 AND to_row >= from_row)
);

-- Export every new commit of the dataset (formats, compression, the prefix under the
-- owner's exports); NULL: do not.
ALTER TABLE dsa_core.datasets ADD COLUMN commit_exports jsonb;

-- Scheduled exports: EventBridge Scheduler on AWS, the local stack's scheduler thread locally.
CREATE TABLE dsa_core.export_schedules (
    schedule_id  uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    owner        text        NOT NULL,
    dataset_id   bigint      NOT NULL REFERENCES dsa_core.datasets (id) ON DELETE CASCADE,
    name         text        NOT NULL,
    expression   text        NOT NULL,  -- cron(...) or rate(...), as EventBridge Scheduler takes it
    request      jsonb       NOT NULL,  -- the export request each firing makes
    enabled      boolean     NOT NULL DEFAULT true,
    next_fire_at timestamptz,           -- the local scheduler's; on AWS, Scheduler's own
    last_fired_at timestamptz,
    last_job_id  uuid,
    created_at   timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT export_schedules_name_key UNIQUE (dataset_id, name)
);
CREATE INDEX export_schedules_due_idx ON dsa_core.export_schedules (next_fire_at) WHERE enabled;

-- A filter's numeric comparison of stored text: the number, or NULL where the text is not one
-- (so a range on a column of mixed values never fails the export).
CREATE FUNCTION dsa_core.try_numeric(value text) RETURNS numeric
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT CASE WHEN value ~ '^\s*[-+]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][-+]?[0-9]+)?\s*$'
                THEN value::numeric END
$$;
