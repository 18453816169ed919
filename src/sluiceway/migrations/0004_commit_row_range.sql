-- The one way code reads a commit's rows: dsa_core.commit_row_range(commit_id, from, to)
-- returns rows from_row <= row_number < to_row (1-based; to_row NULL = to the end) in
-- logical order. Exports, diffs and listings call it, so the physical layout of a commit's
-- rows can change (structural sharing, issue 6) without touching them.
-- depends: 0003_upload_size_optional

CREATE FUNCTION dsa_core.commit_row_range(p_commit_id text, p_from bigint DEFAULT 1,
                                          p_to bigint DEFAULT NULL)
RETURNS TABLE (row_number bigint, logical_row_id text, row_hash bytea)
LANGUAGE sql STABLE AS $$
    SELECT k.row_offset + (e.ord & 4294967295) AS row_number,
           coalesce(e.logical_row_id, (k.row_offset + (e.ord & 4294967295))::text),
           e.row_hash
    FROM dsa_core.commits c
    JOIN dsa_core.commit_chunks k ON k.commit_key = c.commit_key
    JOIN dsa_core.commit_row_entries e
      ON e.commit_key = c.commit_key
     AND e.ord > (k.chunk_no::bigint << 32)
     AND e.ord < ((k.chunk_no::bigint + 1) << 32)
    WHERE c.commit_id = p_commit_id
      AND k.row_offset + k.row_count >= p_from
      AND (p_to IS NULL OR k.row_offset < p_to - 1)
      AND k.row_offset + (e.ord & 4294967295) >= p_from
      AND (p_to IS NULL OR k.row_offset + (e.ord & 4294967295) < p_to)
    ORDER BY 1
$$;
