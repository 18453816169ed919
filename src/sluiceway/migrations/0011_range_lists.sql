-- An unkeyed range is now stored as several content-defined leaf lists, not one (issue 6: a
-- diff reads only the lists that differ, so its cost follows the difference). A loaded range
-- keeps its lists in order until the commit points at them (after stitching the seams
-- between ranges, see tree.stitch).
-- depends: 0009_import_chunk_scan

ALTER TABLE dsa_jobs.import_chunks
    ADD COLUMN list_hashes bytea[],
    ADD COLUMN list_rows   bigint[]
        CHECK (list_rows IS NULL OR cardinality(list_rows) = cardinality(list_hashes));
UPDATE dsa_jobs.import_chunks i
SET list_hashes = ARRAY[i.list_hash],
    list_rows = ARRAY[i.row_count::bigint]
WHERE i.list_hash IS NOT NULL;
ALTER TABLE dsa_jobs.import_chunks DROP COLUMN list_hash;
