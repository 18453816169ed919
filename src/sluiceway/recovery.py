"""What jobs that never ended leave behind, and what removes it.

A local stack that is killed (kill -9, a crash, a power cut) leaves its jobs running forever
and, in S3, the multipart uploads they had open: an export's parts (``exports/``), an import's
staged copy (``work/<job>/staged``), a record session's assembly (``uploads/``). S3 keeps the
parts of an open multipart upload, and bills for them, until someone aborts it.

- :func:`fail_abandoned`, at every stack start: the jobs whose stack is gone are failed with a
  message saying so, and what they had open in S3 is aborted (an export's parts deleted too).
- :func:`sweep`, every ``storage.sweep_seconds`` in the local stack and on demand with
  ``sluiceway cleanup``: multipart uploads under the exports, work and uploads prefixes older
  than ``storage.stale_upload_hours`` whose job has ended (or that no job knows) are aborted.
  A user's upload in progress is never touched (its upload row is still ``uploading``);
  abandoned user uploads are ``sluiceway uploads cleanup``'s, which marks their records too.

On AWS the data bucket's lifecycle rule ``AbortIncompleteUploads`` (infra storage construct)
aborts every multipart upload two days after it started, anywhere in the bucket: exports and
work files included.
"""

from __future__ import annotations

import logging
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError
from pydantic import BaseModel

from . import db, export_finish, finalize, jobs, storage
from .errors import STACK_STOPPED, StorageUnavailable
from .export_part import abort_upload
from .settings import Settings

log = logging.getLogger("sluiceway.recovery")


def fail_abandoned(conn: db.Conn, settings: Settings, *, uploads_lost: bool) -> list[uuid.UUID]:
    """Fail the jobs of local stacks that died (killed, crashed) before those jobs ended.

    Nothing of such a job is visible: a commit and its ref move happen in one transaction
    that either happened (and the job is completed) or did not, and an export without its
    manifest is not one. What an import's ranges staged is dropped, as the state machine's
    failure path would have; the multipart uploads the job had open are aborted and an
    export's finished parts deleted (unless ``uploads_lost``: the S3 went with the stack).
    """
    failed: list[uuid.UUID] = []
    for job in jobs.abandoned(conn, uploads_lost=uploads_lost):
        job_id: uuid.UUID = job["job_id"]
        message = (
            "The local stack running this job stopped before the job ended (killed or crashed)."
        )
        if job["run_type"] == "import":
            message += " Nothing was committed and no ref moved. " + (
                "Upload the file again: it was held by the stack's own S3, which went with it."
                if uploads_lost
                else f"Run it again with `sluiceway uploads retry {job['upload_id']}`."
            )
        elif job["run_type"] == "export":
            message += " No manifest was written and no part was kept: request the export again."
        with conn.transaction():
            if not jobs.fail(conn, job_id, message, STACK_STOPPED):
                continue
            finalize.discard_rows(conn, job_id)
            if job["run_type"] == "export":
                conn.execute(
                    "UPDATE dsa_jobs.export_parts SET status = 'aborted', updated_at = now() "
                    "WHERE job_id = %s AND status <> 'aborted'",
                    (job_id,),
                )
        failed.append(job_id)
        if not uploads_lost:
            try:
                _release(conn, settings, job_id, job["run_type"], job["prefix"])
            except (ClientError, BotoCoreError, StorageUnavailable):
                # the job is failed either way; the sweep aborts what is left later
                log.warning("could not abort the uploads of abandoned job %s", job_id)
    return failed


def _release(
    conn: db.Conn, settings: Settings, job_id: uuid.UUID, run_type: str, prefix: str | None
) -> None:
    if run_type == "export":
        export_finish.release_storage(conn, settings, job_id, prefix)
        conn.execute(
            "UPDATE dsa_jobs.export_parts SET s3_upload_id = NULL WHERE job_id = %s", (job_id,)
        )
    elif run_type == "import":
        client, bucket = storage.s3_client(settings), settings.storage.bucket
        for upload in _open_uploads(client, bucket, f"{settings.storage.work_prefix}{job_id}/"):
            abort_upload(client, bucket, upload["Key"], upload["UploadId"])


class SweptUpload(BaseModel):
    """One multipart upload the sweep aborted."""

    key: str
    upload_id: str
    initiated: datetime


def sweep(
    conn: db.Conn, settings: Settings, older_than_hours: float | None = None
) -> list[SweptUpload]:
    """Abort the multipart uploads sluiceway opened that nobody will complete: under the
    exports, work and uploads prefixes, started more than ``older_than_hours`` ago (default
    ``storage.stale_upload_hours``), whose job ended that long ago too (or that no job knows).

    A job still pending or running keeps its uploads, however old. Under the uploads prefix
    an upload whose record is still ``uploading`` is a user's upload in progress, and one no
    record knows may be one being created: both are left alone. (The job's end time counts
    as well as S3's: moto's S3 reports one fixed initiation date in 2010 for every upload.)
    """
    hours = settings.storage.stale_upload_hours if older_than_hours is None else older_than_hours
    cutoff = datetime.now(UTC) - timedelta(hours=hours)
    client, bucket, st = storage.s3_client(settings), settings.storage.bucket, settings.storage
    swept: list[SweptUpload] = []
    for prefix in (st.exports_prefix, st.work_prefix, st.uploads_prefix):
        for upload in _open_uploads(client, bucket, prefix):
            held, ended = _use(conn, settings, upload["Key"])
            if held or upload["Initiated"] > cutoff or (ended is not None and ended > cutoff):
                continue
            if abort_upload(client, bucket, upload["Key"], upload["UploadId"]):
                swept.append(
                    SweptUpload(
                        key=upload["Key"],
                        upload_id=upload["UploadId"],
                        initiated=upload["Initiated"],
                    )
                )
    return swept


def _use(conn: db.Conn, settings: Settings, key: str) -> tuple[bool, datetime | None]:
    """(held, ended): whether a job still pending or running (or a user's upload in
    progress) owns the upload at ``key``, and when the last job that did ended."""
    st = settings.storage
    if key.startswith(st.exports_prefix):
        row = conn.execute(
            "SELECT bool_or(status IN ('pending', 'running')) AS held, "
            "max(coalesce(completed_at, updated_at)) AS ended FROM dsa_jobs.analysis_runs "
            "WHERE run_type = 'export' AND starts_with(%s, run_parameters->>'prefix')",
            (key,),
        ).fetchone()
    elif key.startswith(st.work_prefix):
        try:
            job_id = uuid.UUID(key[len(st.work_prefix) :].split("/", 1)[0])
        except ValueError:
            return False, None  # not a job's: nothing of ours will complete it
        row = conn.execute(
            "SELECT status IN ('pending', 'running') AS held, "
            "coalesce(completed_at, updated_at) AS ended FROM dsa_jobs.analysis_runs "
            "WHERE id = %s",
            (job_id,),
        ).fetchone()
    else:
        row = conn.execute(
            "SELECT coalesce(bool_or(u.status = 'uploading' OR r.status IN ('pending', 'running')),"
            " true) AS held, max(coalesce(r.completed_at, r.updated_at)) AS ended "
            "FROM dsa_jobs.uploads u LEFT JOIN dsa_jobs.analysis_runs r ON r.id = u.job_id "
            "WHERE u.bucket = %s AND u.object_key = %s",
            (st.bucket, key),
        ).fetchone()
    if row is None:
        return False, None
    return bool(row["held"]), row["ended"]


def _open_uploads(client: Any, bucket: str, prefix: str) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    for page in client.get_paginator("list_multipart_uploads").paginate(
        Bucket=bucket, Prefix=prefix
    ):
        found.extend(page.get("Uploads", []))
    return found
