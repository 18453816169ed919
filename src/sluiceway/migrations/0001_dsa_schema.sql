-- The DSA schemas: datasets and their versioned rows (dsa_core), jobs (dsa_jobs),
-- the search summary (dsa_search), and per-chunk staging tables (dsa_stage).
-- depends:


CREATE SCHEMA IF NOT EXISTS dsa_core;
CREATE SCHEMA IF NOT EXISTS dsa_jobs;
CREATE SCHEMA IF NOT EXISTS dsa_search;
CREATE SCHEMA IF NOT EXISTS dsa_stage;

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

-- Content-addressed rows: row_hash = sha256 of the row's canonical JSON (jsonb's
-- normalised text: keys sorted, one spelling per value). Not of its position, so the
-- same row in any later import, or any other dataset, is stored once.
CREATE TABLE dsa_core.rows (
    row_hash bytea PRIMARY KEY CHECK (octet_length(row_hash) = 32),
    data     jsonb NOT NULL
);

CREATE TABLE dsa_core.commits (
    -- compact internal key used by commit_row_entries; commit_id is what users see
    commit_key       bigint GENERATED ALWAYS AS IDENTITY UNIQUE,
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

-- Physical mapping of a commit's rows. logical_row_id is stored only where it is not
-- the ordinal itself (a plain CSV stores none); dsa_core.commit_rows shows it always.
CREATE TABLE dsa_core.commit_row_entries (
    commit_key     bigint NOT NULL,
    ord            bigint NOT NULL,
    logical_row_id text COLLATE "C",
    row_hash       bytea  NOT NULL,
    PRIMARY KEY (commit_key, ord)
);

CREATE VIEW dsa_core.commit_rows AS
SELECT c.commit_id,
       coalesce(e.logical_row_id, e.ord::text) AS logical_row_id,
       e.row_hash,
       e.ord
FROM dsa_core.commit_row_entries e
JOIN dsa_core.commits c ON c.commit_key = e.commit_key;

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
    status        text   NOT NULL DEFAULT 'planned'
                  CHECK (status IN ('planned', 'scanned', 'resolved', 'empty', 'loaded')),
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
