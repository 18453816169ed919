-- What a range's scan found, for formats whose figures are not CSV's quote and newline
-- counts (a JSON array's depth under both string hypotheses), and the lexer state the fold
-- gave the range's first byte.
-- depends: 0008_export_idempotency

ALTER TABLE dsa_jobs.import_chunks ADD COLUMN scan jsonb;
