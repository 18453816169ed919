"""Rejected rows: records that break the rules or cannot be parsed, reported instead of loaded.

Each range writes its own report object (``work/<job>/rejected/<range>.jsonl``) in the same
attempt that loads its good rows, under a key fixed by the range: a retried range overwrites
its object, so no line is ever reported twice. The commit (or the failure path) joins the
ranges' objects, in file order, behind one summary line into the job's report, next to the
upload under the reports prefix (``reports/<owner>/<upload id>/rejected-<job>.jsonl``, outside
``uploads/``, whose objects start imports).

A report line: ``line`` and ``byte_offset`` (CSV, JSON Lines), ``record`` (the record's number
in its range, for a JSON array), or ``row_id`` (a workbook's ``sheet:row``); ``column`` (None
for a record that cannot be parsed), ``reason``, and ``raw``, the record's text truncated to
``RAW_CHARS`` characters.
"""

from __future__ import annotations

import json
import uuid
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import psycopg
from psycopg import sql
from smart_open import open as smart_open

from . import csvsplit, db, jsonsplit, readers, storage
from .errors import MalformedFile
from .plan import ChunkItem, _read, source_object
from .rules import Rules, strip_where, violations_query
from .settings import Settings

RAW_CHARS = 1000
WRITE_BYTES = 1024 * 1024


@dataclass(frozen=True)
class Record:
    """One CSV record of a range: where it is, its bytes, and what is wrong with it, if anything."""

    line: int
    offset: int
    raw: bytes
    problem: str | None


@dataclass
class Filtered:
    """A CSV range re-read in Python: its good records (what COPY gets) and its bad ones."""

    good: list[Record] = field(default_factory=list)
    bad: list[Record] = field(default_factory=list)

    def write_good(self, copy: psycopg.Copy) -> None:
        pending: list[bytes] = []
        size = 0
        for record in self.good:
            pending.append(record.raw)
            size += len(record.raw)
            if size >= WRITE_BYTES:
                copy.write(b"".join(pending))
                pending, size = [], 0
        if pending:
            copy.write(b"".join(pending))


def _text(raw: bytes, encoding: str) -> str:
    text = raw.decode(encoding, errors="replace").replace("\x00", "\\0")
    return text if len(text) <= RAW_CHARS else text[:RAW_CHARS] + "..."


def csv_records(
    buf: bytes,
    *,
    base_offset: int,
    first_line: int,
    column_count: int,
    delimiter: str,
    encoding: str,
    check: bool,
) -> list[Record]:
    """The records of a CSV range (file bytes from ``base_offset``), each checked if ``check``
    (the checks that explain a failed COPY: encoding, NUL, field count, an unclosed quote,
    and a line ending other than the range's usual one, which COPY would refuse)."""
    spans: list[tuple[int, int, bytes]] = []
    pos, line = 0, first_line
    while pos < len(buf):
        end = csvsplit.first_record_end(buf, pos)
        raw = buf[pos:] if end is None else buf[pos : end + 1]
        spans.append((line, pos, raw))
        line += raw.count(b"\n")
        pos += len(raw)
    if not check:
        return [Record(n, base_offset + p, raw, None) for n, p, raw in spans]
    endings = Counter(_ending(raw) for _, _, raw in spans)
    endings.pop(None, None)
    usual = endings.most_common(1)[0][0] if endings else None
    names = {b"\r\n": "CR LF", b"\n": "LF"}
    out: list[Record] = []
    for n, p, raw in spans:
        found = csvsplit.find_bad_record(
            raw,
            base_offset=base_offset + p,
            first_line=n,
            column_count=column_count,
            delimiter=delimiter,
            encoding=encoding,
        )
        problem = found.message if found is not None else None
        this = _ending(raw)
        if problem is None and this is not None and usual is not None and this != usual:
            problem = f"ends with {names[this]} but the other lines with {names[usual]}"
        out.append(Record(n, base_offset + p, raw, problem))
    return out


def _ending(raw: bytes) -> bytes | None:
    if raw.endswith(b"\r\n"):
        return b"\r\n"
    return b"\n" if raw.endswith(b"\n") else None


def split_csv_range(job: dict[str, Any], chunk: dict[str, Any], settings: Settings) -> Filtered:
    """Re-read a CSV range that COPY refused and part its good records from its bad ones."""
    cp = job["checkpoint"]
    bucket, key = source_object(job)
    buf = _read(bucket, key, chunk["start_byte"], chunk["end_byte"], settings)
    filtered = Filtered()
    for record in csv_records(
        buf,
        base_offset=chunk["start_byte"],
        first_line=chunk["first_line"],
        column_count=len(cp["columns"]),
        delimiter=cp.get("delimiter") or ",",
        encoding=cp.get("encoding") or "utf-8",
        check=True,
    ):
        (filtered.bad if record.problem else filtered.good).append(record)
    return filtered


def copy_jsonl(copy: psycopg.Copy, src: readers.Source) -> Filtered:
    """Write the JSON Lines records of the range to COPY, setting aside (not raising on) each
    line that is not a JSON object of the file's columns: a tolerant import's reader."""
    index = src.index()
    filtered = Filtered()
    offset = src.start
    for n, line in enumerate(readers._lines(src.pieces()), src.first_line):
        if line.strip():
            try:
                record = jsonsplit.parse_line(line, n, offset)
                copy.write_row(jsonsplit.record_values(record, index))
            except MalformedFile as exc:
                filtered.bad.append(Record(n, offset, line.rstrip(b"\r\n"), exc.message))
        offset += len(line)
    return filtered


def tolerant(checkpoint: dict[str, Any]) -> bool:
    """The import tolerates some rejected rows (then a bad record is reported, not fatal)."""
    return Rules.model_validate(checkpoint.get("rules") or {}).tolerant()


def range_key(job_id: uuid.UUID, chunk_no: int, settings: Settings) -> str:
    return f"{settings.storage.work_prefix}{job_id}/rejected/{chunk_no:06d}.jsonl"


def report_key(params: dict[str, Any], job_id: uuid.UUID | str, settings: Settings) -> str:
    """The job's report: beside its upload, under the reports prefix."""
    upload_key: str = params["key"]
    rest = upload_key.removeprefix(settings.storage.uploads_prefix)
    folder = rest.rsplit("/", 1)[0] if "/" in rest else rest
    return f"{settings.storage.reports_prefix}{folder}/rejected-{job_id}.jsonl"


def record_range(
    conn: db.Conn,
    raw_table: sql.Identifier,
    *,
    item: ChunkItem,
    job: dict[str, Any],
    chunk: dict[str, Any],
    start: int,
    end: int,
    filtered: Filtered | None,
    settings: Settings,
) -> int:
    """Take the rows that break the rules' column types out of the range's raw table, write
    them and the records that could not be parsed to the range's report, and record the count.
    Returns how many rows the range rejected."""
    cp = job["checkpoint"]
    columns: list[str] = cp["columns"]
    encoding = cp.get("encoding") or "utf-8"
    rules = Rules.model_validate(cp.get("rules") or {})
    lines: list[dict[str, Any]] = [
        {
            "line": r.line,
            "byte_offset": r.offset,
            "column": None,
            "reason": _reason(r.problem or ""),
            "raw": _text(r.raw, encoding),
        }
        for r in (filtered.bad if filtered else [])
    ]
    query = violations_query(raw_table, columns, rules)
    breaks = conn.execute(query).fetchall() if query is not None else []
    if breaks:
        ords = [b["ord"] for b in breaks]
        lines += _rule_lines(conn, raw_table, breaks, job, chunk, start, end, filtered, settings)
        conn.execute(sql.SQL("DELETE FROM {} WHERE ord = ANY(%s)").format(raw_table), (ords,))
    lines.sort(key=lambda x: (x.get("byte_offset") or 0, x.get("record") or 0))
    key = range_key(item.job_id, item.chunk_no, settings) if lines else None
    if key is not None:
        body = "".join(json.dumps(x, ensure_ascii=False) + "\n" for x in lines).encode()
        storage.s3_client(settings).put_object(
            Bucket=settings.storage.bucket, Key=key, Body=body, ContentType="application/x-ndjson"
        )
    conn.execute(
        "UPDATE dsa_jobs.import_chunks SET rejected_count = %s, rejected_key = %s "
        "WHERE job_id = %s AND chunk_no = %s",
        (len(lines), key, item.job_id, item.chunk_no),
    )
    return len(lines)


def _reason(message: str) -> str:
    """A parse error without its own "line N (byte B)": the report has its own fields."""
    return strip_where(message)


def _rule_lines(
    conn: db.Conn,
    raw_table: sql.Identifier,
    breaks: Sequence[dict[str, Any]],
    job: dict[str, Any],
    chunk: dict[str, Any],
    start: int,
    end: int,
    filtered: Filtered | None,
    settings: Settings,
) -> list[dict[str, Any]]:
    """Report lines of the rows whose values break the rules: where each row is in the file."""
    cp = job["checkpoint"]
    columns: list[str] = cp["columns"]
    fmt = cp.get("format") or "csv"
    encoding = cp.get("encoding") or "utf-8"
    wanted = {b["ord"] for b in breaks}
    where: dict[int, dict[str, Any]] = {}
    if fmt in ("csv", "tsv"):
        if filtered is not None:
            records = filtered.good
        else:
            bucket, key = source_object(job)
            records = csv_records(
                _read(bucket, key, start, end, settings),
                base_offset=start,
                first_line=chunk["first_line"],
                column_count=len(columns),
                delimiter=cp.get("delimiter") or ",",
                encoding=encoding,
                check=False,
            )
        for n in wanted:
            r = records[n - 1]
            where[n] = {"line": r.line, "byte_offset": r.offset, "raw": _text(r.raw, encoding)}
    elif fmt == "jsonl":
        bucket, key = source_object(job)
        buf = _read(bucket, key, start, end, settings)
        offset, line, n = start, chunk["first_line"], 0
        skipped = {r.offset for r in filtered.bad} if filtered else set()
        for text in buf.split(b"\n"):
            if text.strip() and offset not in skipped:
                n += 1
                if n in wanted:
                    where[n] = {
                        "line": line,
                        "byte_offset": offset,
                        "raw": _text(text, "utf-8"),
                    }
            offset += len(text) + 1
            line += 1
    if len(where) < len(wanted):  # a JSON array's records, a workbook's rows
        rid = sql.SQL(", rid") if fmt == "xlsx" else sql.SQL("")
        rows = conn.execute(
            sql.SQL("SELECT ord, {cols}{rid} FROM {t} WHERE ord = ANY(%s)").format(
                cols=sql.SQL(", ").join(
                    sql.Identifier(f"c{i}") for i in range(1, len(columns) + 1)
                ),
                rid=rid,
                t=raw_table,
            ),
            ([n for n in wanted if n not in where],),
        ).fetchall()
        for r in rows:
            values = {c: r[f"c{i}"] for i, c in enumerate(columns, 1)}
            place: dict[str, Any] = (
                {"row_id": r["rid"]}
                if fmt == "xlsx"
                else {"record": r["ord"], "byte_offset": start}
            )
            place["raw"] = _text(json.dumps(values, ensure_ascii=False).encode(), "utf-8")
            where[r["ord"]] = place
    return [{**where[b["ord"]], "column": b["col"], "reason": _value_reason(b)} for b in breaks]


def _value_reason(b: dict[str, Any]) -> str:
    value = b["value"]
    shown = (
        "no value" if value in (None, "") else repr(value[:80] + ("..." if len(value) > 80 else ""))
    )
    return f"{shown}: {b['reason']}"


# -- the job's report: the ranges' objects joined at commit (or on failure) ----------------------


@dataclass(frozen=True)
class Totals:
    accepted: int
    rejected: int
    keys: list[str]


def totals(conn: db.Conn, job_id: uuid.UUID) -> Totals:
    row = conn.execute(
        "SELECT coalesce(sum(row_count) FILTER (WHERE status = 'loaded'), 0) AS accepted, "
        "coalesce(sum(rejected_count) FILTER (WHERE status = 'loaded'), 0) AS rejected, "
        "coalesce(array_agg(rejected_key ORDER BY chunk_no) FILTER "
        "(WHERE status = 'loaded' AND rejected_key IS NOT NULL), '{}') AS keys "
        "FROM dsa_jobs.import_chunks WHERE job_id = %s",
        (job_id,),
    ).fetchone()
    assert row is not None
    return Totals(int(row["accepted"]), int(row["rejected"]), list(row["keys"]))


def first_line(keys: Sequence[str], settings: Settings) -> dict[str, Any] | None:
    """The first rejected row of the job (the first line of its first range's report)."""
    if not keys:
        return None
    body = storage.s3_client(settings).get_object(Bucket=settings.storage.bucket, Key=keys[0])
    head = body["Body"].read().split(b"\n", 1)[0]
    return json.loads(head) if head else None


def describe(line: dict[str, Any] | None) -> str:
    if not line:
        return ""
    if line.get("line") is not None:
        where = f"line {line['line']:,} (byte {line['byte_offset']:,})"
    elif line.get("row_id"):
        where = f"row {line['row_id']}"
    else:
        where = f"record {line.get('record')} after byte {line.get('byte_offset')}"
    column = f", column {line['column']!r}" if line.get("column") else ""
    return f"{where}{column}: {line['reason']}"


def write_report(
    job_id: uuid.UUID,
    params: dict[str, Any],
    found: Totals,
    summary: dict[str, Any],
    settings: Settings,
) -> str:
    """Join the ranges' reports, in file order, behind one summary line; returns its key."""
    key = report_key(params, job_id, settings)
    client = storage.s3_client(settings)
    bucket = settings.storage.bucket
    with smart_open(
        f"s3://{bucket}/{key}", "wb", transport_params=storage.smart_open_params(settings)
    ) as out:
        out.write((json.dumps(summary, ensure_ascii=False) + "\n").encode())
        for part in found.keys:
            body = client.get_object(Bucket=bucket, Key=part)["Body"]
            for block in body.iter_chunks(1 << 20):
                out.write(block)
    return key


def presigned_url(key: str, settings: Settings) -> str:
    return storage.presign("get_object", {"Bucket": settings.storage.bucket, "Key": key}, settings)
