"""Stage 2b, load: one byte range streamed from S3 into PostgreSQL with COPY.

State "Load one range" of the import Map. PostgreSQL parses the CSV (its C parser applies
the same quote rule the planner used to cut the ranges), then hashes each row's canonical
JSON and adds the rows it has never seen to ``dsa_core.rows``. Everything a range writes
happens in one transaction, so a retried range leaves each row exactly once.
"""

from __future__ import annotations

import uuid
from typing import Any

import psycopg
from psycopg import sql
from smart_open import open as smart_open

from . import csvsplit, db, jobs, storage
from .errors import MalformedFile, NotFound
from .plan import ChunkItem, _read, job_source
from .settings import MiB, Settings, get_settings

READ_BYTES = 1 * MiB


def stage_tables(job_id: uuid.UUID, chunk_no: int) -> tuple[sql.Composed, sql.Composed]:
    """The raw and hashed staging tables of one range (UNLOGGED: rebuilt on retry anyway)."""
    base = f"j{job_id.hex}_{chunk_no}"
    return (
        sql.SQL("dsa_stage.{}").format(sql.Identifier(base)),
        sql.SQL("dsa_stage.{}").format(sql.Identifier(base + "_h")),
    )


def _column_idents(count: int) -> list[sql.Identifier]:
    return [sql.Identifier(f"c{i}") for i in range(1, count + 1)]


def load_chunk(event: dict[str, Any], settings: Settings | None = None) -> dict[str, Any]:
    """Load one resolved range; returns its row count."""
    settings = settings or get_settings()
    item = ChunkItem.model_validate(event)
    conn = db.shared_connection(settings)
    job = job_source(conn, item.job_id)
    chunk = conn.execute(
        "SELECT * FROM dsa_jobs.import_chunks WHERE job_id = %s AND chunk_no = %s",
        (item.job_id, item.chunk_no),
    ).fetchone()
    if chunk is None:
        raise NotFound(f"Job {item.job_id} has no range {item.chunk_no}.")
    if chunk["status"] == "loaded":  # a retry after a lost response: already done
        return {"chunk_no": item.chunk_no, "rows": chunk["row_count"]}
    params, checkpoint = job["run_parameters"], job["checkpoint"]
    columns: list[str] = checkpoint["columns"]
    bucket, key = params["bucket"], params["key"]
    start, end = chunk["start_byte"], chunk["end_byte"]
    raw_table, hashed_table = stage_tables(item.job_id, item.chunk_no)
    cols = sql.SQL(", ").join(_column_idents(len(columns)))

    try:
        with conn.transaction():
            conn.execute(sql.SQL("DROP TABLE IF EXISTS {}, {}").format(raw_table, hashed_table))
            conn.execute(
                sql.SQL(
                    "CREATE UNLOGGED TABLE {} (ord bigint GENERATED ALWAYS AS IDENTITY, {})"
                ).format(
                    raw_table,
                    sql.SQL(", ").join(
                        sql.SQL("{} text").format(c) for c in _column_idents(len(columns))
                    ),
                )
            )
            copy_sql = sql.SQL("COPY {} ({}) FROM STDIN (FORMAT csv, ENCODING 'UTF8')").format(
                raw_table, cols
            )
            with conn.cursor() as cur, cur.copy(copy_sql) as copy:
                _stream_range(copy, bucket, key, start, end, settings)
            conn.execute(
                sql.SQL(
                    "CREATE UNLOGGED TABLE {h} AS "
                    "SELECT ord, sha256(convert_to(data::text, 'UTF8')) AS row_hash, data "
                    "FROM (SELECT ord, jsonb_object({keys}::text[], ARRAY[{cols}]) AS data FROM {raw}) s"
                ).format(h=hashed_table, keys=sql.Literal(columns), cols=cols, raw=raw_table)
            )
            conn.execute(sql.SQL("DROP TABLE {}").format(raw_table))
            conn.execute(
                sql.SQL(
                    "INSERT INTO dsa_core.rows (row_hash, data) "
                    "SELECT h.row_hash, h.data FROM {} h "
                    "WHERE NOT EXISTS (SELECT 1 FROM dsa_core.rows r WHERE r.row_hash = h.row_hash) "
                    "ON CONFLICT (row_hash) DO NOTHING"
                ).format(hashed_table)
            )
            count_row = conn.execute(
                sql.SQL("SELECT count(*) AS n FROM {}").format(hashed_table)
            ).fetchone()
            rows = int(count_row["n"]) if count_row else 0
            conn.execute(
                "UPDATE dsa_jobs.import_chunks SET row_count = %s, status = 'loaded', updated_at = now() "
                "WHERE job_id = %s AND chunk_no = %s",
                (rows, item.job_id, item.chunk_no),
            )
            jobs.add_progress(
                conn, item.job_id, bytes_done=end - start, rows_done=rows, chunks_done=1
            )
    except psycopg.DataError as exc:
        raise _explain(exc, params, chunk, len(columns), settings) from exc
    return {"chunk_no": item.chunk_no, "rows": rows}


def _stream_range(
    copy: psycopg.Copy, bucket: str, key: str, start: int, end: int, settings: Settings
) -> None:
    """Stream bytes [start, end) of the object into COPY without holding the range in memory."""
    if end <= start:
        return
    with smart_open(
        f"s3://{bucket}/{key}", "rb", transport_params=storage.smart_open_params(settings)
    ) as f:
        f.seek(start)
        remaining = end - start
        while remaining:
            piece = f.read(min(READ_BYTES, remaining))
            if not piece:
                raise MalformedFile(
                    f"s3://{bucket}/{key} ended at byte {end - remaining:,}, before {end:,}."
                )
            copy.write(piece)
            remaining -= len(piece)


def _explain(
    exc: psycopg.DataError,
    params: dict[str, Any],
    chunk: dict[str, Any],
    column_count: int,
    settings: Settings,
) -> MalformedFile:
    """Turn PostgreSQL's complaint into one about the user's file: which line, which byte."""
    filename = params.get("filename") or params["key"]
    buf = _read(params["bucket"], params["key"], chunk["start_byte"], chunk["end_byte"], settings)
    found = csvsplit.find_bad_record(
        buf,
        base_offset=chunk["start_byte"],
        first_line=chunk["first_line"],
        column_count=column_count,
    )
    detail = exc.diag.message_primary or str(exc)
    if found is not None:
        return MalformedFile(f"{filename}: {found.message}", file=filename, **found.details)
    return MalformedFile(
        f"{filename}: bytes {chunk['start_byte']:,}-{chunk['end_byte']:,} (from line "
        f"{chunk['first_line']:,}) could not be loaded: {detail}",
        file=filename,
        byte_offset=chunk["start_byte"],
        line=chunk["first_line"],
    )
