"""A failing part: the export fails whole, aborts its multipart uploads, leaves no manifest."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import boto3
import pytest
from export_support import commit_records, exported_records, run_export
from tests.conftest import import_bytes

from sluiceway.client import ApiError, Client
from sluiceway.local.stack import LOCAL_KEY

DATA = b"id,v\n" + b"".join(f"{i},value {i}\n".encode() for i in range(1, 41))


def _s3(stack: Any) -> Any:
    return boto3.client(
        "s3",
        endpoint_url=stack.s3_endpoint,
        region_name="us-east-1",
        aws_access_key_id=LOCAL_KEY,
        aws_secret_access_key=LOCAL_KEY,
    )


def _left_under(stack: Any, prefix: str) -> tuple[list[str], list[str]]:
    """(open multipart uploads, objects) under an export's prefix."""
    s3, bucket = _s3(stack), stack.settings.storage.bucket
    uploads = s3.list_multipart_uploads(Bucket=bucket, Prefix=prefix).get("Uploads", [])
    objects = s3.list_objects_v2(Bucket=bucket, Prefix=prefix).get("Contents", [])
    return [u["Key"] for u in uploads], [o["Key"] for o in objects]


def test_a_part_that_keeps_failing_leaves_no_upload_no_parts_and_no_manifest(
    stack: Any, client: Client, tmp_path: Path, dataset_name: str
) -> None:
    # Given a dataset, and an export whose every part fails after uploading a piece
    import_bytes(client, tmp_path, DATA, dataset_name)

    status = run_export(client, dataset_name, format="csv", part_rows=10, faults={"part": 1000})

    # Then the job failed and says why
    assert status["status"] == "failed"
    assert "Injected fault at 'part'" in status["error"]
    assert status["error_code"] == "database_unavailable"  # the part's own error's code
    assert status["finished_at"] is not None
    # And nothing is left under its prefix: no open multipart upload, no part, no manifest
    prefix = f"exports/local/{status['job_id']}/"
    assert _left_under(stack, prefix) == ([], [])
    # And there is nothing to download
    with pytest.raises(ApiError) as refused:
        client.call("GET", status["started"]["download_url"])
    assert refused.value.http_status == 409
    assert "failed" in refused.value.message


def test_a_part_that_fails_once_is_retried_and_the_export_is_whole(
    stack: Any, client: Client, db: Any, tmp_path: Path, dataset_name: str
) -> None:
    # Given an export whose first part attempt fails after opening its multipart upload
    job = import_bytes(client, tmp_path, DATA, dataset_name)

    status = run_export(client, dataset_name, format="jsonl", part_rows=10, faults={"part": 1})

    # Then the retry wrote it, the records are the commit's, and no upload was left open
    assert status["status"] == "completed", status
    commit = job["output_summary"]["commit_id"]
    assert exported_records(status) == commit_records(client, dataset_name, commit)
    uploads, objects = _left_under(stack, f"exports/local/{status['job_id']}/")
    assert uploads == []
    assert len(objects) == 5  # four parts and the manifest
    left = db.execute(
        "SELECT count(*) AS n FROM dsa_jobs.export_parts WHERE job_id = %s "
        "AND (status <> 'written' OR s3_upload_id IS NOT NULL)",
        (status["job_id"],),
    ).fetchone()
    assert left["n"] == 0
