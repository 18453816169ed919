"""Export stage 2, write one part: a range of the commit's rows streamed into an S3 object.

State "Write one part" of the export Map. Rows come out of PostgreSQL as they are written:
CSV through ``COPY (SELECT ...) TO STDOUT``, JSON, JSON Lines and Parquet through a server-side
cursor in batches. Bytes go into :class:`MultipartSink`, which uploads them as S3 multipart
pieces of ``exports.piece_bytes`` (>= 5 MiB) while the next rows are read: a part is never held
whole in memory. The open upload's id is recorded before its first piece, so whatever ends
this part (an error here, a retry, the failure path of the state machine) can abort it.
"""

from __future__ import annotations

import contextlib
import csv
import gzip
import hashlib
import io
import json
import time
import uuid
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

import psycopg
from botocore.exceptions import BotoCoreError, ClientError
from psycopg import sql
from psycopg.rows import tuple_row
from pydantic import BaseModel

from . import db, export, faults, schema, storage
from .errors import (
    DatabaseUnavailable,
    NotFound,
    SluicewayError,
    StorageUnavailable,
    code_of,
)
from .settings import Settings, get_settings

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client


class PartItem(BaseModel):
    """One item of the export Map: which job, which part."""

    job_id: uuid.UUID
    part_no: int


class MultipartSink:
    """A binary file that uploads what is written to it as S3 multipart pieces.

    At most one piece is in flight while the next fills, so memory stays at about two pieces.
    An object smaller than one piece is sent with one PUT when the sink finishes.
    """

    def __init__(
        self,
        client: S3Client,
        bucket: str,
        key: str,
        *,
        content_type: str,
        piece_bytes: int,
        on_open: Callable[[str], None],
    ) -> None:
        self.client, self.bucket, self.key = client, bucket, key
        self.content_type, self.piece_bytes, self.on_open = content_type, piece_bytes, on_open
        self.buffer = bytearray()
        self.size = 0
        self.sha256 = hashlib.sha256()
        self.upload_id: str | None = None
        self.parts: list[dict[str, Any]] = []
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sluiceway-piece")
        self._in_flight: Future[dict[str, Any]] | None = None
        self.closed = False

    # the file protocol gzip and pyarrow write through
    def writable(self) -> bool:
        return True

    def write(self, data: bytes | bytearray | memoryview) -> int:
        n = len(data)
        self.sha256.update(data)
        self.size += n
        self.buffer += data
        if len(self.buffer) >= self.piece_bytes:
            self.send_piece()
        return n

    def tell(self) -> int:
        return self.size

    def flush(self) -> None:
        pass

    def close(self) -> None:
        # pyarrow closes its sink when the Parquet writer closes; the part is finished by finish()
        pass

    def send_piece(self) -> None:
        """Upload what is buffered as the next piece (the multipart upload opens on the first)."""
        if self.upload_id is None:
            created = self.client.create_multipart_upload(
                Bucket=self.bucket, Key=self.key, ContentType=self.content_type
            )
            self.upload_id = created["UploadId"]
            self.on_open(self.upload_id)
        self._wait()
        body, self.buffer = bytes(self.buffer), bytearray()
        number = len(self.parts) + 1
        self.parts.append({"PartNumber": number})
        self._in_flight = self._pool.submit(self._upload, number, body)

    def _upload(self, number: int, body: bytes) -> dict[str, Any]:
        assert self.upload_id is not None
        done = self.client.upload_part(
            Bucket=self.bucket, Key=self.key, UploadId=self.upload_id, PartNumber=number, Body=body
        )
        return {"PartNumber": number, "ETag": done["ETag"]}

    def _wait(self) -> None:
        if self._in_flight is not None:
            finished = self._in_flight.result()
            self.parts[finished["PartNumber"] - 1] = finished
            self._in_flight = None

    def finish(self) -> str:
        """Complete the object; returns its ETag."""
        try:
            if self.upload_id is None:
                put = self.client.put_object(
                    Bucket=self.bucket,
                    Key=self.key,
                    Body=bytes(self.buffer),
                    ContentType=self.content_type,
                )
                return put["ETag"].strip('"')
            if self.buffer:
                self.send_piece()
            self._wait()
            done = self.client.complete_multipart_upload(
                Bucket=self.bucket,
                Key=self.key,
                UploadId=self.upload_id,
                MultipartUpload={"Parts": self.parts},  # type: ignore[typeddict-item]
            )
            return str(done["ETag"]).strip('"')
        finally:
            self._pool.shutdown(wait=True)
            self.closed = True

    def abort(self) -> bool:
        """Abort the multipart upload, if one was opened; True if nothing is left open."""
        with contextlib.suppress(Exception):
            self._wait()
        self._pool.shutdown(wait=True)
        self.closed = True
        if self.upload_id is None:
            return True
        return abort_upload(self.client, self.bucket, self.key, self.upload_id)


def abort_upload(client: S3Client, bucket: str, key: str, upload_id: str) -> bool:
    """Abort one multipart upload; True if it is gone (already gone counts)."""
    try:
        client.abort_multipart_upload(Bucket=bucket, Key=key, UploadId=upload_id)
        return True
    except ClientError as exc:
        return exc.response.get("Error", {}).get("Code") in ("NoSuchUpload", "404")
    except BotoCoreError:
        return False


# -- which values: columns from the commit's column sets, and the filter ---------------------


def stored_rows_estimate(conn: db.Conn) -> float:
    """How many rows row_store holds, as the planner estimates it: its statistics' rows per
    page times the pages it has now, or a guess from its size when it was never analyzed.
    ``pg_class.reltuples`` alone is -1 until the first vacuum or analyze (right after a first
    import) and stale after a big one, and read as "nothing stored" it made every part of a
    small export hash all of row_store, every dataset's rows."""
    row = conn.execute("EXPLAIN (FORMAT JSON) SELECT 1 FROM dsa_core.row_store").fetchone()
    assert row is not None
    return float(next(iter(row.values()))[0]["Plan"]["Plan Rows"])


class RowQuery:
    """SELECT of the chosen columns of rows [from, to) of a commit, filtered, in logical order.

    Values are stored as text[] in the sorted order of their column set's names, so a column
    is an array position; a commit made by appends may mix column sets, and then each column
    is chosen by the row's set. Column names never reach the SQL text (positions and set ids
    are integers), and filter values are always parameters.
    """

    def __init__(self, conn: db.Conn, all_columns: Sequence[str]) -> None:
        sets = conn.execute(
            "SELECT column_set_id, columns FROM dsa_core.column_sets WHERE columns <@ %s::text[]",
            (list(all_columns),),
        ).fetchall()
        self.sets: list[tuple[int, list[str]]] = [(s["column_set_id"], s["columns"]) for s in sets]
        self.stored_rows = stored_rows_estimate(conn)

    # Measured at 1M stored rows (parts of 500,000: hashing was as fast or faster) and at 6M
    # (parts of 1M: probing in hash order took 90 s for 5M rows where hashing took 126 s).
    HASH_ALL_SHARE = 0.25

    def _hash_all(self, rows: int) -> bool:
        return rows >= self.HASH_ALL_SHARE * self.stored_rows

    def value(self, column: str) -> sql.Composable:
        branches = [
            (set_id, names.index(column) + 1) for set_id, names in self.sets if column in names
        ]
        if not branches:
            return sql.SQL("NULL::text")
        if len(self.sets) == 1:
            return sql.SQL("s.vals[{}]").format(sql.Literal(branches[0][1]))
        return sql.SQL("CASE s.column_set_id {} END").format(
            sql.SQL(" ").join(
                sql.SQL("WHEN {} THEN s.vals[{}]").format(sql.Literal(i), sql.Literal(p))
                for i, p in branches
            )
        )

    def typed_value(self, column: str, type_: str | None) -> sql.Composable:
        """The column's value as its schema's type (text if it has none): what Parquet gets.
        Every value of the commit fits its column's type (:mod:`.schema`), so casts succeed."""
        value = self.value(column)
        if type_ in (None, "text"):
            return value
        if type_ == "boolean":
            return sql.SQL("CASE WHEN {v} IS NULL OR {v} = '' THEN NULL ELSE {true} END").format(
                v=value, true=schema.spells(value, True)
            )
        cast = {
            "integer": "bigint",
            "number": "double precision",
            "date": "date",
            "timestamp": "timestamptz",
        }[type_]
        return sql.SQL("NULLIF({}, '')::{}").format(value, sql.SQL(cast))

    def select(
        self,
        columns: Sequence[str],
        filter_: dict[str, Any] | None,
        commit_id: str,
        from_row: int,
        to_row: int,
        types: dict[str, str] | None = None,
    ) -> tuple[sql.Composed, list[Any]]:
        params: list[Any] = [commit_id, from_row, to_row]
        conditions: list[sql.Composable] = []
        for column, wanted in (filter_ or {}).items():
            conditions.extend(self._conditions(self.value(column), wanted, params))
        where = (
            sql.SQL(" WHERE ") + sql.SQL(" AND ").join(conditions) if conditions else sql.SQL("")
        )
        if self._hash_all(to_row - from_row):
            # A large share of all stored rows: one hash of row_store, then a sort.
            shape = (
                "SELECT {fields} FROM dsa_core.commit_row_range(%s, %s, %s) r "
                "JOIN dsa_core.row_store s ON s.row_hash = r.row_hash{where} ORDER BY r.row_number"
            )
        else:
            # A small share: each row is looked up by its hash, in hash order (the load
            # inserts new rows in hash order, so neighbours share pages), then put back in
            # row order. Left to itself the planner (which guesses 111,000 rows for any range)
            # hashes all of row_store for every part: every stored row of every dataset paid
            # per part. OFFSET 0 keeps both subqueries as written.
            shape = (
                "SELECT {fields} FROM (SELECT row_number, row_hash "
                "FROM dsa_core.commit_row_range(%s, %s, %s) ORDER BY row_hash OFFSET 0) r "
                "CROSS JOIN LATERAL (SELECT s.vals, s.column_set_id FROM dsa_core.row_store s "
                "WHERE s.row_hash = r.row_hash OFFSET 0) s{where} ORDER BY r.row_number"
            )
        query = sql.SQL(shape).format(
            fields=sql.SQL(", ").join(self.typed_value(c, (types or {}).get(c)) for c in columns)
            if columns
            else sql.SQL("1"),
            where=where,
        )
        return query, params

    @staticmethod
    def _conditions(expr: sql.Composable, wanted: Any, params: list[Any]) -> list[sql.Composable]:
        bounds = wanted if isinstance(wanted, dict) else {"eq": wanted}
        ops = {"eq": "=", "gt": ">", "gte": ">=", "lt": "<", "lte": "<="}
        out: list[sql.Composable] = []
        for name, value in bounds.items():
            if value is None:
                out.append(sql.SQL("{} IS NULL").format(expr))
            elif isinstance(value, bool):  # a boolean column's (check_request): its spellings
                out.append(schema.spells(expr, value))
            elif isinstance(value, (int, float)):  # booleans were taken by the branch above
                out.append(
                    sql.SQL("dsa_core.try_numeric({}) {} %s::numeric").format(
                        expr, sql.SQL(ops[name])
                    )
                )
                params.append(value)
            else:
                # byte order, whatever the database's collation: the same on every server
                out.append(sql.SQL('{} COLLATE "C" {} %s').format(expr, sql.SQL(ops[name])))
                params.append(str(value))
        return out


# -- formats ---------------------------------------------------------------------------------


def _csv_line(values: Sequence[str]) -> bytes:
    text = io.StringIO()
    csv.writer(text, lineterminator="\n").writerow(values)
    return text.getvalue().encode()


# One part of 500,000 rows (41 MB): 0.44-0.48 CPU-s of its worker gathered, 0.58-0.61 CPU-s
# with one write per row (bench/README.md)
GATHER_BYTES = 1 << 20
# A CSV part tells its progress at most this often, and once at its end: each telling is an
# UPDATE of the part's row, on AWS a round trip through the proxy
PROGRESS_SECONDS = 1.0


def write_csv(
    conn: psycopg.Connection[Any],
    query: sql.Composed,
    params: list[Any],
    columns: list[str],
    out: Any,
    progress: Callable[[int], None] | None = None,
    progress_seconds: float = PROGRESS_SECONDS,
) -> int:
    """Header, then COPY's own CSV; returns the rows written. ``progress`` is told the rows
    written so far when a gathered MiB reaches the sink ``progress_seconds`` or more after it
    was last told, and once at the end."""
    if not columns:
        return 0
    # The header is written here, not by COPY's HEADER: column names can be longer than
    # PostgreSQL's 63-byte identifiers, and must come back exactly as they were imported.
    out.write(_csv_line(columns))
    with conn.cursor() as cur:
        with cur.copy(sql.SQL("COPY ({}) TO STDOUT (FORMAT csv)").format(query), params) as copy:
            # libpq hands COPY's output over a row at a time (a block is a row: the backend
            # sends each in a CopyData message of its own): gathered into GATHER_BYTES, the
            # sink (its sha256, its buffer, a gzip stream) is called once per MiB, not per row
            gathered = bytearray()
            rows, told = 0, time.monotonic()
            for block in copy:
                gathered += block
                rows += 1
                if len(gathered) >= GATHER_BYTES:
                    out.write(gathered)
                    gathered = bytearray()
                    if progress is not None and time.monotonic() - told >= progress_seconds:
                        progress(rows)
                        told = time.monotonic()
            if gathered:
                out.write(gathered)
        if progress is not None:
            progress(rows)
        return max(cur.rowcount, 0)


def _batches(
    conn: psycopg.Connection[Any], query: sql.Composed, params: list[Any], batch_rows: int
) -> Any:
    with conn.cursor(name="sluiceway_export", row_factory=tuple_row) as cur:
        cur.itersize = batch_rows
        cur.execute(query, params)
        while rows := cur.fetchmany(batch_rows):
            yield rows


def write_json(
    conn: psycopg.Connection[Any],
    query: sql.Composed,
    params: list[Any],
    columns: list[str],
    out: Any,
    *,
    array: bool,
    batch_rows: int,
    progress: Callable[[int], None],
) -> int:
    """A JSON array or JSON Lines, one object per row with the columns in order."""
    dumps = json.JSONEncoder(ensure_ascii=False, separators=(", ", ": ")).encode
    rows = 0
    if array:
        out.write(b"[")
    for batch in _batches(conn, query, params, batch_rows):
        texts = [dumps(dict(zip(columns, row, strict=True))) for row in batch]
        if array:
            out.write(((",\n" if rows else "\n") + ",\n".join(texts)).encode())
        else:
            out.write(("\n".join(texts) + "\n").encode())
        rows += len(batch)
        progress(rows)
    if array:
        out.write(b"\n]\n" if rows else b"]\n")
    return rows


def write_parquet(
    conn: psycopg.Connection[Any],
    query: sql.Composed,
    params: list[Any],
    columns: list[str],
    out: Any,
    *,
    compression: str,
    batch_rows: int,
    progress: Callable[[int], None],
    types: dict[str, str] | None = None,
) -> int:
    """Parquet, one row group per batch; each column of the type its schema says (``types``:
    integer int64, number float64, boolean, date date32, timestamp in UTC), else a string."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    arrow = {
        "integer": pa.int64(),
        "number": pa.float64(),
        "boolean": pa.bool_(),
        "date": pa.date32(),
        "timestamp": pa.timestamp("us", tz="UTC"),
    }
    fields = [pa.field(c, arrow.get((types or {}).get(c) or "text", pa.string())) for c in columns]
    schema = pa.schema(fields)
    rows = 0
    with pq.ParquetWriter(
        pa.PythonFile(out, mode="w"),
        schema,
        compression="gzip" if compression == "gzip" else "none",
    ) as writer:
        for batch in _batches(conn, query, params, batch_rows):
            arrays = [
                pa.array(col, type=f.type)
                for col, f in zip(zip(*batch, strict=True), fields, strict=True)
            ]
            writer.write_table(pa.Table.from_arrays(arrays, schema=schema))
            rows += len(batch)
            progress(rows)
    return rows


# -- the task --------------------------------------------------------------------------------


def write_part(event: dict[str, Any], settings: Settings | None = None) -> dict[str, Any]:
    """Write one part of an export; returns its row count. A retry starts the part over."""
    settings = settings or get_settings()
    item = PartItem.model_validate(event)
    conn = db.shared_connection(settings)
    part = conn.execute(
        "SELECT p.*, r.run_parameters FROM dsa_jobs.export_parts p "
        "JOIN dsa_jobs.analysis_runs r ON r.id = p.job_id WHERE p.job_id = %s AND p.part_no = %s",
        (item.job_id, item.part_no),
    ).fetchone()
    if part is None:
        raise NotFound(f"Export {item.job_id} has no part {item.part_no}.")
    if part["status"] == "written":  # a retry after a lost response: already done
        return {"part_no": item.part_no, "rows": part["row_count"]}
    client = storage.s3_client(settings)
    bucket = settings.storage.bucket
    if part["s3_upload_id"]:  # what an earlier attempt left open
        abort_upload(client, bucket, part["object_key"], part["s3_upload_id"])
    _update(
        conn, item, status="writing", s3_upload_id=None, rows_done=0, error=None, error_code=None
    )
    inject = faults.take(conn, item.job_id, "part", settings)
    params = part["run_parameters"]
    fmt = params["format"]
    sink = MultipartSink(
        client,
        bucket,
        part["object_key"],
        content_type=export.CONTENT_TYPES[fmt],
        piece_bytes=settings.exports.piece_bytes,
        on_open=lambda upload_id: _update(conn, item, s3_upload_id=upload_id),
    )
    try:
        rows = _write_rows(conn, part, params, sink, settings, item)
        if inject:  # rows written and a piece uploaded, the object not complete: must abort
            sink.send_piece()
            sink._wait()
            raise faults.fail("part")
        if faults.take(conn, item.job_id, "stall_part", settings):
            # the multipart upload open and recorded, the object not complete: the moment a
            # killed stack or a restarted database leaves the most behind in S3
            sink.send_piece()
            sink._wait()
            faults.stall(conn, item.job_id, "part", settings, taken=True)
        etag = sink.finish()
    except Exception as exc:
        gone = sink.abort()
        message = exc.message if isinstance(exc, SluicewayError) else f"{type(exc).__name__}: {exc}"
        if isinstance(exc, psycopg.OperationalError):
            code = DatabaseUnavailable.code
        elif isinstance(exc, (ClientError, BotoCoreError)):
            code = StorageUnavailable.code
        else:
            code = code_of(exc)
        _update(
            conn,
            item,
            status="failed",
            error=f"part {item.part_no}: {message}",
            error_code=code,
            **({"s3_upload_id": None} if gone else {}),
        )
        if isinstance(exc, SluicewayError):
            raise
        if isinstance(exc, psycopg.OperationalError):
            raise DatabaseUnavailable(f"part {item.part_no}: {exc}") from exc
        if isinstance(exc, (ClientError, BotoCoreError)):
            raise StorageUnavailable(f"part {item.part_no}: {exc}") from exc
        raise
    _update(
        conn,
        item,
        status="written",
        s3_upload_id=None,
        row_count=rows,
        bytes=sink.size,
        sha256=sink.sha256.hexdigest(),
        etag=etag,
        rows_done=part["to_row"] - part["from_row"],
    )
    return {"part_no": item.part_no, "rows": rows}


def _write_rows(
    conn: db.Conn,
    part: dict[str, Any],
    params: dict[str, Any],
    sink: MultipartSink,
    settings: Settings,
    item: PartItem,
) -> int:
    fmt, compression = params["format"], params["compression"]
    columns: list[str] = params["columns"]
    commit = conn.execute(
        "SELECT columns, schema FROM dsa_core.commits WHERE commit_id = %s",
        (params["commit_id"],),
    ).fetchone()
    if commit is None:
        raise NotFound(f"Commit {params['commit_id']} is gone (collected by gc?).")
    rows_query = RowQuery(conn, commit["columns"])
    # Parquet columns carry the commit's types (CSV and JSON stay as the text imported)
    types = (
        {c["name"]: c["type"] for c in commit["schema"]}
        if fmt == "parquet" and commit["schema"]
        else None
    )
    query, values = rows_query.select(
        columns,
        params["options"].get("filter"),
        params["commit_id"],
        part["from_row"],
        part["to_row"],
        types,
    )
    span = part["to_row"] - part["from_row"]
    batch = settings.exports.batch_rows

    def progress(done: int) -> None:
        # rows written so far: with a filter fewer than read, so the part's share runs low
        # until it is written (then rows_done is its whole span)
        _update(conn, item, rows_done=min(done, span))

    # A connection of its own: the cursor's transaction must not hold this part's status
    # updates back, and a part is one Lambda invocation anyway.
    with db.connect(settings) as read:
        read.execute("SET TRANSACTION READ ONLY")
        read.execute("SET TIME ZONE 'UTC'")  # a timestamp without a zone is read as UTC
        text_out: Any = sink
        zipped = None
        if compression == "gzip" and fmt != "parquet":
            zipped = text_out = gzip.GzipFile(fileobj=sink, mode="wb", compresslevel=6, mtime=0)
        if fmt == "csv":
            rows = write_csv(read, query, values, columns, text_out, progress)
        elif fmt == "parquet":
            rows = write_parquet(
                read,
                query,
                values,
                columns,
                sink,
                compression=compression,
                batch_rows=batch,
                progress=progress,
                types=types,
            )
        else:
            rows = write_json(
                read,
                query,
                values,
                columns,
                text_out,
                array=fmt == "json",
                batch_rows=batch,
                progress=progress,
            )
        if zipped is not None:
            zipped.close()  # writes gzip's trailer into the sink (the sink stays open)
        read.rollback()
    return rows


def _update(conn: db.Conn, item: PartItem, **fields: Any) -> None:
    assignments = sql.SQL(", ").join(
        sql.SQL("{} = %s").format(sql.Identifier(name)) for name in fields
    )
    conn.execute(
        sql.SQL(
            "UPDATE dsa_jobs.export_parts SET {}, updated_at = now() "
            "WHERE job_id = %s AND part_no = %s"
        ).format(assignments),
        [*fields.values(), item.job_id, item.part_no],
    )
