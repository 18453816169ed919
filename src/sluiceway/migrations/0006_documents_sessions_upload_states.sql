-- Documents (opaque files, stored and downloaded, never imported), chunked record sessions,
-- and the upload lifecycle derived from the import's job at read time.
-- depends: 0005_structural_sharing

CREATE TABLE dsa_core.documents (
    id           uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    owner        text        NOT NULL,
    name         text        NOT NULL,  -- the client's file name, for display only, never a path
    category     text        NOT NULL DEFAULT '',
    description  text        NOT NULL DEFAULT '',
    bucket       text        NOT NULL,
    object_key   text        NOT NULL UNIQUE,
    s3_upload_id text,
    size_bytes   bigint      NOT NULL CHECK (size_bytes >= 0),
    part_bytes   bigint      NOT NULL,
    content_type text        NOT NULL DEFAULT 'application/octet-stream',
    etag         text,  -- S3's, once stored
    sha256       text,  -- S3's checksum, when the upload sent one
    status       text        NOT NULL DEFAULT 'uploading'
                 CHECK (status IN ('uploading', 'stored', 'aborted')),
    created_at   timestamptz NOT NULL DEFAULT now(),
    completed_at timestamptz
);
CREATE INDEX documents_owner_idx ON dsa_core.documents (owner, created_at DESC);

-- A retried import runs again on the same object with a new job; the upload points at it.
ALTER TABLE dsa_jobs.uploads ADD COLUMN attempts int NOT NULL DEFAULT 1;
CREATE INDEX uploads_owner_idx ON dsa_jobs.uploads (owner, created_at DESC);
CREATE INDEX uploads_open_idx ON dsa_jobs.uploads (created_at) WHERE status = 'uploading';

-- The lifecycle users see, derived from the upload and its job (never written by the stages):
-- uploading -> uploaded -> validating -> processing -> fresh | failed (or aborted).
CREATE VIEW dsa_jobs.upload_states AS
SELECT u.*,
       -- a job that started proves the object arrived, even when no complete call said so
       -- (a presigned POST of a small file has none)
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
       r.updated_at AS job_updated_at
FROM dsa_jobs.uploads u
JOIN dsa_jobs.analysis_runs r ON r.id = u.job_id;

-- Chunked record sessions (seed 002): batches of records arrive in numbered chunks, are kept
-- in object storage as CSV bodies, and the commit assembles them into one uploaded file.
CREATE TABLE dsa_jobs.record_sessions (
    session_id   uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    owner        text        NOT NULL,
    dataset_name text        NOT NULL,
    options      jsonb       NOT NULL DEFAULT '{}'::jsonb,
    total_chunks int CHECK (total_chunks >= 1),
    columns      text[],  -- set by the first chunk; every later chunk must match
    status       text        NOT NULL DEFAULT 'open'
                 CHECK (status IN ('open', 'committing', 'committed', 'aborted')),
    upload_id    uuid REFERENCES dsa_jobs.uploads (upload_id) ON DELETE SET NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    committed_at timestamptz
);
CREATE INDEX record_sessions_owner_idx ON dsa_jobs.record_sessions (owner, created_at DESC);

CREATE TABLE dsa_jobs.record_session_chunks (
    session_id   uuid   NOT NULL REFERENCES dsa_jobs.record_sessions (session_id)
                        ON DELETE CASCADE,
    chunk_number int    NOT NULL CHECK (chunk_number >= 1),
    object_key   text   NOT NULL,
    record_count int    NOT NULL,
    size_bytes   bigint NOT NULL,
    sha256       text   NOT NULL,
    received_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (session_id, chunk_number)
);
