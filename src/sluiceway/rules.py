"""Validation rules (seeds 001 and 003): what a file must be for its import to commit.

Rules are set per dataset (``PUT /datasets/{name}/rules``, kept in ``datasets.rules``) and
per import (the upload's ``options.rules``); an import's own rule wins over the dataset's,
field by field. The planner merges them once into the job's checkpoint, where every stage
reads them:

- upload and plan: ``max_file_bytes``, ``allowed_formats``, ``required_columns``, declared
  columns that are missing, and a quick check of the first ``sample_records`` records
  (:func:`check_sample`), which fails fast on the wrong file;
- load: each range rejects the rows whose values break ``columns`` (types, nullability) or
  that cannot be parsed, into its rejected-rows report (:mod:`.rejects`);
- commit: ``min_records``, ``unique_key``, the tolerated errors (``max_errors`` rows or
  ``max_error_percent`` of the records) and ``schema_changes``.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Sequence
from typing import Any, Literal

from psycopg import sql
from psycopg.types.json import Jsonb
from pydantic import BaseModel, ConfigDict, Field, StrictInt, field_validator

from . import csvsplit, datasets, db, formats, jsonsplit, schema
from .errors import (
    InvalidRequest,
    MalformedFile,
    NotFound,
    PayloadTooLarge,
    RulesBroken,
    UnsupportedFormat,
)

SchemaChanges = Literal["allow", "add_columns", "reject"]


class ColumnRule(BaseModel):
    """What every value of one column must be."""

    model_config = ConfigDict(extra="forbid")
    type: schema.ColumnType = Field(
        default="text", description="integer, number, boolean, date, timestamp or text."
    )
    nullable: bool = Field(default=True, description="false: an empty value breaks the rule.")


class Rules(BaseModel):
    """Validation rules of a dataset or of one import (unset fields: no rule)."""

    model_config = ConfigDict(extra="forbid")
    max_file_bytes: StrictInt | None = Field(
        default=None, ge=0, description="Largest file accepted."
    )
    allowed_formats: list[str] | None = Field(
        default=None, description=f"Formats accepted, among {', '.join(formats.FORMATS)}."
    )
    min_records: StrictInt | None = Field(
        default=None, ge=0, description="Fewest records accepted."
    )
    required_columns: list[str] | None = Field(
        default=None, max_length=1000, description="Columns the file must have."
    )
    columns: dict[str, ColumnRule] | None = Field(
        default=None, description="Per column: its type and whether it may be empty."
    )
    unique_key: list[str] | None = Field(
        default=None,
        min_length=1,
        max_length=100,
        description="Columns whose values no two records of the resulting commit may share.",
    )
    max_errors: StrictInt | None = Field(
        default=None, ge=0, description="Rejected records tolerated (default 0: any fails)."
    )
    max_error_percent: float | None = Field(
        default=None, ge=0, le=100, description="Rejected records tolerated, in % of records."
    )
    sample_records: StrictInt | None = Field(
        default=None, ge=0, le=100_000, description="Records checked before the import starts."
    )
    schema_changes: SchemaChanges | None = Field(
        default=None,
        description="allow (default): any columns; add_columns: new columns are accepted as "
        "schema evolution (nullable), removed columns and type changes fail the import; "
        "reject: any difference from the dataset's schema fails it.",
    )

    @field_validator("allowed_formats")
    @classmethod
    def _known_formats(cls, value: list[str] | None) -> list[str] | None:
        if value is None:
            return None
        lowered = [v.lower() for v in value]
        unknown = [v for v in lowered if v not in formats.FORMATS]
        if unknown:
            raise ValueError(
                f"unknown format(s) {', '.join(unknown)}; the formats are "
                f"{', '.join(formats.FORMATS)}"
            )
        return lowered

    def over(self, base: Rules | None) -> Rules:
        """These rules, with ``base``'s where these set none."""
        if base is None:
            return self
        return Rules.model_validate(
            {**base.model_dump(exclude_none=True), **self.model_dump(exclude_none=True)}
        )

    def tolerance(self, records: int) -> int:
        """How many rejected records of ``records`` are tolerated."""
        allowed = [self.max_errors or 0]
        if self.max_error_percent is not None:
            allowed.append(int(records * self.max_error_percent / 100))
        return max(allowed)

    def tolerant(self) -> bool:
        """Some rejected rows may be tolerated: bad rows are reported rather than fatal."""
        return bool(self.max_errors) or bool(self.max_error_percent)

    def checked_columns(self) -> dict[str, ColumnRule]:
        """The columns whose values are checked row by row (text and nullable: nothing to do)."""
        return {
            name: rule
            for name, rule in (self.columns or {}).items()
            if rule.type != "text" or not rule.nullable
        }


DEFAULT_SAMPLE_RECORDS = 1000


def dataset_rules(conn: db.Conn, owner: str, name: str) -> Rules | None:
    """The rules stored on a dataset (None if it has none, or does not exist yet)."""
    row = conn.execute(
        "SELECT rules FROM dsa_core.datasets WHERE owner = %s AND name = %s", (owner, name)
    ).fetchone()
    if row is None or not row["rules"]:
        return None
    return Rules.model_validate(row["rules"])


def set_dataset_rules(conn: db.Conn, owner: str, name: str, rules: Rules | None) -> Rules | None:
    """Store (or, with None, drop) a dataset's rules; a dataset named for the first time is
    created empty, so its rules hold from its first import on."""
    datasets.check_name(name)
    stored = rules.model_dump(exclude_none=True) if rules else {}
    conn.execute(
        "INSERT INTO dsa_core.datasets (owner, name, rules) VALUES (%s, %s, %s) "
        "ON CONFLICT (owner, name) DO UPDATE SET rules = EXCLUDED.rules, updated_at = now()",
        (owner, name, Jsonb(stored)),
    )
    return rules


def get_dataset_rules(conn: db.Conn, owner: str, name: str) -> Rules:
    datasets.get(conn, owner, name)  # 404 for a dataset that does not exist
    return dataset_rules(conn, owner, name) or Rules()


def check_upload(rules: Rules, *, size: int | None, fmt: str | None, filename: str) -> None:
    """What can be refused before any byte is uploaded: the declared size and format."""
    if size is not None and rules.max_file_bytes is not None and size > rules.max_file_bytes:
        raise PayloadTooLarge(
            f"{filename} is {size:,} bytes; the rules of this import allow at most "
            f"{rules.max_file_bytes:,} (max_file_bytes)."
        )
    if fmt is not None and rules.allowed_formats and fmt not in rules.allowed_formats:
        raise UnsupportedFormat(
            f"{filename} is {fmt}; the rules of this import allow only "
            f"{', '.join(rules.allowed_formats)} (allowed_formats)."
        )


def check_columns(rules: Rules, columns: Sequence[str], filename: str) -> None:
    """Required columns, and declared columns that may not be empty, must be in the file."""
    wanted = list(rules.required_columns or [])
    wanted += [
        c for c, rule in (rules.columns or {}).items() if not rule.nullable and c not in wanted
    ]
    missing = [c for c in wanted if c not in columns]
    if missing:
        raise MalformedFile(
            f"{filename}: required column(s) {', '.join(map(repr, missing))} are not in the "
            f"file (its columns: {', '.join(map(repr, list(columns)[:20]))}).",
            file=filename,
            line=1,
        )


def violations_query(
    source: sql.Composable, columns: Sequence[str], rules: Rules
) -> sql.Composed | None:
    """SELECT ord, column, value, reason of the values in ``source`` (ord, c1..cN) that break
    the rules' column types or nullability; None if no column is checked. The first broken
    column of a row is the one named."""
    checks: list[sql.Composable] = []
    for name, rule in rules.checked_columns().items():
        if name not in columns:
            continue
        ident = sql.Identifier(f"c{columns.index(name) + 1}")
        conditions = []
        if not rule.nullable:
            conditions.append(
                sql.SQL("WHEN {e} THEN {reason}").format(
                    e=schema.is_empty(ident),
                    reason=sql.Literal(f"no value in column {name!r}, which may not be empty"),
                )
            )
        if rule.type != "text":
            conditions.append(
                sql.SQL("WHEN NOT {e} AND NOT {fits} THEN {reason}").format(
                    e=schema.is_empty(ident),
                    fits=schema.fits(ident, rule.type),
                    reason=sql.Literal(f"not a valid {rule.type} for column {name!r}"),
                )
            )
        checks.append(
            sql.SQL("SELECT ord, {n} AS col, {v} AS value, CASE {c} END AS reason FROM {s}").format(
                n=sql.Literal(name), v=ident, c=sql.SQL(" ").join(conditions), s=source
            )
        )
    if not checks:
        return None
    return sql.SQL(
        "SELECT DISTINCT ON (ord) ord, col, value, reason FROM ({}) v "
        "WHERE reason IS NOT NULL ORDER BY ord"
    ).format(sql.SQL(" UNION ALL ").join(checks))


def check_sample(
    conn: db.Conn, rules: Rules, columns: Sequence[str], sampled: Sampled, filename: str
) -> int:
    """Check the first records against the column rules (and that they parse) and fail fast,
    before any range loads, if more of them are bad than the rules tolerate. Returns how many
    records were checked."""
    records, broken = sampled
    checked = len(records) + len(broken)
    bad: list[tuple[int, str]] = [(n, f"{where}: {reason}") for n, where, reason in broken]
    if records and rules.checked_columns():
        bad += _rule_breaks(conn, rules, columns, records)
    tolerated = rules.tolerance(checked)
    if len(bad) > tolerated:
        bad.sort()
        raise RulesBroken(
            f"{filename}: {len(bad):,} of the first {checked:,} records break the rules or "
            f"cannot be read (tolerated: {tolerated:,}); the first is {bad[0][1]}. Is this the "
            "right file? Nothing was imported.",
            file=filename,
        )
    return checked


def _rule_breaks(
    conn: db.Conn,
    rules: Rules,
    columns: Sequence[str],
    records: Sequence[tuple[int, str, Sequence[str | None]]],
) -> list[tuple[int, str]]:
    """The sampled records whose values break the column rules, judged by the very SQL the
    load's ranges use."""
    table = sql.Identifier("sluiceway_sample")
    with conn.transaction():
        conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(table))
        conn.execute(
            sql.SQL("CREATE TEMP TABLE {} (ord bigint, {}) ON COMMIT DROP").format(
                table,
                sql.SQL(", ").join(
                    sql.SQL("{} text").format(sql.Identifier(f"c{i}"))
                    for i in range(1, len(columns) + 1)
                ),
            )
        )
        with conn.cursor().copy(sql.SQL("COPY {} FROM STDIN").format(table)) as copy:
            for ord_, (_, _, values) in enumerate(records, 1):
                copy.write_row([ord_, *values])
        query = violations_query(table, columns, rules)
        assert query is not None
        found = conn.execute(query).fetchall()
    out = []
    for v in found:
        n, where, _ = records[v["ord"] - 1]
        value = "no value" if v["value"] in (None, "") else repr(truncate(v["value"], 80))
        out.append((n, f"{where}, {value}: {v['reason']}"))
    return out


def truncate(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[:limit] + "..."


def effective(conn: db.Conn, owner: str, dataset: str, options: dict[str, Any]) -> Rules:
    """The import's rules over the dataset's."""
    own = Rules.model_validate(options.get("rules") or {})
    return own.over(dataset_rules(conn, owner, dataset))


def require_dataset(conn: db.Conn, owner: str, name: str) -> None:
    if not conn.execute(
        "SELECT 1 FROM dsa_core.datasets WHERE owner = %s AND name = %s", (owner, name)
    ).fetchone():
        raise NotFound(f"No dataset {name!r}.")


def check_unique_key(rules: Rules, columns: Sequence[str], filename: str) -> None:
    missing = [c for c in rules.unique_key or [] if c not in columns]
    if missing:
        raise InvalidRequest(
            f"{filename}: unique_key column(s) {', '.join(map(repr, missing))} are not in the file."
        )


# (sample index, where, values) of the records that parse; (index, where, reason) of the rest
Sampled = tuple[list[tuple[int, str, list[str | None]]], list[tuple[int, str, str]]]


def sample_records(
    fmt: str,
    buf: bytes,
    *,
    columns: Sequence[str],
    start: int,
    first_line: int,
    complete: bool,
    limit: int,
    delimiter: str = ",",
    encoding: str = "utf-8",
) -> Sampled:
    """The first ``limit`` records of ``buf`` (file bytes from ``start``, where the data
    starts): (where, values) of those that parse, and (where, what is wrong) of those that do
    not. A record the buffer cuts short is left out unless ``complete``."""
    good: list[tuple[int, str, list[str | None]]] = []
    broken: list[tuple[int, str, str]] = []
    if fmt in ("csv", "tsv"):
        pos, line = 0, first_line
        while pos < len(buf) and len(good) + len(broken) < limit:
            end = csvsplit.first_record_end(buf, pos)
            if end is None and not complete:
                break
            record = buf[pos:] if end is None else buf[pos : end + 1]
            where = f"line {line:,} (byte {start + pos:,})"
            problem = csvsplit.find_bad_record(
                record,
                base_offset=start + pos,
                first_line=line,
                column_count=len(columns),
                delimiter=delimiter,
                encoding=encoding,
            )
            if problem is not None:
                broken.append((len(good) + len(broken), where, strip_where(problem.message)))
            else:
                text = record.decode(encoding)
                fields = next(csv.reader(io.StringIO(text, newline=""), delimiter=delimiter))
                good.append((len(good) + len(broken), where, [f or None for f in fields]))
            line += record.count(b"\n")
            pos += len(record)
    elif fmt == "jsonl":
        index = {c: i for i, c in enumerate(columns)}
        lines = buf.split(b"\n")
        if not complete:
            lines = lines[:-1]
        offset, n = start, first_line
        for raw in lines:
            if len(good) + len(broken) >= limit:
                break
            if raw.strip():
                where = f"line {n:,} (byte {offset:,})"
                try:
                    record = jsonsplit.parse_line(raw + b"\n", n, offset)
                    values = jsonsplit.record_values(record, index)
                    good.append((len(good) + len(broken), where, values))
                except MalformedFile as exc:
                    broken.append((len(good) + len(broken), where, strip_where(exc.message)))
            offset += len(raw) + 1
            n += 1
    elif fmt == "json":
        index = {c: i for i, c in enumerate(columns)}
        for n, record in enumerate(jsonsplit.sample_array(buf, complete=complete, limit=limit), 1):
            where = f"record {n:,}"
            try:
                good.append((n, where, jsonsplit.record_values(record, index)))
            except MalformedFile as exc:
                broken.append((n, where, strip_where(exc.message)))
    return good, broken


_WHERE = re.compile(r"^(line [0-9,]+ \(byte [0-9,]+\)|line [0-9,]+|record [0-9,]+)[:,]? *")


def strip_where(message: str) -> str:
    """A parse error's message without its own "line N (byte B)": the caller says where."""
    return _WHERE.sub("", message, count=1)
