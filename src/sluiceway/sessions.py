"""Chunked record sessions (seed 002): records arrive in numbered batches, import as one file.

A client opens a session for a dataset (or names one itself with its first chunk), then
sends batches of records (JSON objects, or CSV text with a header) in numbered chunks. Each
chunk is checked and kept in object storage as a CSV body under the sessions prefix; sending
a chunk number again replaces it (so a retried request is harmless). Committing assembles
the chunks in number order into one CSV object under the uploads prefix, streamed part by
part, and that object's created event starts the import like any upload's. When the client
said how many chunks there are, the last one to arrive commits the session.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import re
import uuid
from collections.abc import Iterator
from datetime import datetime
from typing import TYPE_CHECKING, Any

from botocore.exceptions import BotoCoreError, ClientError
from psycopg.types.json import Jsonb
from pydantic import AliasChoices, BaseModel, Field, StrictInt, model_validator
from smart_open import open as smart_open

from . import datasets, jobs, storage, upload
from .db import Conn
from .errors import (
    Conflict,
    MalformedFile,
    NotFound,
    PayloadTooLarge,
    StorageUnavailable,
    code_of,
)
from .settings import Settings, get_settings

if TYPE_CHECKING:
    from mypy_boto3_s3.type_defs import ObjectIdentifierTypeDef

MAX_CHUNKS = 100_000


class OpenSession(BaseModel):
    dataset: str
    total_chunks: StrictInt | None = Field(default=None, ge=1, le=MAX_CHUNKS)
    options: upload.ImportOptions = upload.ImportOptions()


class ChunkRequest(BaseModel):
    """One numbered batch: ``records`` (JSON objects) or ``csv`` (text whose first line is the
    header). ``dataset`` (and ``options``) open the session if the client chose its id."""

    chunk_number: StrictInt = Field(ge=1, le=MAX_CHUNKS)
    total_chunks: StrictInt | None = Field(default=None, ge=1, le=MAX_CHUNKS)
    records: list[dict[str, Any]] | None = Field(
        default=None,
        min_length=1,
        validation_alias=AliasChoices("records", "chunk_data"),  # seed 002 calls it chunk_data
    )
    csv: str | None = Field(default=None, min_length=1)
    dataset: str | None = None
    options: upload.ImportOptions | None = None

    @model_validator(mode="after")
    def _one_payload(self) -> ChunkRequest:
        if (self.records is None) == (self.csv is None):
            raise ValueError("send either records (a JSON array of objects) or csv (text)")
        return self


class SessionInfo(BaseModel):
    session_id: uuid.UUID
    dataset: str
    status: str
    total_chunks: int | None
    received: list[int]
    missing: list[int]
    columns: list[str] | None
    records: int
    upload_id: uuid.UUID | None
    job_id: uuid.UUID | None
    status_url: str | None
    created_at: datetime
    committed_at: datetime | None


def open_session(
    conn: Conn, owner: str, request: OpenSession, session_id: uuid.UUID | None = None
) -> SessionInfo:
    """Open a session; with ``session_id`` (chosen by the client), open it under that id."""
    datasets.check_name(request.dataset)
    created = conn.execute(
        "INSERT INTO dsa_jobs.record_sessions (session_id, owner, dataset_name, options, "
        "total_chunks) VALUES (coalesce(%s, gen_random_uuid()), %s, %s, %s, %s) "
        "ON CONFLICT (session_id) DO NOTHING RETURNING session_id",
        (
            session_id,
            owner,
            request.dataset,
            Jsonb(request.options.model_dump(exclude_none=True)),
            request.total_chunks,
        ),
    ).fetchone()
    if created is None:  # an id in use, perhaps by another owner: say nothing about it
        raise Conflict(f"Session id {session_id} is taken; choose another.")
    return get(conn, owner, str(created["session_id"]))


def _session(conn: Conn, owner: str, session_id: str, *, lock: bool = False) -> dict[str, Any]:
    try:
        key = uuid.UUID(session_id)
    except ValueError as exc:
        raise NotFound(f"No session {session_id!r}: session ids are UUIDs.") from exc
    row = conn.execute(
        "SELECT * FROM dsa_jobs.record_sessions WHERE session_id = %s AND owner = %s"
        + (" FOR UPDATE" if lock else ""),
        (key, owner),
    ).fetchone()
    if row is None:
        raise NotFound(f"No session {session_id}.")
    return row


def get(conn: Conn, owner: str, session_id: str) -> SessionInfo:
    """The session, with which chunks arrived and which are missing (so a client can resume)."""
    row = _session(conn, owner, session_id)
    chunks = conn.execute(
        "SELECT chunk_number, record_count FROM dsa_jobs.record_session_chunks "
        "WHERE session_id = %s ORDER BY chunk_number",
        (row["session_id"],),
    ).fetchall()
    received = [c["chunk_number"] for c in chunks]
    expected = row["total_chunks"] or (received[-1] if received else 0)
    job_id = None
    if row["upload_id"] is not None:
        found = conn.execute(
            "SELECT job_id FROM dsa_jobs.uploads WHERE upload_id = %s", (row["upload_id"],)
        ).fetchone()
        job_id = found["job_id"] if found else None
    return SessionInfo(
        session_id=row["session_id"],
        dataset=row["dataset_name"],
        status=row["status"],
        total_chunks=row["total_chunks"],
        received=received,
        missing=sorted(set(range(1, expected + 1)) - set(received)),
        columns=row["columns"],
        records=sum(c["record_count"] for c in chunks),
        upload_id=row["upload_id"],
        job_id=job_id,
        status_url=f"/jobs/{job_id}" if job_id else None,
        created_at=row["created_at"],
        committed_at=row["committed_at"],
    )


# -- turning a batch into CSV ------------------------------------------------------------------

_NEEDS_QUOTES = re.compile(r'[",\r\n]|^\s|\s$')


def csv_field(value: Any) -> str:
    """One CSV field as the import reads it: null unquoted and empty, an empty string as ""."""
    if value is None:
        return ""
    if isinstance(value, bool):
        text = "true" if value else "false"
    elif isinstance(value, str):
        text = value
    elif isinstance(value, (int, float)):
        text = json.dumps(value)
    else:
        text = json.dumps(value, separators=(",", ":"), ensure_ascii=False)
    if text == "" or _NEEDS_QUOTES.search(text):
        return '"' + text.replace('"', '""') + '"'
    return text


def csv_line(values: list[Any]) -> str:
    return ",".join(csv_field(v) for v in values) + "\n"


def _encodes(text: str) -> bool:
    """Whether the text is UTF-8 (JSON's \\ud800 escapes decode to lone surrogates, which are not)."""
    try:
        text.encode()
    except UnicodeEncodeError:
        return False
    return True


def _check_columns(columns: list[str], where: str) -> None:
    if not columns:
        raise MalformedFile(
            f"{where}: there are no columns (a record with no fields, or an empty header line)."
        )
    for name in columns:
        if not name.strip():
            raise MalformedFile(f"{where}: a column name is empty.")
        if "\x00" in name:
            raise MalformedFile(f"{where}: column name {name!r} contains a NUL character.")
        if not _encodes(name):
            raise MalformedFile(f"{where}: column name {name!r} is not valid Unicode text.")
    if len(set(columns)) != len(columns):
        raise MalformedFile(f"{where}: column names repeat: {columns}.")


def _records_body(
    records: list[dict[str, Any]], columns: list[str] | None, number: int
) -> tuple[list[str], bytes]:
    """CSV body lines (no header) of JSON records, and the columns they have."""
    first_keys = list(records[0])
    columns = columns or first_keys
    _check_columns(columns, f"chunk {number}")
    wanted = set(columns)
    out = io.BytesIO()
    for i, record in enumerate(records, 1):
        if set(record) != wanted:
            extra, absent = sorted(set(record) - wanted), sorted(wanted - set(record))
            raise MalformedFile(
                f"chunk {number}, record {i}: its columns differ from the session's {columns}"
                + (f"; not expected: {extra}" if extra else "")
                + (f"; missing: {absent}" if absent else "")
                + "."
            )
        values = [record[c] for c in columns]
        for c, v in zip(columns, values, strict=True):
            if isinstance(v, str) and "\x00" in v:
                raise MalformedFile(
                    f"chunk {number}, record {i}, column {c!r}: contains a NUL character."
                )
        line = csv_line(values)
        if not _encodes(line):
            bad = next(
                c for c, v in zip(columns, values, strict=True) if not _encodes(csv_field(v))
            )
            raise MalformedFile(
                f"chunk {number}, record {i}, column {bad!r}: not valid Unicode text "
                "(a lone surrogate, such as a JSON \\ud800 escape without its pair)."
            )
        out.write(line.encode())
    return columns, out.getvalue()


def _csv_body(text: str, columns: list[str] | None, number: int) -> tuple[list[str], bytes, int]:
    """The header, the body after it (kept byte for byte) and its record count."""
    if "\x00" in text:
        raise MalformedFile(f"chunk {number}: the CSV text contains a NUL character.")
    lines = re.split(r"(?<=\n)", text)
    consumed = 0

    def feed() -> Iterator[str]:
        nonlocal consumed
        for line in lines:
            consumed += 1
            yield line

    reader = csv.reader(feed(), strict=True)
    try:
        header = [h.strip() for h in next(reader)]
        header_lines = consumed
        count = 0
        for record in reader:
            if not record:
                continue  # a blank line
            count += 1
            if len(record) != len(header):
                raise MalformedFile(
                    f"chunk {number}, record {count} (line {reader.line_num}) has "
                    f"{len(record)} field(s); the header has {len(header)}."
                )
    except csv.Error as exc:
        raise MalformedFile(
            f"chunk {number}: not valid CSV (line {reader.line_num}): {exc}"
        ) from exc
    except StopIteration as exc:
        raise MalformedFile(f"chunk {number}: the CSV text has no header line.") from exc
    _check_columns(header, f"chunk {number}")
    if columns is not None and header != columns:
        raise MalformedFile(
            f"chunk {number}: its header {header} differs from the session's columns {columns}; "
            "every chunk must have the same columns in the same order."
        )
    body = "".join(lines[header_lines:])
    if body and not body.endswith("\n"):
        body += "\n"
    return header, body.encode(), count


def _chunk_key(settings: Settings, owner: str, session_id: uuid.UUID, number: int) -> str:
    return f"{settings.storage.sessions_prefix}{owner}/{session_id}/{number:06d}.csv"


def put_chunk(
    conn: Conn,
    owner: str,
    session_id: str,
    request: ChunkRequest,
    settings: Settings | None = None,
) -> tuple[bool, dict[str, Any]]:
    """Store one chunk; returns (committed, body). The last missing chunk commits the session."""
    settings = settings or get_settings()
    limits = settings.sessions
    if request.records is not None and len(request.records) > limits.max_chunk_records:
        raise PayloadTooLarge(
            f"Chunk {request.chunk_number} has {len(request.records):,} records; "
            f"the limit is {limits.max_chunk_records:,} per chunk."
        )
    try:
        key_id = uuid.UUID(session_id)
    except ValueError as exc:
        raise NotFound(f"No session {session_id!r}: session ids are UUIDs.") from exc
    exists = conn.execute(
        "SELECT 1 FROM dsa_jobs.record_sessions WHERE session_id = %s AND owner = %s",
        (key_id, owner),
    ).fetchone()
    if exists is None and request.dataset:
        opened = OpenSession(
            dataset=request.dataset,
            total_chunks=request.total_chunks,
            options=request.options or upload.ImportOptions(),
        )
        open_session(conn, owner, opened, key_id)
    number = request.chunk_number
    with conn.transaction():
        row = _session(conn, owner, session_id, lock=True)
        if request.dataset and request.dataset != row["dataset_name"]:
            raise Conflict(
                f"Session {session_id} imports into {row['dataset_name']!r}, not "
                f"{request.dataset!r}; a session's dataset cannot change."
            )
        if row["status"] == "committed" and _is_stored(conn, row, request):
            # the same chunk again (say, a retried request whose answer was lost): same answer
            return True, _committed_answer(get(conn, owner, session_id), number)
        if row["status"] != "open":
            raise Conflict(
                f"Session {session_id} is {row['status']}; it takes no more chunks. "
                "Open a new session to send more records."
            )
        total = row["total_chunks"]
        if request.total_chunks is not None:
            if total is not None and request.total_chunks != total:
                raise Conflict(
                    f"total_chunks changed from {total} to {request.total_chunks}; "
                    "a session's total cannot change."
                )
            highest = conn.execute(
                "SELECT max(chunk_number) AS n FROM dsa_jobs.record_session_chunks "
                "WHERE session_id = %s",
                (row["session_id"],),
            ).fetchone()
            if highest and highest["n"] and highest["n"] > request.total_chunks:
                raise Conflict(
                    f"total_chunks {request.total_chunks} is less than chunk {highest['n']}, "
                    "which already arrived."
                )
            total = request.total_chunks
        if total is not None and number > total:
            raise Conflict(f"Chunk {number} is outside 1..{total}.")
        columns, body, count = _body(request, row["columns"], number)
        if count > limits.max_chunk_records:
            raise PayloadTooLarge(
                f"Chunk {number} has {count:,} records; the limit is "
                f"{limits.max_chunk_records:,} per chunk."
            )
        if len(body) > limits.max_chunk_bytes:
            raise PayloadTooLarge(
                f"Chunk {number} is {len(body):,} bytes as CSV; the limit is "
                f"{limits.max_chunk_bytes:,}. Send fewer records per chunk."
            )
        digest = hashlib.sha256(body).hexdigest()
        key = _chunk_key(settings, owner, row["session_id"], number)
        previous = conn.execute(
            "SELECT sha256 FROM dsa_jobs.record_session_chunks "
            "WHERE session_id = %s AND chunk_number = %s",
            (row["session_id"], number),
        ).fetchone()
        if previous is None or previous["sha256"] != digest:
            try:
                storage.s3_client(settings).put_object(
                    Bucket=settings.storage.bucket, Key=key, Body=body, ContentType="text/csv"
                )
            except (ClientError, BotoCoreError) as exc:
                raise StorageUnavailable(f"Object storage refused the chunk: {exc}") from exc
        conn.execute(
            """
            INSERT INTO dsa_jobs.record_session_chunks
                (session_id, chunk_number, object_key, record_count, size_bytes, sha256)
            VALUES (%s, %s, %s, %s, %s, %s)
            ON CONFLICT (session_id, chunk_number) DO UPDATE SET record_count = excluded.record_count,
                size_bytes = excluded.size_bytes, sha256 = excluded.sha256, received_at = now()
            """,
            (row["session_id"], number, key, count, len(body), digest),
        )
        conn.execute(
            "UPDATE dsa_jobs.record_sessions SET columns = %s, total_chunks = %s "
            "WHERE session_id = %s",
            (columns, total, row["session_id"]),
        )
    info = get(conn, owner, session_id)
    if info.total_chunks is not None and not info.missing:
        try:
            return True, _committed_answer(commit(conn, owner, session_id, settings), number)
        except Conflict:
            # another request's chunk completed the session at the same moment and commits it
            info = get(conn, owner, session_id)
            if info.status == "committed":
                return True, _committed_answer(info, number)
            if info.status != "committing":
                raise
    progress = (
        round(100.0 * len(info.received) / info.total_chunks, 1) if info.total_chunks else None
    )
    return False, {
        "session_id": str(info.session_id),
        "chunk_received": number,
        "total_chunks": info.total_chunks,
        "received": info.received,
        "missing": info.missing,
        "progress": progress,
        "next_chunk": info.missing[0] if info.missing else None,
        "message": f"Chunk {number} received"
        + (
            f"; waiting for chunk(s) {info.missing}."
            if info.missing
            else f"; all chunks are in and the session is {info.status}: "
            f"GET /sessions/{info.session_id} shows its job."
        ),
    }


def _body(
    request: ChunkRequest, columns: list[str] | None, number: int
) -> tuple[list[str], bytes, int]:
    if request.records is not None:
        columns, body = _records_body(request.records, columns, number)
        return columns, body, len(request.records)
    assert request.csv is not None
    return _csv_body(request.csv, columns, number)


def _is_stored(conn: Conn, row: dict[str, Any], request: ChunkRequest) -> bool:
    """Whether this chunk is exactly the one the session already holds under its number."""
    try:
        _, body, _ = _body(request, row["columns"], request.chunk_number)
    except MalformedFile:
        return False
    stored = conn.execute(
        "SELECT sha256 FROM dsa_jobs.record_session_chunks "
        "WHERE session_id = %s AND chunk_number = %s",
        (row["session_id"], request.chunk_number),
    ).fetchone()
    return stored is not None and stored["sha256"] == hashlib.sha256(body).hexdigest()


def _committed_answer(info: SessionInfo, number: int) -> dict[str, Any]:
    return {
        "session_id": str(info.session_id),
        "chunk_received": number,
        "total_chunks": info.total_chunks,
        "job_id": str(info.job_id),
        "upload_id": str(info.upload_id),
        "status_url": info.status_url,
        "total_records": info.records,
        "message": "All chunks received; the import started.",
    }


def commit(
    conn: Conn, owner: str, session_id: str, settings: Settings | None = None
) -> SessionInfo:
    """Assemble the chunks, in number order, into one CSV under the uploads prefix: its
    object-created event starts the import. Streamed: one part in memory at a time."""
    settings = settings or get_settings()
    with conn.transaction():
        row = _session(conn, owner, session_id, lock=True)
        if row["status"] == "committed":
            return get(conn, owner, session_id)  # a repeated commit
        if row["status"] == "committing":
            raise Conflict(f"Session {session_id} is being committed.")
        chunks = conn.execute(
            "SELECT chunk_number, object_key, size_bytes FROM dsa_jobs.record_session_chunks "
            "WHERE session_id = %s ORDER BY chunk_number",
            (row["session_id"],),
        ).fetchall()
        numbers = [c["chunk_number"] for c in chunks]
        if not numbers:
            raise Conflict(f"Session {session_id} has no chunks to commit.")
        expected = row["total_chunks"] or numbers[-1]
        missing = sorted(set(range(1, expected + 1)) - set(numbers))
        if missing:
            raise Conflict(
                f"Session {session_id} is missing chunk(s) {missing} of 1..{expected}; "
                "send them, then commit."
            )
        conn.execute(
            "UPDATE dsa_jobs.record_sessions SET status = 'committing', total_chunks = %s "
            "WHERE session_id = %s",
            (expected, row["session_id"]),
        )
    # The assembled object is always UTF-8 CSV with a header and commas, whatever the session's
    # options said of format or dialect (nothing is sniffed from it).
    options = upload.ImportOptions.model_validate(row["options"]).model_copy(
        update={"format": "csv", "delimiter": ",", "header": None, "encoding": None}
    )
    if not options.message:
        options.message = f"Records of session {row['session_id']} ({len(numbers)} chunks)"
    created: upload.UploadCreated | None = None
    try:
        created = upload.create_upload(
            conn,
            owner,
            upload.CreateUpload(
                dataset=row["dataset_name"],
                filename=f"session-{row['session_id']}.csv",
                options=options,
            ),
            settings,
            multipart=False,
        )
        written = _assemble(settings, row["columns"], chunks, created.key)
        conn.execute(
            "UPDATE dsa_jobs.uploads SET size_bytes = %s WHERE upload_id = %s",
            (written, uuid.UUID(created.upload_id)),
        )
        upload.mark_completed(
            conn,
            {
                "upload_id": uuid.UUID(created.upload_id),
                "bucket": created.bucket,
                "object_key": created.key,
            },
            settings,
        )
    except Exception as exc:
        with conn.transaction():
            conn.execute(
                "UPDATE dsa_jobs.record_sessions SET status = 'open' WHERE session_id = %s",
                (row["session_id"],),
            )
            if created is not None:
                conn.execute(
                    "UPDATE dsa_jobs.uploads SET status = 'aborted' WHERE upload_id = %s",
                    (uuid.UUID(created.upload_id),),
                )
                jobs.fail(
                    conn,
                    uuid.UUID(created.job_id),
                    f"Assembling the session failed: {exc}",
                    StorageUnavailable.code
                    if isinstance(exc, (ClientError, BotoCoreError))
                    else code_of(exc),
                )
        if isinstance(exc, (ClientError, BotoCoreError)):
            raise StorageUnavailable(f"Assembling the session's chunks failed: {exc}") from exc
        raise
    conn.execute(
        "UPDATE dsa_jobs.record_sessions SET status = 'committed', committed_at = now(), "
        "upload_id = %s WHERE session_id = %s",
        (uuid.UUID(created.upload_id), row["session_id"]),
    )
    _delete_chunks(settings, chunks)
    return get(conn, owner, session_id)


def _assemble(
    settings: Settings, columns: list[str], chunks: list[dict[str, Any]], key: str
) -> int:
    """Header, then every chunk's body in order, streamed into one multipart object."""
    client = storage.s3_client(settings)
    bucket = settings.storage.bucket
    transport = {
        **storage.smart_open_params(settings),
        "min_part_size": settings.sessions.assembly_part_bytes,
        "client_kwargs": {"S3.Client.create_multipart_upload": {"ContentType": "text/csv"}},
    }
    written = 0
    with smart_open(f"s3://{bucket}/{key}", "wb", transport_params=transport) as out:
        header = csv_line(columns).encode()
        out.write(header)
        written += len(header)
        for chunk in chunks:
            body = client.get_object(Bucket=bucket, Key=chunk["object_key"])["Body"]
            for block in body.iter_chunks(1 << 20):
                out.write(block)
                written += len(block)
    return written


def _delete_chunks(settings: Settings, chunks: list[dict[str, Any]]) -> None:
    """The chunks are in the assembled file now; a failure to delete only leaves litter."""
    client = storage.s3_client(settings)
    keys: list[ObjectIdentifierTypeDef] = [{"Key": c["object_key"]} for c in chunks]
    for i in range(0, len(keys), 1000):
        try:
            client.delete_objects(
                Bucket=settings.storage.bucket, Delete={"Objects": keys[i : i + 1000]}
            )
        except (ClientError, BotoCoreError):
            return


def abandon_idle(
    conn: Conn, owner: str, idle_hours: float, settings: Settings | None = None
) -> list[uuid.UUID]:
    """Abort the owner's open sessions with no chunk for ``idle_hours``; delete their chunks."""
    settings = settings or get_settings()
    aborted: list[uuid.UUID] = []
    with conn.transaction():
        rows = conn.execute(
            """
            SELECT s.session_id FROM dsa_jobs.record_sessions s
            WHERE s.owner = %s AND s.status = 'open'
              AND coalesce((SELECT max(c.received_at) FROM dsa_jobs.record_session_chunks c
                            WHERE c.session_id = s.session_id), s.created_at)
                  < now() - make_interval(secs => %s)
            FOR UPDATE SKIP LOCKED
            """,
            (owner, idle_hours * 3600),
        ).fetchall()
        for row in rows:
            chunks = conn.execute(
                "DELETE FROM dsa_jobs.record_session_chunks WHERE session_id = %s "
                "RETURNING object_key",
                (row["session_id"],),
            ).fetchall()
            conn.execute(
                "UPDATE dsa_jobs.record_sessions SET status = 'aborted' WHERE session_id = %s",
                (row["session_id"],),
            )
            _delete_chunks(settings, chunks)
            aborted.append(row["session_id"])
    return aborted
