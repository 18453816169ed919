-- Each leaf keeps the profile of its rows' values (issue 8: a re-import profiles only the rows
-- of the leaves it did not find stored, and folds the stored leaves' profiles): the AND of
-- its rows' packed codes (sluiceway.schema.row_codes), over the columns in sorted name order,
-- as the row hashes take them, so a leaf's profile depends on its content only. NULL: not
-- known (leaves stored before this migration, and those that commits build from stored
-- leaves, such as the seams between ranges); a load then profiles those leaves' rows again.
-- A change to what a value fits (schema.fit_mask) must set every profile back to NULL.
-- depends: 0011_range_lists

ALTER TABLE dsa_core.row_leaves ADD COLUMN profile bigint[];
