"""Column types: what each value fits, what a range's values say, and how schemas evolve.

A value fits a set of types, decided in SQL by one expression (:func:`fit_mask`) that the
load's profile of a range, the rule checks and the planner's sample check all share, so a
value is an integer in exactly the same cases everywhere. Each range records, per column, whether
a value was empty and which types every other value fitted (``import_chunks.profile``, folded
from the rows' packed codes, :func:`row_codes`);
the commit folds the ranges' profiles into the file's schema (:func:`infer`), compares it with
the dataset's (:func:`differences`) and records the commit's (``commits.schema``).

Types, most specific first: integer, number, boolean, date, timestamp, text. An empty value is
NULL or the empty string; a column that holds one is nullable.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from psycopg import sql

ColumnType = Literal["integer", "number", "boolean", "date", "timestamp", "text"]
TYPES: tuple[ColumnType, ...] = ("integer", "number", "boolean", "date", "timestamp", "text")
# The bit of each type in a value's mask (text: every value fits it).
BITS: dict[str, int] = {"integer": 1, "number": 2, "boolean": 4, "date": 8, "timestamp": 16}
ALL_BITS = 31

TRUE_WORDS = ("true", "t", "yes", "y", "1")
FALSE_WORDS = ("false", "f", "no", "n", "0")


def spells(value: sql.Composable, truth: bool) -> sql.Composable:
    """SQL: a boolean column's (non-empty) text value is one of ``truth``'s words."""
    words = TRUE_WORDS if truth else FALSE_WORDS
    return sql.SQL("lower(btrim({})) IN ({})").format(
        value, sql.SQL(", ").join(map(sql.Literal, words))
    )


def is_empty(value: sql.Composable) -> sql.Composable:
    """SQL: the text value counts as missing (NULL or the empty string)."""
    return sql.SQL("({v} IS NULL OR {v} = '')").format(v=value)


def _date_shape(v: sql.Composable) -> sql.Composable:
    return sql.SQL("{} LIKE '____-__-__'").format(v)


def _timestamp_shape(v: sql.Composable) -> sql.Composable:
    # no '%' in the pattern: the query may also carry %s parameters
    return sql.SQL(
        "(left({v}, 14) LIKE '____-__-__T__:' OR left({v}, 14) LIKE '____-__-__ __:')"
    ).format(v=v)


def _leading_zero(v: sql.Composable) -> sql.Composable:
    """SQL: digits after a leading zero (``007``, ``-01``, ``00.5``): a code such as a ZIP or
    an account number, whose zeros a number type would drop, so text."""
    return sql.SQL(
        "(left(ltrim({v}, '+- '), 1) = '0' AND substr(ltrim({v}, '+- '), 2, 1) BETWEEN '0' AND '9')"
    ).format(v=v)


def fit_mask(value: sql.Composable) -> sql.Composable:
    """SQL: the types a (non-empty) text value fits, as a bit mask (see ``BITS``).

    ``pg_input_is_valid`` decides whether a value is a bigint, a double, a date or a
    timestamptz (ranges, real calendar days), and a shape check keeps out PostgreSQL's liberal
    inputs, so ``1_000``, ``0x1F``, ``NaN``, ``Infinity``, ``today``, ``epoch`` or ``Jan 2``
    are text, and so are digits after a leading zero (``007``: a code, not a number). Dates and timestamps are ISO 8601 (``YYYY-MM-DD``, then ``T`` or a space and
    ``hh:mm``, then anything timestamptz accepts: seconds, fractions, ``Z``, an offset or a
    zone name), with no space around them. A value is tested against the shapes in turn
    (dates first: they are digits and dashes too) and stops at the first.
    """
    v = value
    words = sql.SQL(", ").join(sql.Literal(w) for w in (*TRUE_WORDS, *FALSE_WORDS) if w.isalpha())
    return sql.SQL(
        "CASE "
        "WHEN {date_shape} THEN CASE WHEN pg_input_is_valid({v}, 'date') THEN 24 ELSE 0 END "
        "WHEN {ts_shape} THEN CASE WHEN pg_input_is_valid({v}, 'timestamptz') THEN 16 ELSE 0 END "
        "WHEN {leading_zero} THEN 0 "
        "WHEN translate({v}, '0123456789+- ', '') = '' THEN "
        "(CASE WHEN pg_input_is_valid({v}, 'bigint') THEN 1 ELSE 0 END"
        " | CASE WHEN pg_input_is_valid({v}, 'double precision') THEN 2 ELSE 0 END"
        " | CASE WHEN btrim({v}) IN ('0', '1') THEN 4 ELSE 0 END) "
        "WHEN translate(lower({v}), '0123456789+-. e', '') = '' THEN "
        "CASE WHEN pg_input_is_valid({v}, 'double precision') THEN 2 ELSE 0 END "
        "WHEN lower(btrim({v})) IN ({words}) THEN 4 "
        "ELSE 0 END"
    ).format(
        v=v,
        date_shape=_date_shape(v),
        ts_shape=_timestamp_shape(v),
        leading_zero=_leading_zero(v),
        words=words,
    )


def _checks(value: sql.Composable) -> dict[int, sql.Composable]:
    """SQL, per mask a column's values can share: a cheap test that a value fits every type of
    that mask, true for most values of a column of those types (each implies what
    :func:`fit_mask` says; a value that fails it is given its full mask)."""
    v = value
    cased = [w for t in (*TRUE_WORDS, *FALSE_WORDS) for w in {t, t.upper(), t.capitalize()}]
    return {
        # canonical digits: int8out gives the same text back
        3: sql.SQL("(pg_input_is_valid({v}, 'bigint') AND {v}::bigint::text = {v})").format(v=v),
        2: sql.SQL(
            "(pg_input_is_valid({v}, 'double precision') AND {v} !~ '[^0-9eE.+ -]' "
            "AND NOT {leading_zero})"
        ).format(v=v, leading_zero=_leading_zero(v)),
        4: sql.SQL("{v} IN ({words})").format(
            v=v, words=sql.SQL(", ").join(map(sql.Literal, sorted(set(cased))))
        ),
        7: sql.SQL("{} IN ('0', '1')").format(v),
        24: sql.SQL("({} AND pg_input_is_valid({}, 'date'))").format(_date_shape(v), v),
        16: sql.SQL("({} AND pg_input_is_valid({}, 'timestamptz'))").format(_timestamp_shape(v), v),
    }


_TYPE_MASKS = {"integer": 3, "number": 2, "boolean": 4, "date": 24, "timestamp": 16}


def fits(value: sql.Composable, type_: str) -> sql.Composable:
    """SQL: the non-empty text value is a valid ``type_`` (the cheap test first)."""
    if type_ == "text":
        return sql.SQL("true")
    return sql.SQL("({fast} OR (({mask}) & {bit}) <> 0)").format(
        fast=_checks(value)[_TYPE_MASKS[type_]],
        mask=fit_mask(value),
        bit=sql.Literal(BITS[type_]),
    )


# Rows whose full masks choose each column's candidate types; every row is then tested
# against those.
SAMPLE_ROWS = 1000

# A row's profile is packed into int8 codes, CODE_BITS bits a column and COLUMNS_PER_CODE
# columns a code, so that one bit_and folds rows into a leaf and leaves into a range: the low
# five bits are the value's mask (all of them for an empty value, which says nothing of types),
# VALUE_BIT stays set while every value is non-empty, EMPTY_BIT while every value is empty.
# Leaves keep their folded codes (row_leaves.profile): a change to what a value fits
# (fit_mask, _checks, BITS) or to this packing needs a migration that sets them to NULL.
CODE_BITS = 7
COLUMNS_PER_CODE = 9  # 63 bits: the sign bit stays clear
VALUE_BIT, EMPTY_BIT = 32, 64
EMPTY_CODE = ALL_BITS | EMPTY_BIT


def sample_masks(conn: Any, table: sql.Identifier, count: int) -> list[int | None]:
    """Each column's mask over the ``SAMPLE_ROWS`` rows of ``table`` (c1..cN of text) the scan
    meets first (None: no value there): what :func:`row_codes` tests first."""
    row = conn.execute(_masks(table, count)).fetchone()
    return list(row["masks"] or []) if row else [None] * count


def _masks(table: sql.Identifier, count: int) -> sql.Composed:
    """SELECT, per column, the AND of the full masks of its non-empty values in the first
    ``SAMPLE_ROWS`` rows the scan meets (those COPY wrote first). The scan stops there: a
    filter on ord would read the whole table for them. Which rows it holds changes no result,
    only which cheap test :func:`row_codes` tries first."""
    idents = [sql.Identifier(f"c{i}") for i in range(1, count + 1)]
    masks = [
        sql.SQL("bit_and({}) FILTER (WHERE NOT {})").format(fit_mask(c), is_empty(c))
        for c in idents
    ]
    return sql.SQL(
        "SELECT ARRAY[{masks}]::int[] AS masks FROM (SELECT * FROM {t} LIMIT {n}) s"
    ).format(
        masks=sql.SQL(", ").join(masks) if idents else sql.SQL(""),
        t=table,
        n=sql.Literal(SAMPLE_ROWS),
    )


def _value_code(value: sql.Composable, known: int | None) -> sql.Composable:
    """SQL: one value's 7 bits. With ``known`` (the column's sample mask) a value that passes
    the cheap test of that mask gets it, and only the others the full mask ANDed with it: a text
    column costs nothing more, a typed one about one test a value."""
    checks = _checks(value)
    if known == 0:
        mask: sql.Composable = sql.SQL("0")  # text already: an AND never gains a bit
    elif known is not None and known in checks:
        mask = sql.SQL("CASE WHEN {fast} THEN {known} ELSE ({full}) & {known} END").format(
            fast=checks[known], known=sql.Literal(known), full=fit_mask(value)
        )
    else:
        mask = fit_mask(value)
    return sql.SQL("CASE WHEN {empty} THEN {empty_code} ELSE {value_bit} | {mask} END").format(
        empty=is_empty(value),
        empty_code=sql.Literal(EMPTY_CODE),
        value_bit=sql.Literal(VALUE_BIT),
        mask=mask,
    )


def row_codes(
    values: Sequence[sql.Composable], sample: Sequence[int | None]
) -> list[sql.Composable]:
    """SQL: a row's profile as int8 codes, one per ``COLUMNS_PER_CODE`` of its ``values``
    (text expressions, in the profile's column order); ``sample``: :func:`sample_masks`."""
    codes: list[sql.Composable] = []
    for first in range(0, len(values), COLUMNS_PER_CODE):
        parts = [
            sql.SQL("(({})::int8 << {})").format(
                _value_code(values[i], sample[i]), sql.Literal(CODE_BITS * (i - first))
            )
            for i in range(first, min(first + COLUMNS_PER_CODE, len(values)))
        ]
        codes.append(sql.SQL("({})").format(sql.SQL(" | ").join(parts)))
    return codes


def code_count(columns: int) -> int:
    """How many codes a row of ``columns`` columns has (:func:`row_codes`)."""
    return -(-columns // COLUMNS_PER_CODE)


def and_codes(codes: Sequence[sql.Composable]) -> sql.Composed:
    """SQL aggregate: the AND of each code expression over the rows, as an int8[] (its
    elements NULL over no rows)."""
    return sql.SQL("ARRAY[{}]::int8[]").format(
        sql.SQL(", ").join(sql.SQL("bit_and({})").format(c) for c in codes)
    )


def folded(codes: Sequence[sql.Composable]) -> sql.Composed:
    """SQL select list: the row count and the AND of each code (NULL over no rows)."""
    return sql.SQL("count(*) AS row_count, {} AS codes").format(and_codes(codes))


def profile_of_codes(
    row_count: int, codes: Sequence[int | None], columns: Sequence[str]
) -> dict[str, Any]:
    """A range's profile as stored, from its folded codes: rows, and per column name whether
    it had an empty value and the AND of its values' masks (None: it had no value)."""
    out: dict[str, Any] = {}
    for i, name in enumerate(columns):
        code = codes[i // COLUMNS_PER_CODE] if codes else None
        if code is None:  # no rows
            out[name] = {"nullable": False, "mask": None}
            continue
        bits = (code >> (CODE_BITS * (i % COLUMNS_PER_CODE))) & 127
        out[name] = {
            "nullable": not bits & VALUE_BIT,
            "mask": None if bits & EMPTY_BIT else bits & ALL_BITS,
        }
    return {"rows": row_count, "columns": out}


def profile(conn: Any, table: sql.Identifier, columns: Sequence[str]) -> dict[str, Any]:
    """The profile of ``table`` (c1..cN of text) in one pass of its own. An import's range
    computes the same codes while it hashes its rows (:func:`sluiceway.load.hash_rows`)."""
    idents = [sql.Identifier(f"c{i}") for i in range(1, len(columns) + 1)]
    codes = row_codes(idents, sample_masks(conn, table, len(columns)))
    row = conn.execute(sql.SQL("SELECT {} FROM {}").format(folded(codes), table)).fetchone()
    return profile_of_codes(int(row["row_count"]), list(row["codes"] or []), columns)


@dataclass(frozen=True)
class Column:
    """One column of a schema; ``type`` None: the file held no value in it (fits any type)."""

    name: str
    type: str | None
    nullable: bool

    def stored(self) -> dict[str, Any]:
        return {"name": self.name, "type": self.type or "text", "nullable": self.nullable}


def type_of_mask(mask: int | None) -> str | None:
    """The most specific type every value fits (None: there were no values)."""
    if mask is None:
        return None
    for name in TYPES[:-1]:
        if mask & BITS[name]:
            return name
    return "text"


def infer(columns: Sequence[str], profiles: Sequence[dict[str, Any] | None]) -> list[Column]:
    """Fold the ranges' profiles into the file's columns: the AND of the masks, any empties."""
    masks: dict[str, int | None] = dict.fromkeys(columns)
    nullable = dict.fromkeys(columns, False)
    for profile in profiles:
        if not profile:
            continue
        for name, found in profile["columns"].items():
            if name not in masks:
                continue
            # "nulls": a count, in the profiles of ranges loaded before the packed codes
            if found.get("nullable", found.get("nulls")):
                nullable[name] = True
            if found["mask"] is not None:
                before = masks[name]
                masks[name] = found["mask"] if before is None else before & found["mask"]
    return [Column(c, type_of_mask(masks[c]), nullable[c]) for c in columns]


def lub(a: str | None, b: str | None) -> str | None:
    """The most specific type both types' values fit (None: no values, fits anything)."""
    if a is None or a == b:
        return b
    if b is None:
        return a
    common = _mask_of(a) & _mask_of(b)
    return type_of_mask(common) if common else "text"


def _mask_of(type_: str) -> int:
    """Every type a value of ``type_`` also fits (integer: number too; date: timestamp too)."""
    return {"integer": 3, "number": 2, "boolean": 4, "date": 24, "timestamp": 16}.get(type_, 0)


def type_fits(value_type: str | None, column_type: str) -> bool:
    """Values of ``value_type`` are valid ``column_type`` values."""
    return (
        value_type is None or column_type == "text" or lub(value_type, column_type) == column_type
    )


def loaded(stored: list[dict[str, Any]] | None) -> list[Column] | None:
    """A stored schema (``commits.schema``) as columns."""
    if stored is None:
        return None
    return [Column(c["name"], c["type"], bool(c["nullable"])) for c in stored]


def store(columns: Sequence[Column]) -> list[dict[str, Any]]:
    return [c.stored() for c in columns]


def merged(
    order: Sequence[str], parent: Sequence[Column] | None, file: Sequence[Column]
) -> list[Column]:
    """The schema of rows from both: each column's common type; nullable if either side's is,
    or if one side lacks it (its rows have no value there)."""
    before = {c.name: c for c in parent or []}
    now = {c.name: c for c in file}
    out = []
    for name in order:
        a, b = before.get(name), now.get(name)
        if a is None and b is None:
            out.append(Column(name, None, True))
        elif a is None or b is None:
            one = a or b
            assert one is not None
            out.append(Column(name, one.type, one.nullable or parent is not None))
        else:
            out.append(Column(name, lub(a.type, b.type), a.nullable or b.nullable))
    return out


def differences(dataset: Sequence[Column], file: Sequence[Column]) -> dict[str, list[str]]:
    """How the file's columns differ from the dataset's: added, removed, type changes (the
    file's values do not fit the dataset's type) and nulls in a column that had none."""
    before = {c.name: c for c in dataset}
    now = {c.name: c for c in file}
    added = [f"{c.name!r} ({c.type or 'empty'})" for c in file if c.name not in before]
    removed = [repr(c.name) for c in dataset if c.name not in now]
    changed, nulls = [], []
    for c in file:
        old = before.get(c.name)
        if old is None:
            continue
        if not type_fits(c.type, old.type or "text"):
            changed.append(f"{c.name!r} is {c.type} in the file, {old.type} in the dataset")
        if c.nullable and not old.nullable:
            nulls.append(repr(c.name))
    return {"added": added, "removed": removed, "type_changes": changed, "new_nulls": nulls}


def describe(diff: dict[str, list[str]]) -> str:
    """The differences as one readable sentence."""
    parts = []
    if diff["added"]:
        parts.append("added column(s) " + ", ".join(diff["added"]))
    if diff["removed"]:
        parts.append("removed column(s) " + ", ".join(diff["removed"]))
    if diff["type_changes"]:
        parts.append("type change(s): " + "; ".join(diff["type_changes"]))
    if diff["new_nulls"]:
        parts.append("empty values in column(s) that had none: " + ", ".join(diff["new_nulls"]))
    return "; ".join(parts)


def refused(diff: dict[str, list[str]], policy: str) -> dict[str, list[str]]:
    """The differences a dataset's ``schema_changes`` rule does not accept.

    ``allow``: none (the new commit's schema is whatever its rows say); ``add_columns``: all but
    added columns (schema evolution: a new column, nullable); ``reject``: every difference.
    """
    if policy == "allow":
        return {k: [] for k in diff}
    if policy == "add_columns":
        return {**diff, "added": []}
    return diff


def with_declared(file: Sequence[Column], declared: Mapping[str, tuple[str, bool]]) -> list[Column]:
    """The file's columns with the types the rules declare (every accepted row fits them)."""
    out = []
    for c in file:
        if c.name in declared:
            type_, nullable = declared[c.name]
            out.append(Column(c.name, type_, c.nullable and nullable))
        else:
            out.append(c)
    return out


def commit_schema(
    *,
    mode: str,
    policy: str,
    order: Sequence[str],
    parent: Sequence[Column] | None,
    has_parent: bool,
    file: Sequence[Column],
    filename: str,
    dataset: str,
) -> list[Column] | None:
    """The new commit's schema, after checking the file's against the dataset's (the parent
    commit's) by ``policy``; raises :class:`SchemaMismatch` listing what is refused.

    None: unknown (the parent's rows have no recorded schema and the new commit keeps them).
    """
    from .errors import SchemaMismatch

    if mode == "delete":
        return list(parent) if parent is not None else None
    if parent is not None:
        diff = differences(parent, file)
        refusal = refused(diff, policy)
        if any(refusal.values()):
            raise SchemaMismatch(
                f"{filename}: its columns differ from the schema of dataset {dataset!r} "
                f"(schema_changes: {policy}): {describe(refusal)}. Nothing was imported.",
                file=filename,
                differences={k: v for k, v in refusal.items() if v},
            )
    if mode == "replace":
        if parent is None or policy == "allow":
            return list(file)
        before = {c.name: c for c in parent}
        # schema evolution: the dataset's columns keep their types, new ones are nullable
        return [before[c.name] if c.name in before else Column(c.name, c.type, True) for c in file]
    if has_parent and parent is None:
        return None
    return merged(order, parent, file)


def union(
    order: Sequence[str], stored: Sequence[list[dict[str, Any]] | None]
) -> list[Column] | None:
    """The schema of a commit whose rows come from commits of these schemas (a merge, a
    revert); None if any of them is unknown."""
    if not stored or any(s is None for s in stored):
        return None
    out: list[Column] | None = None
    for one in stored:
        columns = loaded(one)
        assert columns is not None
        out = merged(order, out, columns) if out is not None else merged(order, None, columns)
    return out
