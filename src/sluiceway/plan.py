"""Stage 2a, plan: from an object-created event to the exact byte ranges the Map loads.

``plan_import`` (state "Plan byte ranges") claims the job, reads the header and cuts the object
into raw ranges; ``scan_chunk`` (Map "Count quotes in each range") scans one raw range;
``resolve_chunks`` (state "Fix record boundaries") folds the scans into ranges of whole
records. The range lists travel through S3 (the Map's ItemReader), never in the payload.
"""

from __future__ import annotations

import contextlib
import json
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, NamedTuple
from xml.etree.ElementTree import ParseError

import psycopg
from botocore.exceptions import BotoCoreError, ClientError
from psycopg.types.json import Jsonb
from pydantic import BaseModel, ConfigDict

from . import csvsplit, db, faults, formats, jobs, jsonsplit, rules, storage, unpack, xlsx
from .errors import (
    InvalidRequest,
    MalformedFile,
    NotFound,
    PayloadTooLarge,
    RangeFailed,
    SizeMismatch,
    SluicewayError,
    StorageUnavailable,
    UnsupportedFormat,
)
from .settings import MiB, Settings, get_settings


class S3Object(BaseModel):
    model_config = ConfigDict(extra="ignore")
    key: str
    size: int | None = None


class S3Bucket(BaseModel):
    model_config = ConfigDict(extra="ignore")
    name: str


class ObjectCreatedDetail(BaseModel):
    model_config = ConfigDict(extra="ignore")
    bucket: S3Bucket
    object: S3Object


class ObjectCreatedEvent(BaseModel):
    """The EventBridge event S3 sends when an object is created."""

    model_config = ConfigDict(extra="ignore", populate_by_name=True)
    detail: ObjectCreatedDetail


class PlanOutput(BaseModel):
    """What the state machine carries between states: ids and S3 keys, never row data."""

    duplicate: bool = False
    job_id: str | None = None
    work_bucket: str | None = None
    ranges_key: str | None = None
    loads_key: str | None = None
    max_concurrency: int = 1


def _ended_early(bucket: str, key: str, got_to: int, end: int) -> MalformedFile:
    """An object shorter than the range asked of it: replaced after it was planned."""
    return MalformedFile(f"s3://{bucket}/{key} ended at byte {got_to:,}, before {end:,}.")


def _read_error(
    bucket: str, key: str, start: int, end: int, exc: ClientError | BotoCoreError
) -> SluicewayError:
    """A failed ranged GET: an object replaced since it was planned (412, see
    storage.as_planned) is a conflict, and a range that starts past the object's end (S3's
    416 ``InvalidRange``) the file's fault; anything else is the store's."""
    if storage.precondition_failed(exc):
        return storage.changed(bucket, key)
    if isinstance(exc, ClientError) and exc.response.get("Error", {}).get("Code") in (
        "InvalidRange",
        "416",
    ):
        return MalformedFile(
            f"s3://{bucket}/{key} is shorter than planned: it ends before byte {start:,}."
        )
    return StorageUnavailable(f"Cannot read s3://{bucket}/{key} [{start:,}, {end:,}): {exc}")


def _read(bucket: str, key: str, start: int, end: int, settings: Settings) -> bytes:
    """Bytes [start, end) of an object (one ranged GET), every one of them: an object that
    ends early is ``MalformedFile``, as in :func:`read_pieces`."""
    if end <= start:
        return b""
    try:
        body = storage.s3_client(settings).get_object(
            Bucket=bucket,
            Key=key,
            Range=f"bytes={start}-{end - 1}",
            **storage.if_match(bucket, key),
        )["Body"]
        data: bytes = body.read()
    except (ClientError, BotoCoreError) as exc:
        raise _read_error(bucket, key, start, end, exc) from exc
    if len(data) < end - start:
        raise _ended_early(bucket, key, start + len(data), end)
    return data[: end - start]


def read_pieces(
    bucket: str, key: str, start: int, end: int, settings: Settings, piece_bytes: int = MiB
) -> Iterator[bytes]:
    """Bytes [start, end) of an object as they arrive, at most ``piece_bytes`` at a time,
    without holding the range in memory.

    One GET of exactly the range: an open-ended ``bytes=start-`` (what a seekable reader
    sends) makes the store send on to the end of the object until the reader hangs up, and
    moto's local S3 copies all of it first (bench/README.md: the stack process's CPU).
    """
    if end <= start:
        return
    remaining = end - start
    try:
        body = storage.s3_client(settings).get_object(
            Bucket=bucket,
            Key=key,
            Range=f"bytes={start}-{end - 1}",
            **storage.if_match(bucket, key),
        )["Body"]
        for piece in body.iter_chunks(piece_bytes):
            yield piece[:remaining]
            remaining -= min(len(piece), remaining)
            if not remaining:
                break
    except (ClientError, BotoCoreError) as exc:
        raise _read_error(bucket, key, start, end, exc) from exc
    if remaining:
        raise _ended_early(bucket, key, end - remaining, end)


def _put_json(bucket: str, key: str, value: Any, settings: Settings) -> None:
    storage.work_client(settings).put_object(
        Bucket=bucket, Key=key, Body=json.dumps(value).encode(), ContentType="application/json"
    )


def plan_import(event: dict[str, Any], settings: Settings | None = None) -> dict[str, Any]:
    """Claim the upload's job, read the CSV header, and cut the object into raw byte ranges."""
    settings = settings or get_settings()
    # The state machine passes {"event": <S3 event>, "execution": <its execution id>}.
    execution = event.get("execution") if "event" in event else None
    created = ObjectCreatedEvent.model_validate(event.get("event", event))
    bucket, key = created.detail.bucket.name, created.detail.object.key
    conn = db.shared_connection(settings)
    upload = conn.execute(
        "SELECT upload_id, job_id, options, filename, owner, dataset_name, size_bytes "
        "FROM dsa_jobs.uploads WHERE bucket = %s AND object_key = %s",
        (bucket, key),
    ).fetchone()
    if upload is None:
        raise NotFound(
            f"s3://{bucket}/{key} was not uploaded through sluiceway; nothing to import."
        )
    job_id: uuid.UUID = upload["job_id"]
    try:
        head = storage.s3_client(settings).head_object(Bucket=bucket, Key=key)
    except (ClientError, BotoCoreError) as exc:
        raise StorageUnavailable(f"Cannot read s3://{bucket}/{key}: {exc}") from exc
    size = int(head["ContentLength"])
    if not jobs.claim(conn, job_id, {"total_bytes": size, "stage": "planning"}, execution):
        return PlanOutput(duplicate=True, job_id=str(job_id)).model_dump()

    # Every read of the object from here on, and every range's, asks for this version of it.
    etag = str(head.get("ETag") or "") or None
    with storage.as_planned(bucket, key, etag):
        return _plan(conn, upload, bucket, key, size, etag, settings)


def _plan(
    conn: db.Conn,
    upload: dict[str, Any],
    bucket: str,
    key: str,
    size: int,
    etag: str | None,
    settings: Settings,
) -> dict[str, Any]:
    """Read the claimed upload's layout and cut it into raw byte ranges (plan_import)."""
    job_id: uuid.UUID = upload["job_id"]
    filename = upload["filename"]
    effective = rules.effective(conn, upload["owner"], upload["dataset_name"], upload["options"])
    _check_size(upload, size, effective, settings)
    try:
        src = _source(bucket, key, size, etag, job_id, filename, upload["options"], settings)
        if src.source.format == "jsonl":  # its columns: the keys of the lines that parse
            layout = _jsonl_layout(src, filename, settings, tolerant=effective.tolerant())
        else:
            layout = _LAYOUTS[src.source.format](src, filename, settings)
    except (MalformedFile, PayloadTooLarge, UnsupportedFormat) as exc:
        if exc.message.startswith(filename):
            raise
        raise type(exc)(f"{filename}: {exc.message}", **exc.details) from exc
    header = layout
    data_end = layout.data_end
    sampled = _check_rules(effective, src, layout, filename, conn, settings)
    key_columns = _key_columns(upload["options"], header.columns, upload["filename"])
    chunk_bytes = int(upload["options"].get("chunk_bytes") or settings.imports.chunk_bytes)
    if layout.sheets is not None:  # one item per sheet: a zip is not cut by byte range
        raw = [(0, 0)] * max(len(layout.sheets), 1)
    else:
        raw = csvsplit.split_ranges(data_end, chunk_bytes, settings.imports.map_concurrency)
    if len(raw) > 100_000:
        raise InvalidRequest(
            f"{len(raw):,} ranges of {chunk_bytes:,} bytes is too many; use a larger chunk size."
        )

    with conn.transaction():
        conn.execute("DELETE FROM dsa_jobs.import_chunks WHERE job_id = %s", (job_id,))  # a retry
        column_set_id = _column_set(conn, header.columns)
        key_row = conn.execute("SELECT nextval('dsa_core.commit_key_seq') AS k").fetchone()
        assert key_row is not None
        with conn.cursor().copy(
            "COPY dsa_jobs.import_chunks (job_id, chunk_no, raw_start, raw_end) FROM STDIN"
        ) as copy:
            for n, (a, b) in enumerate(raw):
                copy.write_row((job_id, n, a, b))
        # the header and any trailing blank lines are done with: count them as processed
        jobs.add_progress(conn, job_id, bytes_done=header.data_start + src.size - data_end)
        jobs.update(
            conn,
            job_id,
            progress={"stage": "scanning", "chunks_total": len(raw)},
            checkpoint={
                "stage": "planned",
                "columns": header.columns,
                "column_set_id": column_set_id,
                "commit_key": int(key_row["k"]),
                "data_start": header.data_start,
                "data_end": data_end,
                "header_lines": layout.header_lines,
                "chunk_bytes": chunk_bytes,
                "key_columns": key_columns,
                "format": src.source.format,
                "delimiter": src.source.delimiter,
                "encoding": src.source.encoding,
                "source_bucket": src.bucket,
                "source_key": src.key,
                "source_etag": src.etag,
                "sheets": layout.sheets,
                "rules": effective.model_dump(exclude_none=True),
                "sampled_records": sampled,
            },
        )
    work_bucket = settings.storage.bucket
    ranges_key = f"{settings.storage.work_prefix}{job_id}/ranges.json"
    _put_json(
        work_bucket,
        ranges_key,
        [{"job_id": str(job_id), "chunk_no": n} for n in range(len(raw))],
        settings,
    )
    return PlanOutput(
        job_id=str(job_id),
        work_bucket=work_bucket,
        ranges_key=ranges_key,
        max_concurrency=settings.imports.map_concurrency,
    ).model_dump()


def _check_size(
    upload: dict[str, Any], size: int, effective: rules.Rules, settings: Settings
) -> None:
    """The object's real size against the limits and the size its upload was opened with,
    before a byte of it is read or inflated: opening the upload checked only the size it was
    told, and a client may then send any other (S3 checks a presigned POST's, not a part's)."""
    filename = upload["filename"]
    limit = settings.storage.max_object_bytes
    if size > limit:
        raise PayloadTooLarge(
            f"{filename} is {size:,} bytes; the limit is {limit:,} (storage.max_object_bytes). "
            "Split it into smaller files, or compress it."
        )
    rules.check_upload(effective, size=size, fmt=None, filename=filename)
    declared = upload["size_bytes"]
    if declared is not None and size != declared:
        raise SizeMismatch(
            f"{filename} is {size:,} bytes, but its upload was opened as {declared:,} bytes: "
            "the upload was cut short or sent another file, and nothing of it was imported. "
            "Upload the file again, declaring its real size.",
            file=filename,
        )


def _check_rules(
    effective: rules.Rules,
    src: Located,
    layout: Layout,
    filename: str,
    conn: db.Conn,
    settings: Settings,
) -> int:
    """The rules a file's format, header and first records can be checked against (its size
    was, by :func:`_check_size`), so the wrong file fails here, before any range loads.
    Returns the records sampled."""
    rules.check_upload(effective, size=None, fmt=src.source.format, filename=filename)
    rules.check_columns(effective, layout.columns, filename)
    rules.check_unique_key(effective, layout.columns, filename)
    wanted = effective.sample_records
    if wanted is None:
        wanted = rules.DEFAULT_SAMPLE_RECORDS
    if not wanted or not effective.checked_columns() or src.source.format == "xlsx":
        return 0
    fmt = src.source.format
    # a JSON array's sample is read from its first byte, like its columns were
    start = 0 if fmt == "json" else layout.data_start
    end = src.size if fmt == "json" else layout.data_end
    stop = min(end, start + SAMPLE_BYTES)
    buf = _read(src.bucket, src.key, start, stop, settings)
    sampled = rules.sample_records(
        fmt,
        buf,
        columns=layout.columns,
        start=start,
        first_line=layout.header_lines + 1,
        complete=stop == end,
        limit=wanted,
        delimiter=src.source.delimiter,
        encoding=src.source.encoding,
    )
    return rules.check_sample(conn, effective, layout.columns, sampled, filename)


# The first records are looked for in this many bytes (a long record may make them fewer).
SAMPLE_BYTES = 1024 * 1024


@dataclass(frozen=True)
class Located:
    """The object the scans and loads read (the upload, or its staged plain UTF-8 copy)."""

    bucket: str
    key: str
    size: int
    etag: str | None  # when it was planned: every range's GET asks for it (storage.as_planned)
    source: formats.Source
    first: bytes  # its first bytes


@dataclass(frozen=True)
class Layout:
    """Where a file's records are and what its columns are."""

    columns: list[str]
    data_start: int
    data_end: int
    header_lines: int = 0
    sheets: list[str] | None = None  # a workbook's sheets (one Map item each), else None


def _source(
    bucket: str,
    key: str,
    size: int,
    etag: str | None,
    job_id: uuid.UUID,
    filename: str,
    options: dict[str, Any],
    settings: Settings,
) -> Located:
    """Decide the format, compression, encoding and dialect; stage the object if it must be."""
    first = _read(bucket, key, 0, min(size, SNIFF_BYTES), settings)
    compression = formats.detect_compression(filename, first)
    encoding = options.get("encoding")
    if compression is None and encoding is None and first.startswith(formats.UTF16_BOMS):
        encoding = "utf-16"
    encoding = encoding or "utf-8"
    fmt = options.get("format")
    workbook = fmt == "xlsx" or (fmt is None and first.startswith(formats.ZIP_MAGIC))
    if compression is not None or (
        not workbook
        and (
            (fmt not in {"csv", "tsv"} and encoding != "utf-8")
            or formats.postgres_encoding(encoding) is None
        )
    ):
        # Cannot be cut by byte range as it is: inflate / transcode it once, then cut that.
        staged = f"{settings.storage.work_prefix}{job_id}/staged"
        size = unpack.stage(
            bucket,
            key,
            staged,
            compression=compression,
            encoding=encoding,
            filename=filename,
            settings=settings,
        )
        # the staged copy is this job's own, written once before any range is cut: the
        # upload's ETag pinned what it was made from (unpack.stage reads it as planned)
        key, encoding, etag = staged, "utf-8", None
        first = _read(bucket, key, 0, min(size, SNIFF_BYTES), settings)
    fmt = fmt or formats.detect_format(filename, first)
    delimiter = options.get("delimiter")
    if fmt == "tsv":
        delimiter = delimiter or "\t"
    elif fmt == "csv" and delimiter is None:
        delimiter = formats.sniff_delimiter(first.decode(encoding, errors="replace"))
    header = options.get("header", True) is not False
    return Located(
        bucket,
        key,
        size,
        etag,
        formats.Source(fmt, compression, encoding, delimiter or ",", header),
        first,
    )


def _csv_layout(src: Located, filename: str, settings: Settings) -> Layout:
    limit = settings.imports.max_record_bytes
    # The first bytes already read almost always hold the header; reading up to the record
    # limit (16 MiB) only when they do not keeps planning a few small GETs.
    first = src.first[: limit + 4]
    if len(first) < src.size and csvsplit.first_record_end(first, _bom_length(first)) is None:
        first = _read(src.bucket, src.key, 0, min(src.size, limit + 4), settings)
    header = csvsplit.parse_header(
        first,
        at_eof=len(first) == src.size,
        max_record_bytes=limit,
        delimiter=src.source.delimiter,
        encoding=src.source.encoding,
        header=src.source.header,
    )
    if len(header.columns) == 1:
        # In a file of one column a blank line is a record, a NULL (COPY reads it so, as it
        # does any blank line before the last), and a CSV export writes NULL so: trimmed, the
        # NULLs that end a one-column export were lost when it was imported again
        data_end = src.size
    else:
        tail = _read(src.bucket, src.key, max(src.size - 4096, 0), src.size, settings)
        data_end = max(csvsplit.trim_trailing_blank_lines(tail, src.size), header.data_start)
    if not header.columns and data_end > header.data_start:
        raise MalformedFile(
            f"{filename}: the first line is empty; a CSV file starts with a header "
            "row naming its columns.",
            byte_offset=0,
            line=1,
        )
    lines = first[: header.data_start].count(b"\n")
    return Layout(header.columns, header.data_start, data_end, lines)


def _bom_length(first: bytes) -> int:
    return len(csvsplit.UTF8_BOM) if first.startswith(csvsplit.UTF8_BOM) else 0


def _jsonl_layout(
    src: Located, filename: str, settings: Settings, *, tolerant: bool = False
) -> Layout:
    """``tolerant``: a sampled line that does not parse is left out (the load rejects it)."""
    sample = _read(
        src.bucket, src.key, 0, min(src.size, settings.imports.json_sample_bytes), settings
    )
    data_start = 3 if sample.startswith(formats.UTF8_BOM) else 0
    complete = len(sample) == src.size
    lines = sample[data_start:].split(b"\n")
    if not complete:
        lines = lines[:-1]  # the sample cut it
    records: list[tuple[int, int, Any]] = []
    if tolerant:
        offset = data_start
        for n, line in enumerate(lines, 1):
            if line.strip():
                with contextlib.suppress(MalformedFile):
                    record = jsonsplit.parse_line(line + b"\n", n, offset)
                    if isinstance(record, dict):
                        records.append((n, offset, record))
            offset += len(line) + 1
    else:
        records = list(
            jsonsplit.jsonl_records(
                (line + b"\n" for line in lines), first_line=1, start=data_start
            )
        )
    if not records and not complete:
        raise PayloadTooLarge(
            f"{filename}: the first line is longer than {settings.imports.json_sample_bytes:,} "
            "bytes (imports.json_sample_bytes).",
            byte_offset=data_start,
            line=1,
        )
    if complete and not any(line.strip() for line in lines):
        return Layout([], data_start, data_start)  # blank lines only: no records, as if empty
    # a line's number in the file, not its record's: blank lines count
    located = (
        (f"line {n:,} (byte {offset:,})", {"line": n, "byte_offset": offset}, record)
        for n, offset, record in records
    )
    return Layout(jsonsplit.columns_of(located), data_start, src.size)


def _json_layout(src: Located, filename: str, settings: Settings) -> Layout:
    sample = _read(
        src.bucket, src.key, 0, min(src.size, settings.imports.json_sample_bytes), settings
    )
    tail = _read(src.bucket, src.key, max(src.size - 4096, 0), src.size, settings)
    data_start, data_end = jsonsplit.array_bounds(sample, tail, src.size)
    complete = len(sample) == src.size
    records = jsonsplit.sample_array(sample, complete=complete, limit=100_000)
    if not records and not complete:
        raise PayloadTooLarge(
            f"{filename}: the first record is longer than {settings.imports.json_sample_bytes:,} "
            "bytes (imports.json_sample_bytes), or the array's start is not valid JSON.",
            byte_offset=data_start,
        )
    columns = jsonsplit.columns_of((f"record {n:,}", {}, r) for n, r in enumerate(records, 1))
    return Layout(columns, data_start, data_end)


def _xlsx_layout(src: Located, filename: str, settings: Settings) -> Layout:
    """A workbook's sheets with a header row, and the union of their columns."""
    columns: dict[str, None] = {}
    sheets: list[str] = []
    with storage.open_object(src.bucket, src.key, settings) as f:
        book = xlsx.open_workbook(f, filename)
        try:
            for name in xlsx.sheet_names(book):
                header = xlsx.sheet_header(book[name], name)
                sheets.append(name)
                columns.update(dict.fromkeys(header or []))
        except ParseError as exc:
            raise xlsx.broken_xml(exc) from exc
        finally:
            book.close()
    return Layout(list(columns), 0, src.size, sheets=sheets)


_LAYOUTS: dict[str, Callable[[Located, str, Settings], Layout]] = {
    "csv": _csv_layout,
    "tsv": _csv_layout,
    "jsonl": _jsonl_layout,
    "json": _json_layout,
    "xlsx": _xlsx_layout,
}
SNIFF_BYTES = 64 * 1024


def _key_columns(options: dict[str, Any], columns: list[str], filename: str) -> list[str] | None:
    """The key columns of an upsert or delete import, checked against the file's header."""
    mode = options.get("mode") or "replace"
    if mode not in ("upsert", "delete"):
        return None
    key: list[str] = list(options.get("key") or [])
    if not key:
        raise InvalidRequest(f"A {mode} import needs key columns (--key COL[,COL]).")
    missing = [k for k in key if k not in columns]
    if missing:
        raise MalformedFile(
            f"{filename}: key column(s) {', '.join(map(repr, missing))} are not in the header "
            f"(its columns: {', '.join(map(repr, columns[:20]))}).",
            file=filename,
            line=1,
        )
    return key


def _column_set(conn: db.Conn, columns: list[str]) -> int:
    """The id of the (sorted) column set, created on first use."""
    names = sorted(columns)
    conn.execute(
        "INSERT INTO dsa_core.column_sets (columns) VALUES (%s) ON CONFLICT (columns) DO NOTHING",
        (names,),
    )
    row = conn.execute(
        "SELECT column_set_id FROM dsa_core.column_sets WHERE columns = %s", (names,)
    ).fetchone()
    assert row is not None
    return int(row["column_set_id"])


class ChunkItem(BaseModel):
    """One item of a Map: which job, which range."""

    job_id: uuid.UUID
    chunk_no: int


def job_source(conn: db.Conn, job_id: uuid.UUID) -> dict[str, Any]:
    row = conn.execute(
        "SELECT run_parameters, checkpoint, status::text AS status FROM dsa_jobs.analysis_runs WHERE id = %s",
        (job_id,),
    ).fetchone()
    if row is None:
        raise NotFound(f"No job {job_id}.")
    return row


def record_chunk_error(conn: db.Conn, item: ChunkItem, error: SluicewayError) -> None:
    """Keep a range's own error: a Map's failure reports only that some iteration failed."""
    conn.execute(
        "UPDATE dsa_jobs.import_chunks SET status = 'failed', error = %s, error_code = %s, "
        "updated_at = now() WHERE job_id = %s AND chunk_no = %s",
        (error.message, error.code, item.job_id, item.chunk_no),
    )


class ChunkError(NamedTuple):
    """A failed range's own error: its message and its code (``MalformedFile.code``...)."""

    message: str
    code: str


def first_chunk_error(conn: db.Conn, job_id: uuid.UUID) -> ChunkError | None:
    """The error of the earliest failed range: the first bad place in the file."""
    row = conn.execute(
        "SELECT error, error_code FROM dsa_jobs.import_chunks "
        "WHERE job_id = %s AND status = 'failed' ORDER BY chunk_no LIMIT 1",
        (job_id,),
    ).fetchone()
    if row is None:
        return None
    return ChunkError(str(row["error"]), row["error_code"] or SluicewayError.code)


def stop_if_a_range_failed(conn: db.Conn, job_id: uuid.UUID) -> None:
    """Raise :class:`RangeFailed` with the earliest failed range's error, if a range failed."""
    failed = first_chunk_error(conn, job_id)
    if failed is not None:
        raise RangeFailed(failed.message, range_code=failed.code)


def chunk_task(
    event: dict[str, Any],
    settings: Settings | None,
    work: Callable[[db.Conn, ChunkItem, dict[str, Any], dict[str, Any], Settings], dict[str, Any]],
) -> dict[str, Any]:
    """Run one Map item's work on (connection, item, job, range row); keep its error."""
    settings = settings or get_settings()
    item = ChunkItem.model_validate(event)
    conn = db.shared_connection(settings)
    try:
        job = job_source(conn, item.job_id)
        chunk = conn.execute(
            "SELECT * FROM dsa_jobs.import_chunks WHERE job_id = %s AND chunk_no = %s",
            (item.job_id, item.chunk_no),
        ).fetchone()
        if chunk is None:
            raise NotFound(f"Job {item.job_id} has no range {item.chunk_no}.")
        with storage.as_planned(*source_object(job), job["checkpoint"].get("source_etag")):
            return work(conn, item, job, chunk, settings)
    except SluicewayError as exc:
        record_chunk_error(conn, item, exc)
        raise
    except psycopg.OperationalError:
        raise  # the database is unreachable: nothing can be recorded, and the task is retried
    except Exception as exc:
        # A bug or a library's surprise: keep what it was on the range, so that the job says so
        # (rather than that the range was "never loaded"), then fail the task as before.
        crashed = SluicewayError(
            f"Range {item.chunk_no} failed unexpectedly ({type(exc).__name__}: {exc})"[:2000]
        )
        with contextlib.suppress(psycopg.Error):
            record_chunk_error(conn, item, crashed)
        raise


def source_object(job: dict[str, Any]) -> tuple[str, str]:
    """(bucket, key) of what the ranges are cut from: the upload, or its staged copy."""
    cp, params = job["checkpoint"], job["run_parameters"]
    return cp.get("source_bucket") or params["bucket"], cp.get("source_key") or params["key"]


def lookback_start(bucket: str, key: str, pos: int, settings: Settings) -> int:
    """Where the run of backslashes just before ``pos`` starts (``pos`` if there is none)."""
    start = pos
    while start > 0:
        back = _read(bucket, key, max(start - 4096, 0), start, settings)
        run = len(back) - jsonsplit.escape_run_start(back)
        start -= run
        if run < len(back):
            break
    return start


def scan_chunk(event: dict[str, Any], settings: Settings | None = None) -> dict[str, Any]:
    """Count quotes and newlines of one raw range and find its candidate record starts."""
    return chunk_task(event, settings, _scan_chunk)


def _scan_chunk(
    conn: db.Conn,
    item: ChunkItem,
    job: dict[str, Any],
    chunk: dict[str, Any],
    settings: Settings,
) -> dict[str, Any]:
    cp = job["checkpoint"]
    bucket, key = source_object(job)
    raw_start, raw_end = chunk["raw_start"], chunk["raw_end"]
    if cp.get("format") == "xlsx":  # a sheet: nothing to find
        conn.execute(
            "UPDATE dsa_jobs.import_chunks SET status = 'scanned', error = NULL, "
            "error_code = NULL, updated_at = now() WHERE job_id = %s AND chunk_no = %s",
            (item.job_id, item.chunk_no),
        )
        scan = csvsplit.RangeScan(0, 0, None, None)
    elif cp.get("format") == "json":
        lookback = lookback_start(bucket, key, raw_start, settings)
        array = jsonsplit.scan_array_range(
            _read(bucket, key, lookback, raw_end, settings), raw_start - lookback
        )
        conn.execute(
            "UPDATE dsa_jobs.import_chunks SET quote_count = %s, scan = %s, status = 'scanned', "
            "error = NULL, error_code = NULL, updated_at = now() "
            "WHERE job_id = %s AND chunk_no = %s",
            (
                array.quote_count,
                Jsonb({"delta_out": array.delta_out, "delta_in": array.delta_in}),
                item.job_id,
                item.chunk_no,
            ),
        )
        scan = csvsplit.RangeScan(array.quote_count, 0, None, None)
    else:
        # the byte before the range too; read as it arrives, so a range is never held whole
        pieces = read_pieces(bucket, key, max(raw_start - 1, 0), raw_end, settings)
        if cp.get("format") == "jsonl":  # a newline never occurs inside a JSON string
            scan = jsonsplit.scan_lines_pieces(pieces, raw_start)
        else:
            scan = csvsplit.scan_pieces(pieces, raw_start)
        conn.execute(
            """
            UPDATE dsa_jobs.import_chunks SET quote_count = %s, first_nl_even = %s, first_nl_odd = %s,
                lines_to_even = %s, lines_to_odd = %s, newline_count = %s, status = 'scanned',
                error = NULL, error_code = NULL, updated_at = now()
            WHERE job_id = %s AND chunk_no = %s
            """,
            (
                scan.quote_count,
                scan.first_newline_even,
                scan.first_newline_odd,
                scan.lines_to_even,
                scan.lines_to_odd,
                scan.newline_count,
                item.job_id,
                item.chunk_no,
            ),
        )
    if faults.take(conn, item.job_id, "scan", settings):  # after the work, as a lost reply
        raise faults.fail("scan")
    return {"chunk_no": item.chunk_no, "quotes": scan.quote_count}


def _check_record_sizes(
    loads: list[csvsplit.LoadRange],
    raw: list[tuple[int, int]],
    chunk_bytes: int,
    max_record_bytes: int,
    job: dict[str, Any],
) -> None:
    """Refuse a record longer than the limit before any range loads it.

    A range of whole records exceeds its raw range by less than one record; one that is
    longer than a raw range plus the limit holds a record over the limit (or an unclosed quote
    that runs on).
    """
    for load in loads:
        if load.end - load.start > chunk_bytes + max_record_bytes:
            crossing = raw[load.chunk_no][1]
            name = job["run_parameters"].get("filename", "the file")
            raise PayloadTooLarge(
                f"{name}: the record that crosses byte {crossing:,} (it starts after line "
                f"{load.first_line:,}) is longer than {max_record_bytes:,} bytes, or a quote "
                "before it is never closed.",
                byte_offset=crossing,
            )


def job_of_state(
    state: dict[str, Any], settings: Settings
) -> tuple[PlanOutput, uuid.UUID, db.Conn, dict[str, Any]]:
    """The state machine's state, its job id, a connection, and the job's record."""
    plan = PlanOutput.model_validate(state)
    if plan.job_id is None:
        raise NotFound("The state carries no job id.")
    job_id = uuid.UUID(plan.job_id)
    conn = db.shared_connection(settings)
    return plan, job_id, conn, job_source(conn, job_id)


def resolve_chunks(state: dict[str, Any], settings: Settings | None = None) -> dict[str, Any]:
    """The serial fold: where every range's first whole record starts, and the load list."""
    settings = settings or get_settings()
    plan, job_id, conn, job = job_of_state(state, settings)
    cp = job["checkpoint"]
    rows = conn.execute(
        "SELECT * FROM dsa_jobs.import_chunks WHERE job_id = %s ORDER BY chunk_no", (job_id,)
    ).fetchall()
    stop_if_a_range_failed(conn, job_id)
    missing = [r["chunk_no"] for r in rows if r["status"] == "planned"]
    if missing:
        raise RuntimeError(f"Ranges {missing[:10]} of job {job_id} were never scanned.")
    if cp.get("format") == "json":
        return _resolve_array(plan, job_id, conn, job, rows, settings)
    if cp.get("format") == "xlsx":
        with conn.transaction():
            conn.execute(
                "UPDATE dsa_jobs.import_chunks SET start_byte = 0, end_byte = 0, first_line = 2, "
                "status = 'resolved', updated_at = now() WHERE job_id = %s",
                (job_id,),
            )
            jobs.update(
                conn,
                job_id,
                progress={"stage": "loading", "chunks_total": len(rows)},
                checkpoint={"stage": "resolved"},
            )
        return _put_loads(plan, job_id, [r["chunk_no"] for r in rows], settings)
    raw = [(r["raw_start"], r["raw_end"]) for r in rows]
    scans = [
        csvsplit.RangeScan(
            r["quote_count"],
            r["newline_count"],
            r["first_nl_even"],
            r["first_nl_odd"],
            r["lines_to_even"],
            r["lines_to_odd"],
        )
        for r in rows
    ]
    loads = csvsplit.resolve_ranges(
        raw,
        scans,
        data_start=cp["data_start"],
        data_end=cp["data_end"],
        header_lines=cp["header_lines"],
    )
    _check_record_sizes(loads, raw, cp["chunk_bytes"], settings.imports.max_record_bytes, job)
    by_chunk = {r.chunk_no: r for r in loads}
    with conn.transaction():
        conn.execute(
            "UPDATE dsa_jobs.import_chunks SET status = 'empty', updated_at = now() WHERE job_id = %s",
            (job_id,),
        )
        with conn.cursor() as cur:
            cur.executemany(
                """
                UPDATE dsa_jobs.import_chunks SET start_byte = %s, end_byte = %s, first_line = %s,
                    status = 'resolved', updated_at = now()
                WHERE job_id = %s AND chunk_no = %s
                """,
                [(r.start, r.end, r.first_line, job_id, r.chunk_no) for r in by_chunk.values()],
            )
        jobs.update(
            conn,
            job_id,
            progress={"stage": "loading", "chunks_total": len(loads)},
            checkpoint={"stage": "resolved"},
        )
    return _put_loads(plan, job_id, [r.chunk_no for r in loads], settings)


def _put_loads(
    plan: PlanOutput, job_id: uuid.UUID, chunk_nos: list[int], settings: Settings
) -> dict[str, Any]:
    plan.loads_key = f"{settings.storage.work_prefix}{job_id}/loads.json"
    assert plan.work_bucket is not None
    _put_json(
        plan.work_bucket,
        plan.loads_key,
        [{"job_id": str(job_id), "chunk_no": n} for n in chunk_nos],
        settings,
    )
    return plan.model_dump()


def _resolve_array(
    plan: PlanOutput,
    job_id: uuid.UUID,
    conn: db.Conn,
    job: dict[str, Any],
    rows: list[dict[str, Any]],
    settings: Settings,
) -> dict[str, Any]:
    """The JSON array's fold: each range's lexer state at its first byte. Each load then finds
    its exact first and last record itself (usually within one record of its raw bounds)."""
    scans = [
        jsonsplit.ArrayScan(r["quote_count"], r["scan"]["delta_out"], r["scan"]["delta_in"])
        for r in rows
    ]
    states, end = jsonsplit.fold_array(scans)
    name = job["run_parameters"].get("filename", "the file")
    data_end = job["checkpoint"]["data_end"]
    if end.in_string:
        raise MalformedFile(
            f"{name}: a string is never closed before the array's last ']' (byte {data_end:,}).",
            byte_offset=data_end,
        )
    if end.depth != 1:
        raise MalformedFile(
            f"{name}: the brackets do not balance: {abs(end.depth - 1):,} "
            f"{'unclosed' if end.depth > 1 else 'extra closing'} bracket(s) before the array's "
            f"last ']' (byte {data_end:,}); the file is truncated or not one JSON array.",
            byte_offset=data_end,
        )
    nexts = [*states[1:], end]
    with conn.transaction(), conn.cursor() as cur:
        cur.executemany(
            """
            UPDATE dsa_jobs.import_chunks SET start_byte = raw_start, end_byte = raw_end,
                first_line = 0, scan = scan || %s, status = 'resolved', updated_at = now()
            WHERE job_id = %s AND chunk_no = %s
            """,
            [
                (
                    Jsonb(
                        {
                            "in_string": st.in_string,
                            "depth": st.depth,
                            "next_in_string": nx.in_string,
                            "next_depth": nx.depth,
                        }
                    ),
                    job_id,
                    r["chunk_no"],
                )
                for r, st, nx in zip(rows, states, nexts, strict=True)
            ],
        )
        jobs.update(
            conn,
            job_id,
            progress={"stage": "loading", "chunks_total": len(rows)},
            checkpoint={"stage": "resolved"},
        )
    return _put_loads(plan, job_id, [r["chunk_no"] for r in rows], settings)
