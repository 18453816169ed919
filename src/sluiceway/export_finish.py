"""Export stage 3, finish: the manifest and a completed job, or on failure nothing at all.

State "Write the manifest" runs :func:`finish_export`: every part must be recorded as written
(moto's Distributed Map, like a Map whose failures are tolerated, may end without failing when
an iteration did), then the manifest (part keys, row counts, bytes, SHA-256 checksums) is
written last, so its presence means the export is whole. "Record the failure" runs
:func:`fail_export`: it aborts every multipart upload the export opened (those recorded, and
any left under its prefix), deletes the parts it completed, and marks the job failed.
"""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from typing import Any

from . import db, jobs, storage
from .errors import SluicewayError, code_of_name
from .export_part import abort_upload
from .export_plan import ExportState
from .finalize import error_message
from .settings import Settings, get_settings


class ExportIncomplete(SluicewayError):
    """A part of the export was not written; the export fails as a whole."""

    code = "export_failed"


def finish_export(state: dict[str, Any], settings: Settings | None = None) -> dict[str, Any]:
    """Write the manifest of a fully written export and mark its job completed."""
    settings = settings or get_settings()
    plan = ExportState.model_validate(state)
    job_id = uuid.UUID(plan.job_id)
    conn = db.shared_connection(settings)
    job = jobs.get(conn, job_id)
    if job.status == "completed":  # a retry after a lost response
        return {**plan.model_dump(), "summary": job.output_summary}
    parts = conn.execute(
        "SELECT * FROM dsa_jobs.export_parts WHERE job_id = %s ORDER BY part_no", (job_id,)
    ).fetchall()
    unwritten = [p for p in parts if p["status"] != "written"]
    if unwritten or not parts:
        first = next((p for p in unwritten if p["error"]), unwritten[0] if unwritten else None)
        reason = (first or {}).get(
            "error"
        ) or f"part {(first or {}).get('part_no')} was not written"
        raise ExportIncomplete(f"{len(unwritten)} of {len(parts)} parts failed; {reason}")
    params = job.run_parameters
    manifest_key = f"{params['prefix']}manifest.json"
    listed = [
        {
            "part_no": p["part_no"],
            "key": p["object_key"],
            "rows": p["row_count"],
            "bytes": p["bytes"],
            "sha256": p["sha256"],
            "etag": p["etag"],
            "from_row": p["from_row"],
            "to_row": p["to_row"],
        }
        for p in parts
    ]
    summary = {
        "dataset": params["dataset"],
        "commit_id": params["commit_id"],
        "requested_commit": params.get("requested_commit"),
        "format": params["format"],
        "compression": params["compression"],
        "columns": params["columns"],
        "filter": params["options"].get("filter"),
        "rows": sum(int(p["row_count"]) for p in parts),
        "bytes": sum(int(p["bytes"]) for p in parts),
        "parts": listed,
        "manifest_key": manifest_key,
    }
    manifest = {
        "job_id": str(job_id),
        **{k: v for k, v in summary.items() if k != "manifest_key"},
        "bucket": settings.storage.bucket,
        "created_at": datetime.now(UTC).isoformat(),
    }
    storage.s3_client(settings).put_object(
        Bucket=settings.storage.bucket,
        Key=manifest_key,
        Body=json.dumps(manifest, indent=1).encode(),
        ContentType="application/json",
    )
    jobs.update(conn, job_id, progress={"stage": "completed"})
    jobs.complete(conn, job_id, summary, params.get("dataset_id"))
    return {**plan.model_dump(), "summary": {"rows": summary["rows"], "parts": len(parts)}}


def fail_export(state: dict[str, Any], settings: Settings | None = None) -> dict[str, Any]:
    """Abort every upload the export opened, delete its parts, mark the job failed."""
    settings = settings or get_settings()
    conn = db.shared_connection(settings)
    message = error_message(state.get("error"))
    code = code_of_name((state.get("error") or {}).get("Error"))
    job_id_text = state.get("job_id") or (state.get("input") or {}).get("job_id")
    if not job_id_text:
        return {"job_id": None, "error": message, "error_code": code}
    job_id = uuid.UUID(str(job_id_text))
    row = conn.execute(
        "SELECT run_parameters->>'prefix' AS prefix FROM dsa_jobs.analysis_runs WHERE id = %s",
        (job_id,),
    ).fetchone()
    parts = _parts(conn, job_id)
    failed = next((p for p in parts if p["error"]), None)
    if failed is not None:
        message, code = failed["error"], failed["error_code"] or code
    left_open = release_storage(conn, settings, job_id, row["prefix"] if row else None, parts)
    with conn.transaction():
        conn.execute(
            "UPDATE dsa_jobs.export_parts SET status = 'aborted', s3_upload_id = NULL, "
            "updated_at = now() WHERE job_id = %s AND status <> 'aborted'",
            (job_id,),
        )
        jobs.fail(conn, job_id, message, code)
    if left_open:
        raise ExportIncomplete(
            f"{left_open} multipart upload(s) of export {job_id} could not be aborted yet."
        )
    return {"job_id": str(job_id), "error": message, "error_code": code}


def _parts(conn: db.Conn, job_id: uuid.UUID) -> list[dict[str, Any]]:
    return conn.execute(
        "SELECT part_no, object_key, s3_upload_id, error, error_code FROM dsa_jobs.export_parts "
        "WHERE job_id = %s ORDER BY part_no",
        (job_id,),
    ).fetchall()


def release_storage(
    conn: db.Conn,
    settings: Settings,
    job_id: uuid.UUID,
    prefix: str | None,
    parts: list[dict[str, Any]] | None = None,
) -> int:
    """Abort every multipart upload an unfinished export opened and delete what it wrote
    (parts, a manifest); returns how many uploads are still open (S3 refused to abort them).

    Uploads are found twice: by the ids its parts recorded, and by listing its prefix, for
    one opened but never recorded (a function stopped between the two). Completed parts go
    too: a half export must not be mistaken for a whole one.
    """
    parts = _parts(conn, job_id) if parts is None else parts
    client = storage.s3_client(settings)
    bucket = settings.storage.bucket
    left_open = 0
    for p in parts:
        if p["s3_upload_id"] and not abort_upload(
            client, bucket, p["object_key"], p["s3_upload_id"]
        ):
            left_open += 1
    if prefix:
        pages = client.get_paginator("list_multipart_uploads").paginate(
            Bucket=bucket, Prefix=prefix
        )
        for page in pages:
            for upload in page.get("Uploads", []):
                if not abort_upload(client, bucket, upload["Key"], upload["UploadId"]):
                    left_open += 1
        keys = [p["object_key"] for p in parts] + [f"{prefix}manifest.json"]
        for start in range(0, len(keys), 1000):
            client.delete_objects(
                Bucket=bucket,
                Delete={"Objects": [{"Key": k} for k in keys[start : start + 1000]], "Quiet": True},
            )
    return left_open
