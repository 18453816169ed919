-- A block keeps its leaf's profile (issue 8; sluiceway.blocks): a re-import's lookup of a
-- range's blocks is then one probe of block_leaves a block, and the worker reads back only
-- which blocks were found, not their leaves. The profile is the AND of the block's rows'
-- packed codes, as row_leaves.profile (migration 0012); NULL: not known, and the block is
-- loaded again. A change to what a value fits (schema.fit_mask) must set these profiles back
-- to NULL too.
-- depends: 0013_block_leaves

ALTER TABLE dsa_core.block_leaves ADD COLUMN profile bigint[];
UPDATE dsa_core.block_leaves b SET profile = l.profile
FROM dsa_core.row_leaves l WHERE l.leaf_hash = b.leaf_hash;
