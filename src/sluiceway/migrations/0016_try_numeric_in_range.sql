-- A numeric filter (export_part.RowQuery) compares dsa_core.try_numeric(value): the number a
-- text is, or NULL. Its regex took '1e131072' and '1e-20000' for numbers, and the cast then
-- raised "value overflows numeric format", failing the whole export for one stored value.
-- Now a text numeric cannot hold is not a number either (pg_input_is_valid: PostgreSQL 16+,
-- which schema.py's type profile needs already). The regex stays: it refuses what numeric
-- would take but a filter should not ('NaN', 'Infinity', '1_000'). STABLE, not IMMUTABLE, as
-- pg_input_is_valid is: so the body is inlined into the part's query. Not inlined, PostgreSQL
-- 18 plans the body with the value as a constant and folds the cast before the test runs.
-- depends: 0015_error_codes

CREATE OR REPLACE FUNCTION dsa_core.try_numeric(value text) RETURNS numeric
LANGUAGE sql STABLE PARALLEL SAFE AS $$
    SELECT CASE WHEN value ~ '^\s*[-+]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][-+]?[0-9]+)?\s*$'
                     AND pg_input_is_valid(value, 'numeric')
                THEN value::numeric END
$$;
