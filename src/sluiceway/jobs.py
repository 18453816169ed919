"""Job records (dsa_jobs.analysis_runs): status, progress, checkpoints, outcome."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any, Literal

import psycopg
from psycopg.types.json import Jsonb
from pydantic import BaseModel

from .errors import NotFound
from .settings import get_settings

RunType = Literal["import", "export", "maintenance"]
Status = Literal["pending", "running", "completed", "failed", "cancelled"]

Conn = psycopg.Connection[dict[str, Any]]

# The first key of the advisory lock a local stack holds on its runtime id while it runs
# (pg_advisory_lock(RUNTIME_LOCK_CLASS, id): pg_locks shows it as classid, objid, objsubid 2).
RUNTIME_LOCK_CLASS = 0x736C77  # "slw"


class Job(BaseModel):
    """A job as users see it."""

    job_id: uuid.UUID
    run_type: RunType
    status: Status
    owner: str
    dataset: str | None
    run_parameters: dict[str, Any]
    progress: dict[str, Any]
    checkpoint: dict[str, Any] | None
    output_summary: dict[str, Any] | None
    error_message: str | None
    # what kind of failure: malformed_file, database_unavailable, ... (docs/architecture.md)
    error_code: str | None = None
    created_at: datetime
    started_at: datetime | None
    completed_at: datetime | None
    report_url: str | None = None  # the rejected-rows report (presigned GET), if there is one


_SELECT = """
SELECT r.id AS job_id, r.run_type::text AS run_type, r.status::text AS status, r.owner,
       coalesce(d.name, r.run_parameters->>'dataset') AS dataset, r.run_parameters,
       r.progress, r.checkpoint, r.output_summary, r.error_message, r.error_code,
       r.created_at,
       r.started_at, r.completed_at
FROM dsa_jobs.analysis_runs r
LEFT JOIN dsa_core.datasets d ON d.id = r.dataset_id
"""


def create(conn: Conn, run_type: RunType, owner: str, parameters: dict[str, Any]) -> uuid.UUID:
    """A pending job; a local stack's jobs carry its runtime id (see :func:`abandoned`)."""
    runtime = get_settings().local_runtime_id
    if runtime is not None:
        parameters = {**parameters, "runtime": runtime}
    row = conn.execute(
        "INSERT INTO dsa_jobs.analysis_runs (run_type, owner, run_parameters) "
        "VALUES (%s, %s, %s) RETURNING id",
        (run_type, owner, Jsonb(parameters)),
    ).fetchone()
    assert row is not None
    job_id: uuid.UUID = row["id"]
    return job_id


def claim(
    conn: Conn, job_id: uuid.UUID, progress: dict[str, Any], execution: str | None = None
) -> bool:
    """Move a pending job to running for one execution; False if another execution has it.

    The same execution may claim again (a retried task whose first answer was lost): its
    counters start over. A different execution is a repeated event and gets False.
    """
    cur = conn.execute(
        """
        UPDATE dsa_jobs.analysis_runs
        SET status = 'running', started_at = coalesce(started_at, now()), updated_at = now(),
            progress = %(progress)s,
            run_parameters = run_parameters || jsonb_build_object('execution', %(execution)s::text)
        WHERE id = %(id)s AND (status = 'pending' OR (
              status = 'running' AND %(execution)s::text IS NOT NULL
              AND run_parameters->>'execution' = %(execution)s::text))
        """,
        {"progress": Jsonb(progress), "execution": execution, "id": job_id},
    )
    return cur.rowcount == 1


def add_progress(
    conn: Conn, job_id: uuid.UUID, *, bytes_done: int = 0, rows_done: int = 0, chunks_done: int = 0
) -> None:
    """Add to the job's running counters (atomic, so parallel chunks may all report)."""
    conn.execute(
        """
        UPDATE dsa_jobs.analysis_runs SET updated_at = now(), progress = progress || jsonb_build_object(
            'bytes_done', coalesce((progress->>'bytes_done')::bigint, 0) + %(b)s,
            'rows_done', coalesce((progress->>'rows_done')::bigint, 0) + %(r)s,
            'chunks_done', coalesce((progress->>'chunks_done')::bigint, 0) + %(c)s)
        WHERE id = %(id)s
        """,
        {"b": bytes_done, "r": rows_done, "c": chunks_done, "id": job_id},
    )


def add_counter(conn: Conn, job_id: uuid.UUID, name: str, amount: int) -> None:
    """Add to one more counter of the job's progress (atomic, like :func:`add_progress`)."""
    conn.execute(
        "UPDATE dsa_jobs.analysis_runs SET progress = progress || jsonb_build_object("
        "%(name)s::text, coalesce((progress->>%(name)s)::bigint, 0) + %(n)s) WHERE id = %(id)s",
        {"name": name, "n": amount, "id": job_id},
    )


def update(
    conn: Conn,
    job_id: uuid.UUID,
    *,
    progress: dict[str, Any] | None = None,
    checkpoint: dict[str, Any] | None = None,
) -> None:
    conn.execute(
        "UPDATE dsa_jobs.analysis_runs SET updated_at = now(), "
        "progress = progress || coalesce(%s, '{}'::jsonb), "
        "checkpoint = coalesce(checkpoint, '{}'::jsonb) || coalesce(%s, '{}'::jsonb) "
        "WHERE id = %s",
        (Jsonb(progress) if progress else None, Jsonb(checkpoint) if checkpoint else None, job_id),
    )


def complete(
    conn: Conn, job_id: uuid.UUID, summary: dict[str, Any], dataset_id: int | None = None
) -> None:
    # clock_timestamp(), not now(): now() is when the transaction began, and the one that ends
    # an import is its commit (a re-import's diff, the lists, the ref), which the job's time
    # and its rows per second must count
    conn.execute(
        "UPDATE dsa_jobs.analysis_runs SET status = 'completed', completed_at = clock_timestamp(), "
        "updated_at = clock_timestamp(), output_summary = %s, dataset_id = coalesce(%s, dataset_id), "
        "error_message = NULL, error_code = NULL WHERE id = %s",
        (Jsonb(summary), dataset_id, job_id),
    )


def fail(conn: Conn, job_id: uuid.UUID, message: str, code: str) -> bool:
    """Mark a job failed unless it already ended; True if this call ended it. ``code`` says
    what kind of failure it was (an error class's ``code``, or one of errors.py's others)."""
    cur = conn.execute(
        "UPDATE dsa_jobs.analysis_runs SET status = 'failed', completed_at = clock_timestamp(), "
        "updated_at = clock_timestamp(), error_message = %s, error_code = %s "
        "WHERE id = %s AND status IN ('pending', 'running')",
        (message, code, job_id),
    )
    return cur.rowcount == 1


def abandoned(conn: Conn, *, uploads_lost: bool) -> list[dict[str, Any]]:
    """Unfinished jobs of local stacks that are gone: nobody holds their runtime's lock.

    A running one will never finish. A pending one will never start once its object is in
    place (the event that would have started it died with the stack), and neither will one
    still uploading when the stack's own S3 went with it (``uploads_lost``).
    """
    return conn.execute(
        """
        SELECT r.id AS job_id, r.run_type::text AS run_type, u.upload_id,
               r.run_parameters->>'prefix' AS prefix
        FROM dsa_jobs.analysis_runs r
        LEFT JOIN dsa_jobs.uploads u ON u.job_id = r.id
        WHERE r.status IN ('pending', 'running') AND r.run_parameters ? 'runtime'
          AND (r.status = 'running' OR %(lost)s OR u.status IS DISTINCT FROM 'uploading')
          AND NOT EXISTS (
              SELECT 1 FROM pg_locks l
              WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 2
                AND l.classid = %(class)s::oid
                AND l.objid = (r.run_parameters->>'runtime')::bigint::oid)
        ORDER BY r.created_at
        """,
        {"lost": uploads_lost, "class": RUNTIME_LOCK_CLASS},
    ).fetchall()


def get(conn: Conn, job_id: uuid.UUID | str, owner: str | None = None) -> Job:
    try:
        key = uuid.UUID(str(job_id))
    except ValueError as exc:
        raise NotFound(f"No job {job_id!r}: job ids are UUIDs.") from exc
    row = conn.execute(
        _SELECT + " WHERE r.id = %s AND (%s::text IS NULL OR r.owner = %s)", (key, owner, owner)
    ).fetchone()
    if row is None:
        raise NotFound(f"No job {job_id}.")
    return _job(row)


def list_jobs(
    conn: Conn, owner: str, limit: int = 50, *, key: str | None = None, dataset: str | None = None
) -> list[Job]:
    """The owner's newest jobs; ``key``: only the import of that uploaded object."""
    rows = conn.execute(
        _SELECT + " WHERE r.owner = %(owner)s"
        " AND (%(key)s::text IS NULL OR r.run_parameters->>'key' = %(key)s)"
        " AND (%(dataset)s::text IS NULL OR coalesce(d.name, r.run_parameters->>'dataset') = %(dataset)s)"
        " ORDER BY r.created_at DESC LIMIT %(limit)s",
        {"owner": owner, "key": key, "dataset": dataset, "limit": limit},
    ).fetchall()
    return [_job(r) for r in rows]


def _job(row: dict[str, Any]) -> Job:
    job = Job.model_validate(row)
    progress = dict(job.progress)
    total = progress.get("total_bytes")
    done = progress.get("bytes_done", 0)
    if total:
        progress["percent"] = round(min(100.0, 100.0 * done / total), 1)
    elif job.status == "completed":
        progress["percent"] = 100.0
    if job.started_at is not None:
        end = job.completed_at or datetime.now(job.started_at.tzinfo)
        seconds = max((end - job.started_at).total_seconds(), 1e-3)
        progress["seconds"] = round(seconds, 3)
        progress["rows_per_second"] = round(progress.get("rows_done", 0) / seconds, 1)
        if job.status == "running" and total and 0 < done < total:
            progress["eta_seconds"] = round(seconds * (total - done) / done, 1)
    job.progress = progress
    return job
