-- The DSA schemas: datasets and their versioned rows (dsa_core), jobs (dsa_jobs),
-- and the search summary (dsa_search).
-- depends:


CREATE SCHEMA IF NOT EXISTS dsa_core;
CREATE SCHEMA IF NOT EXISTS dsa_jobs;
CREATE SCHEMA IF NOT EXISTS dsa_search;

CREATE TABLE dsa_core.datasets (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    owner       text        NOT NULL,
    name        text        NOT NULL,
    description text        NOT NULL DEFAULT '',
    -- every column name seen in any import, in first-seen order
    columns     jsonb       NOT NULL DEFAULT '[]'::jsonb,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT datasets_owner_name_key UNIQUE (owner, name),
    CONSTRAINT datasets_name_check CHECK (name ~ '^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$')
);

-- Content-addressed rows. row_hash is the sha256 of the row's canonical content: the
-- text[] literal of its column names in sorted order followed by the text[] literal of its
-- values in that order (see sluiceway.load). Not of its position, so the same row in any
-- later import (or any dataset) is stored once. Values are kept as text[] in that sorted
-- column order, the names once per distinct column set: a fraction of jsonb's size.
CREATE TABLE dsa_core.column_sets (
    column_set_id int GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    columns       text[] NOT NULL UNIQUE
);

CREATE TABLE dsa_core.row_store (
    row_hash      bytea  PRIMARY KEY CHECK (octet_length(row_hash) = 32),
    -- no foreign key: its per-row trigger doubled the load's insert time; column sets are
    -- created before any row uses them and are never deleted
    column_set_id int    NOT NULL,
    vals          text[] NOT NULL
);

-- The seeds' shape: rows (row_hash, data jsonb).
CREATE VIEW dsa_core.rows AS
SELECT s.row_hash, jsonb_object(c.columns, s.vals) AS data
FROM dsa_core.row_store s
JOIN dsa_core.column_sets c USING (column_set_id);

-- Compact internal commit keys. An import reserves its key when it is planned, so every
-- range can write its own commit_row_entries in parallel; the commit row itself (and with
-- it, visibility) comes only at the end.
CREATE SEQUENCE dsa_core.commit_key_seq AS bigint;

CREATE TABLE dsa_core.commits (
    -- compact internal key used by commit_row_entries; commit_id is what users see
    commit_key       bigint      NOT NULL UNIQUE DEFAULT nextval('dsa_core.commit_key_seq'),
    commit_id        text        PRIMARY KEY,
    dataset_id       bigint      NOT NULL REFERENCES dsa_core.datasets (id) ON DELETE CASCADE,
    parent_commit_id text        REFERENCES dsa_core.commits (commit_id),
    message          text        NOT NULL,
    author           text        NOT NULL,
    authored_at      timestamptz NOT NULL,
    committed_at     timestamptz NOT NULL DEFAULT now(),
    row_count        bigint      NOT NULL CHECK (row_count >= 0),
    columns          jsonb       NOT NULL DEFAULT '[]'::jsonb,
    job_id           uuid
);
CREATE INDEX commits_dataset_idx ON dsa_core.commits (dataset_id, committed_at DESC);

-- Physical mapping of a commit's rows, written by the import's ranges in parallel.
-- ord = range number << 32 | ordinal within the range: increasing in file order, so the
-- logical order is ORDER BY ord; the dense row number comes from commit_chunks.
-- logical_row_id is stored only where it is not that row number (a plain CSV stores none).
CREATE TABLE dsa_core.commit_row_entries (
    commit_key     bigint NOT NULL,
    ord            bigint NOT NULL,
    logical_row_id text COLLATE "C",
    row_hash       bytea  NOT NULL,
    PRIMARY KEY (commit_key, ord)
);

CREATE TABLE dsa_core.commit_chunks (
    commit_key bigint NOT NULL REFERENCES dsa_core.commits (commit_key) ON DELETE CASCADE,
    chunk_no   int    NOT NULL,
    row_offset bigint NOT NULL,  -- rows of the commit before this range
    row_count  bigint NOT NULL,
    PRIMARY KEY (commit_key, chunk_no)
);

-- The seeds' shape: commit_rows (commit_id, logical_row_id, row_hash), plus row_number.
CREATE VIEW dsa_core.commit_rows AS
SELECT c.commit_id,
       coalesce(e.logical_row_id, (k.row_offset + (e.ord & 4294967295))::text) AS logical_row_id,
       e.row_hash,
       k.row_offset + (e.ord & 4294967295) AS row_number,
       e.ord
FROM dsa_core.commit_row_entries e
JOIN dsa_core.commits c ON c.commit_key = e.commit_key
JOIN dsa_core.commit_chunks k ON k.commit_key = e.commit_key AND k.chunk_no = (e.ord >> 32)::int;

CREATE TABLE dsa_core.refs (
    dataset_id bigint      NOT NULL REFERENCES dsa_core.datasets (id) ON DELETE CASCADE,
    name       text        NOT NULL,
    commit_id  text        NOT NULL REFERENCES dsa_core.commits (commit_id),
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (dataset_id, name)
);

CREATE TYPE dsa_jobs.analysis_run_type AS ENUM ('import', 'export', 'maintenance');
CREATE TYPE dsa_jobs.analysis_run_status AS ENUM
    ('pending', 'running', 'completed', 'failed', 'cancelled');

CREATE TABLE dsa_jobs.analysis_runs (
    id             uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    run_type       dsa_jobs.analysis_run_type   NOT NULL,
    status         dsa_jobs.analysis_run_status NOT NULL DEFAULT 'pending',
    owner          text        NOT NULL,
    dataset_id     bigint      REFERENCES dsa_core.datasets (id) ON DELETE SET NULL,
    run_parameters jsonb       NOT NULL DEFAULT '{}'::jsonb,
    progress       jsonb       NOT NULL DEFAULT '{}'::jsonb,
    checkpoint     jsonb,
    output_summary jsonb,
    error_message  text,
    created_at     timestamptz NOT NULL DEFAULT now(),
    started_at     timestamptz,
    completed_at   timestamptz,
    updated_at     timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX analysis_runs_owner_idx ON dsa_jobs.analysis_runs (owner, created_at DESC);
CREATE INDEX analysis_runs_resumable_idx ON dsa_jobs.analysis_runs (id)
    WHERE checkpoint IS NOT NULL AND status IN ('pending', 'running');

-- An upload that will become an import: who asked, into which dataset, with which options.
CREATE TABLE dsa_jobs.uploads (
    upload_id    uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    owner        text        NOT NULL,
    bucket       text        NOT NULL,
    object_key   text        NOT NULL UNIQUE,
    s3_upload_id text,
    filename     text        NOT NULL,
    size_bytes   bigint      NOT NULL CHECK (size_bytes >= 0),
    part_bytes   bigint      NOT NULL,
    dataset_name text        NOT NULL,
    options      jsonb       NOT NULL DEFAULT '{}'::jsonb,
    job_id       uuid        NOT NULL REFERENCES dsa_jobs.analysis_runs (id) ON DELETE CASCADE,
    status       text        NOT NULL DEFAULT 'uploading'
                 CHECK (status IN ('uploading', 'completed', 'aborted')),
    created_at   timestamptz NOT NULL DEFAULT now(),
    completed_at timestamptz
);

-- One row per byte range of an import: what the scan found, where the record
-- boundaries really are, and what the load did. It is also the import's checkpoint.
CREATE TABLE dsa_jobs.import_chunks (
    job_id        uuid   NOT NULL REFERENCES dsa_jobs.analysis_runs (id) ON DELETE CASCADE,
    chunk_no      int    NOT NULL,
    raw_start     bigint NOT NULL,
    raw_end       bigint NOT NULL,
    quote_count   bigint,
    first_nl_even bigint,
    first_nl_odd  bigint,
    lines_to_even bigint,
    lines_to_odd  bigint,
    newline_count bigint,
    start_byte    bigint,
    first_line    bigint,
    end_byte      bigint,
    row_count     bigint,
    error         text,  -- what a failed scan or load said, in the user's terms
    status        text   NOT NULL DEFAULT 'planned'
                  CHECK (status IN ('planned', 'scanned', 'resolved', 'empty', 'loaded', 'failed')),
    updated_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (job_id, chunk_no)
);

CREATE MATERIALIZED VIEW dsa_search.datasets_summary AS
SELECT d.id AS dataset_id,
       d.owner,
       d.name,
       d.description,
       d.columns,
       r.commit_id AS head_commit_id,
       c.row_count,
       c.committed_at AS last_commit_at,
       (SELECT count(*) FROM dsa_core.commits x WHERE x.dataset_id = d.id) AS commit_count,
       to_tsvector('simple', d.name || ' ' || d.description || ' ' ||
                   coalesce((SELECT string_agg(value, ' ')
                             FROM jsonb_array_elements_text(d.columns)), '')) AS search_vector
FROM dsa_core.datasets d
LEFT JOIN dsa_core.refs r ON r.dataset_id = d.id AND r.name = 'main'
LEFT JOIN dsa_core.commits c ON c.commit_id = r.commit_id;

-- REFRESH ... CONCURRENTLY needs a unique index on the view.
CREATE UNIQUE INDEX datasets_summary_dataset_id_key ON dsa_search.datasets_summary (dataset_id);
CREATE INDEX datasets_summary_search_idx ON dsa_search.datasets_summary USING gin (search_vector);
