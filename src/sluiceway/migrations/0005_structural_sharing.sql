-- Structural sharing between commits (issue 6). A commit's rows are no longer one
-- commit_row_entries row per row per commit (every commit paid 100% again), but a tree of
-- content-addressed pieces that commits share:
--
--   commits -> commit_chunks (one per import range) -> leaf_lists -> row_leaves -> row_store
--
-- * row_leaves: a run of consecutive rows, cut where a row's hash ends in 3 zero bits or
--   after 16 rows without such a cut (content-defined: 7 rows on average; see tree.py). Editing one row changes one leaf;
--   inserting a row changes one leaf, not every leaf after it. Stored once per content.
-- * leaf_lists: the leaves of one range in order, with cumulative row counts. Stored once per
--   content, so an unchanged range of a re-import, or all of an append's parent, costs nothing.
-- * commit_chunks now just points a commit's ranges at their lists.
-- Keyed commits (upsert/delete imports) keep each row's key in the leaf: logical_ids.
-- depends: 0004_commit_row_range

CREATE TABLE dsa_core.row_leaves (
    leaf_hash   bytea PRIMARY KEY CHECK (octet_length(leaf_hash) = 32),
    row_count   int   NOT NULL CHECK (row_count > 0),
    row_hashes  bytea NOT NULL CHECK (octet_length(row_hashes) = 32 * row_count),
    logical_ids text[] COLLATE "C" CHECK (logical_ids IS NULL OR cardinality(logical_ids) = row_count)
);
-- sha256 values do not compress: do not let TOAST try.
ALTER TABLE dsa_core.row_leaves ALTER COLUMN row_hashes SET STORAGE EXTERNAL;

CREATE TABLE dsa_core.leaf_lists (
    list_hash   bytea  PRIMARY KEY CHECK (octet_length(list_hash) = 32),
    leaf_count  int    NOT NULL CHECK (leaf_count >= 0),
    row_count   bigint NOT NULL CHECK (row_count >= 0),
    leaf_hashes bytea  NOT NULL CHECK (octet_length(leaf_hashes) = 32 * leaf_count),
    -- leaf_ends[i]: rows in leaves 1..i (so leaf i holds rows leaf_ends[i-1]+1 .. leaf_ends[i])
    leaf_ends   int4[] NOT NULL CHECK (cardinality(leaf_ends) = leaf_count)
);
ALTER TABLE dsa_core.leaf_lists ALTER COLUMN leaf_hashes SET STORAGE EXTERNAL;

ALTER TABLE dsa_core.commit_chunks ADD COLUMN list_hash bytea REFERENCES dsa_core.leaf_lists;
ALTER TABLE dsa_jobs.import_chunks ADD COLUMN list_hash bytea;

-- How a commit came to be, and what it changed against its parent (filled when it is made).
ALTER TABLE dsa_core.commits
    ADD COLUMN merge_parent_id text REFERENCES dsa_core.commits (commit_id),
    ADD COLUMN kind text NOT NULL DEFAULT 'replace'
        CHECK (kind IN ('replace', 'append', 'upsert', 'delete', 'revert', 'merge')),
    ADD COLUMN key_columns text[],
    ADD COLUMN stats jsonb;

-- Every move of every ref: what `as of <time>` reads, and how reset commits stay findable.
CREATE TABLE dsa_core.ref_log (
    id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    dataset_id bigint      NOT NULL REFERENCES dsa_core.datasets (id) ON DELETE CASCADE,
    name       text        NOT NULL,
    old_commit text,
    new_commit text,
    reason     text        NOT NULL,
    moved_at   timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE INDEX ref_log_lookup_idx ON dsa_core.ref_log (dataset_id, name, moved_at);
INSERT INTO dsa_core.ref_log (dataset_id, name, old_commit, new_commit, reason, moved_at)
SELECT r.dataset_id, r.name, NULL, r.commit_id, 'existing', c.committed_at
FROM dsa_core.refs r JOIN dsa_core.commits c USING (commit_id);

-- Convert what earlier versions stored: each range's entries become leaves and a list.
CREATE TEMP TABLE sluiceway_conv AS
SELECT commit_key, chunk_no, ordinal, row_hash, logical_row_id,
       sum(brk) OVER w - brk AS leaf_no
FROM (SELECT e.commit_key, (e.ord >> 32)::int AS chunk_no, e.ord & 4294967295 AS ordinal,
             e.row_hash, e.logical_row_id,
             ((get_byte(e.row_hash, 31) & 7) = 0)::int AS brk
      FROM dsa_core.commit_row_entries e) s
WINDOW w AS (PARTITION BY commit_key, chunk_no ORDER BY ordinal);

CREATE TEMP TABLE sluiceway_conv_leaves AS
SELECT commit_key, chunk_no, leaf_no, count(*)::int AS n,
       string_agg(row_hash, ''::bytea ORDER BY ordinal) AS hs
FROM sluiceway_conv GROUP BY commit_key, chunk_no, leaf_no;

INSERT INTO dsa_core.row_leaves (leaf_hash, row_count, row_hashes)
SELECT DISTINCT ON (sha256(hs)) sha256(hs), n, hs FROM sluiceway_conv_leaves
ON CONFLICT DO NOTHING;

CREATE TEMP TABLE sluiceway_conv_lists AS
SELECT commit_key, chunk_no, count(*)::int AS leaf_count, sum(n)::bigint AS row_count,
       string_agg(sha256(hs), ''::bytea ORDER BY leaf_no) AS leaf_hashes,
       array_agg(ends::int ORDER BY leaf_no) AS leaf_ends
FROM (SELECT *, sum(n) OVER (PARTITION BY commit_key, chunk_no ORDER BY leaf_no) AS ends
      FROM sluiceway_conv_leaves) l
GROUP BY commit_key, chunk_no;

INSERT INTO dsa_core.leaf_lists (list_hash, leaf_count, row_count, leaf_hashes, leaf_ends)
SELECT DISTINCT ON (sha256(leaf_hashes)) sha256(leaf_hashes), leaf_count, row_count,
       leaf_hashes, leaf_ends
FROM sluiceway_conv_lists
ON CONFLICT DO NOTHING;

INSERT INTO dsa_core.leaf_lists (list_hash, leaf_count, row_count, leaf_hashes, leaf_ends)
VALUES (sha256(''::bytea), 0, 0, ''::bytea, '{}') ON CONFLICT DO NOTHING;

UPDATE dsa_core.commit_chunks k
SET list_hash = coalesce((SELECT sha256(l.leaf_hashes) FROM sluiceway_conv_lists l
                          WHERE l.commit_key = k.commit_key AND l.chunk_no = k.chunk_no),
                         sha256(''::bytea));

ALTER TABLE dsa_core.commit_chunks ALTER COLUMN list_hash SET NOT NULL;

DROP VIEW dsa_core.commit_rows;
DROP FUNCTION dsa_core.commit_row_range(text, bigint, bigint);
DROP TABLE dsa_core.commit_row_entries;
DROP TABLE sluiceway_conv, sluiceway_conv_leaves, sluiceway_conv_lists;

-- Rows from_row <= row_number < to_row of a commit, in logical order. Only the ranges and
-- leaves that overlap the slice are read.
CREATE FUNCTION dsa_core.commit_row_range(p_commit_id text, p_from bigint DEFAULT 1,
                                          p_to bigint DEFAULT NULL)
RETURNS TABLE (row_number bigint, logical_row_id text, row_hash bytea)
LANGUAGE sql STABLE AS $$
    SELECT k.row_offset + le.leaf_start + i AS row_number,
           coalesce(l.logical_ids[i], (k.row_offset + le.leaf_start + i)::text),
           substring(l.row_hashes FROM ((i - 1) * 32 + 1)::int FOR 32)
    FROM dsa_core.commits c
    JOIN dsa_core.commit_chunks k ON k.commit_key = c.commit_key
    JOIN dsa_core.leaf_lists ll ON ll.list_hash = k.list_hash
    -- the list's hashes and ends are TOASTed: read each whole once (OFFSET 0 keeps this
    -- from being inlined), not one slice fetch per leaf
    CROSS JOIN LATERAL (SELECT ll.leaf_hashes || ''::bytea AS hs,
                               ll.leaf_ends || '{}'::int[] AS ends OFFSET 0) m
    CROSS JOIN LATERAL (
        SELECT substring(m.hs FROM (j - 1) * 32 + 1 FOR 32) AS leaf_hash,
               coalesce(m.ends[j - 1], 0) AS leaf_start, m.ends[j] AS leaf_end
        FROM generate_series(1, ll.leaf_count) j
    ) le
    JOIN dsa_core.row_leaves l ON l.leaf_hash = le.leaf_hash
    CROSS JOIN LATERAL generate_series(
        greatest(1, p_from - k.row_offset - le.leaf_start),
        least(l.row_count::bigint,
              coalesce(p_to, 9223372036854775807) - 1 - k.row_offset - le.leaf_start)) i
    WHERE c.commit_id = p_commit_id
      AND k.row_offset + k.row_count >= p_from
      AND (p_to IS NULL OR k.row_offset + 1 < p_to)
      AND k.row_offset + le.leaf_end >= p_from
      AND (p_to IS NULL OR k.row_offset + le.leaf_start + 1 < p_to)
    ORDER BY 1
$$;

-- The seeds' shape: commit_rows (commit_id, logical_row_id, row_hash), plus row_number.
CREATE VIEW dsa_core.commit_rows AS
SELECT c.commit_id, r.logical_row_id, r.row_hash, r.row_number, r.row_number AS ord
FROM dsa_core.commits c
CROSS JOIN LATERAL dsa_core.commit_row_range(c.commit_id, 1, NULL) r;

-- What the ranges of a keyed (upsert/delete) import found, until its commit merges it with
-- the parent. Scratch: unlogged, and emptied when the import ends either way.
CREATE UNLOGGED TABLE dsa_jobs.import_keyed_rows (
    job_id     uuid   NOT NULL,
    chunk_no   int    NOT NULL,
    ord        bigint NOT NULL,
    logical_id text   COLLATE "C",
    row_hash   bytea,
    PRIMARY KEY (job_id, chunk_no, ord)
);
