"""Column types: what each value fits, what a range's values say, and how schemas evolve.

A value fits a set of types, decided in SQL by one expression (:func:`fit_mask`) that the
load's profile of a range, the rule checks and the planner's sample check all share, so a
value is an integer in exactly the same cases everywhere. Each range records, per column, how
many values were empty and which types every other value fitted (``import_chunks.profile``);
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

_INT = r"^\s*[-+]?[0-9]+\s*$"
_NUM = r"^\s*[-+]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][-+]?[0-9]+)?\s*$"
_DATE = r"^\s*[0-9]{4}-[0-9]{2}-[0-9]{2}\s*$"
_TIMESTAMP = (
    r"^\s*[0-9]{4}-[0-9]{2}-[0-9]{2}[T ][0-9]{2}:[0-9]{2}(:[0-9]{2}(\.[0-9]+)?)?"
    r"\s*(Z|[-+][0-9]{2}(:?[0-9]{2})?)?\s*$"
)
TRUE_WORDS = ("true", "t", "yes", "y", "1")
FALSE_WORDS = ("false", "f", "no", "n", "0")


def is_empty(value: sql.Composable) -> sql.Composable:
    """SQL: the text value counts as missing (NULL or the empty string)."""
    return sql.SQL("({v} IS NULL OR {v} = '')").format(v=value)


def fit_mask(value: sql.Composable) -> sql.Composable:
    """SQL: the types a (non-empty) text value fits, as a bit mask (see ``BITS``).

    The shape is checked with a regular expression first, so ``pg_input_is_valid`` runs only on
    values that look like the type (and PostgreSQL's liberal inputs such as ``1_000``,
    ``0x1F``, ``today`` or ``Jan 2`` are not mistaken for numbers or dates); it then decides
    what the shape cannot: a bigint's range, a double's range, a real calendar date. One value
    is tested against the shapes in turn and stops at the first that matches.
    """
    v = value
    words = sql.SQL(", ").join(sql.Literal(w) for w in (*TRUE_WORDS, *FALSE_WORDS))
    return sql.SQL(
        "CASE WHEN {v} ~ {int} THEN "
        "(CASE WHEN pg_input_is_valid({v}, 'bigint') THEN 1 ELSE 0 END"
        " | CASE WHEN pg_input_is_valid({v}, 'double precision') THEN 2 ELSE 0 END"
        " | CASE WHEN btrim({v}) IN ('0', '1') THEN 4 ELSE 0 END) "
        "WHEN {v} ~ {num} THEN CASE WHEN pg_input_is_valid({v}, 'double precision') THEN 2 "
        "ELSE 0 END "
        "WHEN lower(btrim({v})) IN ({words}) THEN 4 "
        "WHEN {v} ~ {date} THEN CASE WHEN pg_input_is_valid({v}, 'date') THEN 24 ELSE 0 END "
        "WHEN {v} ~ {ts} THEN CASE WHEN pg_input_is_valid({v}, 'timestamptz') THEN 16 "
        "ELSE 0 END "
        "ELSE 0 END"
    ).format(
        v=v,
        int=sql.Literal(_INT),
        num=sql.Literal(_NUM),
        words=words,
        date=sql.Literal(_DATE),
        ts=sql.Literal(_TIMESTAMP),
    )


def fits(value: sql.Composable, type_: str) -> sql.Composable:
    """SQL: the non-empty text value is a valid ``type_``."""
    if type_ == "text":
        return sql.SQL("true")
    return sql.SQL("(({}) & {}) <> 0").format(fit_mask(value), sql.Literal(BITS[type_]))


def profile_query(table: sql.Identifier, count: int) -> sql.Composed:
    """SELECT, over a range's raw table of text columns c1..cN: its row count, and per column
    the empty values and the AND of every non-empty value's mask (NULL: no such value)."""
    idents = [sql.Identifier(f"c{i}") for i in range(1, count + 1)]
    nulls = sql.SQL(", ").join(
        sql.SQL("count(*) FILTER (WHERE {})").format(is_empty(c)) for c in idents
    )
    masks = sql.SQL(", ").join(
        sql.SQL("bit_and({}) FILTER (WHERE NOT {})").format(fit_mask(c), is_empty(c))
        for c in idents
    )
    return sql.SQL(
        "SELECT count(*) AS row_count, ARRAY[{nulls}]::bigint[] AS nulls, "
        "ARRAY[{masks}]::int[] AS masks FROM {t}"
    ).format(
        nulls=nulls if idents else sql.SQL(""),
        masks=masks if idents else sql.SQL(""),
        t=table,
    )


def profile_of(row: dict[str, Any], columns: Sequence[str]) -> dict[str, Any]:
    """A range's profile as stored: rows, and per column name its empties and mask."""
    return {
        "rows": int(row["row_count"]),
        "columns": {
            name: {"nulls": int(n), "mask": m}
            for name, n, m in zip(columns, row["nulls"] or [], row["masks"] or [], strict=True)
        },
    }


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
            if found["nulls"]:
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
