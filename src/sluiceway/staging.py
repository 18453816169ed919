"""The upload lifecycle (seed 003's staging): list, inspect, retry and clean up uploads.

An upload's state is never written by the pipeline's stages; it is derived at read time, in
SQL (the ``dsa_jobs.upload_states`` view), from the upload row and its import job:

- ``uploading``: parts are still arriving (the S3 multipart upload is open);
- ``uploaded``: the object is complete and its job has not started;
- ``validating``: the job is planning or scanning (header, record boundaries);
- ``processing``: the job is loading ranges or committing;
- ``fresh``: the import committed; ``failed``: it did not; ``aborted``: the upload was abandoned.

A retry runs the import again on the same object. Executions are named after the object's key
and ETag (so a repeated S3 event starts nothing), and the planner claims the job the upload row
points at only while it is pending. So a retry gives the upload a new pending job and starts
the state machine explicitly, with an object-created event of its own and an execution name
of its own: no copy of a possibly 1 TB object is made.
"""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from typing import Any, Literal

import boto3
from botocore.exceptions import BotoCoreError, ClientError
from psycopg import sql
from pydantic import BaseModel

from . import jobs, sessions, storage
from .db import Conn
from .errors import ABORTED, Conflict, StorageUnavailable
from .settings import Settings, get_settings
from .upload import upload_row

State = Literal["uploading", "uploaded", "validating", "processing", "fresh", "failed", "aborted"]
STATES: tuple[str, ...] = State.__args__  # type: ignore[attr-defined]


class UploadInfo(BaseModel):
    """An upload as users see it: where it is in its lifecycle, and its import's progress."""

    upload_id: uuid.UUID
    status: State
    filename: str
    dataset: str
    key: str
    size_bytes: int | None
    options: dict[str, Any]
    job_id: uuid.UUID
    job_status: str
    stage: str | None
    progress: dict[str, Any]
    error_message: str | None
    error_code: str | None  # what kind of failure (docs/architecture.md)
    output_summary: dict[str, Any] | None
    attempts: int
    created_at: datetime
    completed_at: datetime | None


_SELECT = """
SELECT upload_id, state AS status, filename, dataset_name AS dataset, object_key AS key,
       size_bytes, options, job_id, job_status, stage, progress, error_message, error_code,
       output_summary, attempts, created_at, completed_at
FROM dsa_jobs.upload_states
"""


def _info(row: dict[str, Any]) -> UploadInfo:
    info = UploadInfo.model_validate(row)
    total = info.progress.get("total_bytes") or info.size_bytes
    if info.status == "fresh":
        info.progress = {**info.progress, "percent": 100.0}
    elif total and info.status in ("validating", "processing"):
        done = info.progress.get("bytes_done", 0)
        info.progress = {**info.progress, "percent": round(min(100.0, 100.0 * done / total), 1)}
    return info


def get(conn: Conn, owner: str, upload_id: str) -> UploadInfo:
    """One upload of ``owner`` with its derived state; another owner's is NotFound."""
    row = upload_row(conn, owner, upload_id)
    found = conn.execute(_SELECT + " WHERE upload_id = %s", (row["upload_id"],)).fetchone()
    assert found is not None
    return _info(found)


def list_uploads(
    conn: Conn,
    owner: str,
    *,
    status: str | None = None,
    dataset: str | None = None,
    limit: int = 100,
) -> list[UploadInfo]:
    """The owner's uploads, newest first, optionally only those in one state."""
    rows = conn.execute(
        _SELECT + " WHERE owner = %(owner)s"
        " AND (%(status)s::text IS NULL OR state = %(status)s)"
        " AND (%(dataset)s::text IS NULL OR dataset_name = %(dataset)s)"
        " ORDER BY created_at DESC LIMIT %(limit)s",
        {"owner": owner, "status": status, "dataset": dataset, "limit": limit},
    ).fetchall()
    return [_info(r) for r in rows]


def counts(conn: Conn) -> dict[str, int]:
    """How many uploads are in flight and how many failed (all owners: for /health)."""
    row = conn.execute(
        "SELECT count(*) FILTER (WHERE state IN "
        "('uploading', 'uploaded', 'validating', 'processing')) AS active, "
        "count(*) FILTER (WHERE state = 'failed') AS failed FROM dsa_jobs.upload_states"
    ).fetchone()
    assert row is not None
    return {"active": int(row["active"]), "failed": int(row["failed"])}


def download_url(
    conn: Conn, owner: str, upload_id: str, settings: Settings | None = None
) -> dict[str, Any]:
    """A presigned GET URL of the uploaded object (S3 honours Range on it)."""
    settings = settings or get_settings()
    row = upload_row(conn, owner, upload_id)
    if row["status"] == "aborted":
        raise Conflict(f"Upload {upload_id} was aborted; there is no file.")
    if row["status"] == "uploading" and row["s3_upload_id"] is not None:
        raise Conflict(f"Upload {upload_id} is still uploading.")
    params = {"Bucket": row["bucket"], "Key": row["object_key"]}
    return {
        "url": storage.presign("get_object", params, settings),
        "expires_in": settings.storage.presign_expiry_seconds,
        "filename": row["filename"],
    }


def retry(conn: Conn, owner: str, upload_id: str, settings: Settings | None = None) -> UploadInfo:
    """Run a failed upload's import again on the same object, as a new job."""
    settings = settings or get_settings()
    current = get(conn, owner, upload_id)
    if current.status != "failed":
        raise Conflict(
            f"Upload {upload_id} is {current.status}; only a failed import can be retried."
        )
    row = upload_row(conn, owner, upload_id)
    try:
        head = storage.s3_client(settings).head_object(Bucket=row["bucket"], Key=row["object_key"])
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
            raise Conflict(
                f"The object of upload {upload_id} is gone; upload the file again."
            ) from exc
        raise StorageUnavailable(
            f"Cannot read s3://{row['bucket']}/{row['object_key']}: {exc}"
        ) from exc
    with conn.transaction():
        # the lock makes two concurrent retries start one job, not two
        locked = conn.execute(
            "SELECT u.job_id, r.status::text AS job_status, r.run_parameters "
            "FROM dsa_jobs.uploads u JOIN dsa_jobs.analysis_runs r ON r.id = u.job_id "
            "WHERE u.upload_id = %s FOR UPDATE OF u",
            (row["upload_id"],),
        ).fetchone()
        assert locked is not None
        if locked["job_status"] not in ("failed", "cancelled"):
            raise Conflict(f"Upload {upload_id} is already being retried.")
        parameters = {k: v for k, v in locked["run_parameters"].items() if k not in ("execution",)}
        parameters["retry_of"] = str(locked["job_id"])
        job_id = jobs.create(conn, "import", owner, parameters)
        # the object as it is now, its size too: one fixed in storage since is another size
        # than the declared one, which the planner would refuse (the limits it still checks)
        conn.execute(
            "UPDATE dsa_jobs.uploads SET job_id = %s, attempts = attempts + 1, size_bytes = %s "
            "WHERE upload_id = %s",
            (job_id, int(head["ContentLength"]), row["upload_id"]),
        )
    try:
        start_import(settings, row["bucket"], row["object_key"], head, name=f"retry-{job_id}")
    except Exception as exc:
        jobs.fail(
            conn, job_id, f"The retry could not start the import: {exc}", StorageUnavailable.code
        )
        raise StorageUnavailable(f"The retry could not start the import: {exc}") from exc
    return get(conn, owner, upload_id)


def start_import(
    settings: Settings, bucket: str, key: str, head: dict[str, Any] | Any, *, name: str
) -> str:
    """Start the import state machine on an object, as its object-created event would."""
    if not settings.import_state_machine_arn:
        raise StorageUnavailable(
            "No import state machine is configured (SLUICEWAY_IMPORT_STATE_MACHINE_ARN)."
        )
    detail = {
        "version": "0",
        "bucket": {"name": bucket},
        "object": {
            "key": key,
            "size": int(head["ContentLength"]),
            "eTag": str(head["ETag"]).strip('"'),
        },
        "reason": "Retry",
    }
    event = {
        "version": "0",
        "id": str(uuid.uuid4()),
        "detail-type": "Object Created",
        "source": "aws.s3",
        "time": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "region": settings.storage.region,
        "resources": [f"arn:aws:s3:::{bucket}"],
        "detail": detail,
    }
    local = settings.stepfunctions_endpoint_url
    client = boto3.client(
        "stepfunctions",
        endpoint_url=local,
        region_name=settings.storage.region,
        # the local stack's moto takes any key; on AWS the function's role signs
        aws_access_key_id="sluiceway-local" if local else None,
        aws_secret_access_key="sluiceway-local" if local else None,
    )
    started = client.start_execution(
        stateMachineArn=settings.import_state_machine_arn, name=name[:80], input=json.dumps(event)
    )
    return str(started["executionArn"])


class CleanupResult(BaseModel):
    aborted_uploads: list[uuid.UUID]
    aborted_documents: list[uuid.UUID]
    aborted_sessions: list[uuid.UUID]
    older_than_hours: float


def cleanup(
    conn: Conn, owner: str, older_than_hours: float, settings: Settings | None = None
) -> CleanupResult:
    """Abort the owner's multipart uploads (imports and documents) still open after N hours,
    and record sessions that got no chunk for N hours (their chunks are deleted).

    S3 keeps the parts of an open multipart upload (and bills for them) until it is aborted;
    on AWS the bucket's lifecycle rule also aborts them after 2 days.
    """
    settings = settings or get_settings()
    client = storage.s3_client(settings)
    aborted: dict[str, list[uuid.UUID]] = {"uploads": [], "documents": []}
    queries = {
        "uploads": (
            # a started job means the object arrived (a presigned POST has no complete call)
            "SELECT u.upload_id AS id, u.bucket, u.object_key, u.s3_upload_id, u.job_id "
            "FROM dsa_jobs.uploads u JOIN dsa_jobs.analysis_runs r ON r.id = u.job_id "
            "WHERE u.owner = %s AND u.status = 'uploading' AND r.status = 'pending' "
            "AND u.created_at < now() - make_interval(secs => %s)"
        ),
        "documents": (
            "SELECT id, bucket, object_key, s3_upload_id, NULL::uuid AS job_id "
            "FROM dsa_core.documents WHERE owner = %s AND status = 'uploading' "
            "AND created_at < now() - make_interval(secs => %s)"
        ),
    }
    tables = {
        "uploads": ("dsa_jobs.uploads", "upload_id"),
        "documents": ("dsa_core.documents", "id"),
    }
    for kind, query in queries.items():
        for row in conn.execute(query, (owner, older_than_hours * 3600)).fetchall():
            if row["s3_upload_id"]:
                try:
                    client.abort_multipart_upload(
                        Bucket=row["bucket"], Key=row["object_key"], UploadId=row["s3_upload_id"]
                    )
                except ClientError as exc:
                    if exc.response.get("Error", {}).get("Code") != "NoSuchUpload":
                        raise StorageUnavailable(f"S3 refused to abort an upload: {exc}") from exc
                except BotoCoreError as exc:
                    raise StorageUnavailable(f"S3 did not answer: {exc}") from exc
            table, id_column = tables[kind]
            with conn.transaction():
                conn.execute(
                    sql.SQL(
                        "UPDATE {} SET status = 'aborted' WHERE {} = %s AND status = 'uploading'"
                    ).format(sql.Identifier(*table.split(".")), sql.Identifier(id_column)),
                    (row["id"],),
                )
                if row["job_id"] is not None:
                    jobs.fail(
                        conn,
                        row["job_id"],
                        f"The upload was abandoned: still incomplete after {older_than_hours:g} h.",
                        ABORTED,
                    )
            aborted[kind].append(row["id"])
    return CleanupResult(
        aborted_uploads=aborted["uploads"],
        aborted_documents=aborted["documents"],
        aborted_sessions=sessions.abandon_idle(conn, owner, older_than_hours, settings),
        older_than_hours=older_than_hours,
    )
