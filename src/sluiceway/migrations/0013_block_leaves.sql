-- A CSV range's blocks (issue 8; sluiceway.blocks): runs of whole records cut by the file's
-- bytes, each made one leaf. A block's address (sha256 of its parse context and its bytes)
-- names the leaf its records made, so a re-import that finds a block here neither COPYs nor
-- hashes its records again. An entry is written in the transaction that stores its leaf,
-- and gc's sweep deletes the entries whose leaf it deletes; a load holds gc's lock shared
-- from before its lookups until it commits, so a leaf it finds here stays stored. A block
-- is taken only if its leaf has a profile (row_leaves.profile): otherwise it is loaded again.
-- depends: 0012_leaf_profiles

CREATE TABLE dsa_core.block_leaves (
    digest    bytea PRIMARY KEY CHECK (octet_length(digest) = 32),
    leaf_hash bytea NOT NULL,
    row_count int NOT NULL CHECK (row_count > 0)
);
CREATE INDEX block_leaves_leaf ON dsa_core.block_leaves (leaf_hash);

-- how many of a range's rows came from blocks found stored
ALTER TABLE dsa_jobs.import_chunks ADD COLUMN reused_rows bigint;
