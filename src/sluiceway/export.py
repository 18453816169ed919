"""Stage 4, export: a commit's rows, in logical order, streamed into an S3 object.

Rows are read from PostgreSQL as they are written: CSV through ``COPY ... TO STDOUT``, JSON
through a server-side cursor; smart-open uploads the stream as S3 multipart parts, so no
export is ever held whole in memory, and a failure aborts the multipart upload.
"""

from __future__ import annotations

import csv
import io
import json
import time
from typing import Any, Literal

from psycopg import sql
from pydantic import BaseModel
from smart_open import open as smart_open

from . import datasets, db, jobs, storage
from .errors import InvalidRequest
from .settings import Settings, get_settings

Format = Literal["csv", "json", "jsonl"]
CONTENT_TYPES = {"csv": "text/csv", "json": "application/json", "jsonl": "application/x-ndjson"}


class ExportRequest(BaseModel):
    format: Format = "csv"
    commit: str | None = None


class ExportResult(BaseModel):
    job_id: str
    dataset: str
    commit_id: str
    format: Format
    rows: int
    bytes: int
    key: str
    url: str
    seconds: float


class _Counter:
    """A binary file wrapper that counts the bytes written through it."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.count = 0

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.count += len(data)
        self.inner.write(data)


def export_commit(
    conn: db.Conn, owner: str, name: str, request: ExportRequest, settings: Settings | None = None
) -> ExportResult:
    """Export one commit (default: what ``main`` points to now) and return a download URL."""
    settings = settings or get_settings()
    started = time.perf_counter()
    dataset, commit = datasets.resolve_commit(conn, owner, name, request.commit)
    if request.format not in CONTENT_TYPES:
        raise InvalidRequest(f"Unknown export format {request.format!r}; use csv, json or jsonl.")
    job_id = jobs.create(
        conn,
        "export",
        owner,
        {"dataset": name, "commit_id": commit.commit_id, "format": request.format},
    )
    jobs.claim(conn, job_id, {"stage": "exporting", "total_rows": commit.row_count})
    key = f"{settings.storage.exports_prefix}{owner}/{job_id}/{name}.{request.format}"
    uri = f"s3://{settings.storage.bucket}/{key}"
    transport = {
        **storage.smart_open_params(settings),
        "min_part_size": settings.storage.min_part_bytes,
        "client_kwargs": {
            "S3.Client.create_multipart_upload": {"ContentType": CONTENT_TYPES[request.format]}
        },
    }
    columns = commit.columns
    commit_key = commit.commit_id
    try:
        with smart_open(uri, "wb", transport_params=transport) as raw:
            out = _Counter(raw)
            if request.format == "csv":
                _write_csv(conn, commit_key, columns, out)
            else:
                _write_json(conn, commit_key, columns, out, array=request.format == "json")
    except Exception as exc:
        jobs.fail(conn, job_id, f"Export failed: {exc}")
        raise
    summary = {
        "dataset": name,
        "commit_id": commit.commit_id,
        "format": request.format,
        "rows": commit.row_count,
        "bytes": out.count,
        "key": key,
    }
    jobs.add_progress(conn, job_id, bytes_done=out.count, rows_done=commit.row_count)
    jobs.complete(conn, job_id, summary, dataset.dataset_id)
    url = storage.presign("get_object", {"Bucket": settings.storage.bucket, "Key": key}, settings)
    return ExportResult(
        job_id=str(job_id),
        dataset=name,
        commit_id=commit.commit_id,
        format=request.format,
        rows=commit.row_count,
        bytes=out.count,
        key=key,
        url=url,
        seconds=round(time.perf_counter() - started, 3),
    )


_ROWS = sql.SQL(
    "FROM dsa_core.commit_row_range({commit}, 1, NULL) r "
    "JOIN dsa_core.row_store s ON s.row_hash = r.row_hash ORDER BY r.row_number"
)


def _positions(columns: list[str]) -> list[int]:
    """1-based index of each column (in the commit's order) within the stored, sorted values."""
    ranks = {name: i + 1 for i, name in enumerate(sorted(columns))}
    return [ranks[c] for c in columns]


def _write_csv(conn: db.Conn, commit_key: str, columns: list[str], out: _Counter) -> None:
    if not columns:
        return
    # The header is written here, not by COPY's HEADER: column names can be longer than
    # PostgreSQL's 63-byte identifiers, and must come back exactly as they were imported.
    header = io.StringIO()
    csv.writer(header, lineterminator="\n").writerow(columns)
    out.write(header.getvalue().encode())
    fields = sql.SQL(", ").join(
        sql.SQL("s.vals[{}]").format(sql.Literal(i)) for i in _positions(columns)
    )
    query = sql.SQL("COPY (SELECT {fields} {rows}) TO STDOUT (FORMAT csv)").format(
        fields=fields, rows=_ROWS.format(commit=sql.Literal(commit_key))
    )
    with conn.cursor() as cur, cur.copy(query) as copy:
        for block in copy:
            out.write(block)


def _write_json(
    conn: db.Conn, commit_key: str, columns: list[str], out: _Counter, *, array: bool
) -> None:
    query = sql.SQL("SELECT s.vals {rows}").format(
        rows=_ROWS.format(commit=sql.Literal(commit_key))
    )
    positions = [i - 1 for i in _positions(columns)]
    first = True
    if array:
        out.write(b"[")
    with conn.transaction(), conn.cursor(name="sluiceway_export") as cur:
        cur.itersize = 10_000
        cur.execute(query)
        buffer: list[str] = []
        for row in cur:
            vals = row["vals"]
            text = json.dumps(
                {c: vals[i] for c, i in zip(columns, positions, strict=True)}, ensure_ascii=False
            )
            buffer.append(text if first or not array else "," + text)
            if not array:
                buffer[-1] += "\n"
            first = False
            if len(buffer) >= 10_000:
                out.write("".join(buffer).encode())
                buffer.clear()
        if buffer:
            out.write("".join(buffer).encode())
    if array:
        out.write(b"]")
