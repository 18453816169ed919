"""The sweep of multipart uploads nobody will complete (`sluiceway cleanup`, and the local
stack's periodic sweep): it aborts what ended jobs left open under the exports and work
prefixes, and never a user's upload in progress or a running job's part."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import boto3
from export_support import release, run_export, wait_stalled
from tests.conftest import import_bytes

from sluiceway import recovery
from sluiceway.client import Client
from sluiceway.local.stack import LOCAL_KEY


def _s3(stack: Any) -> Any:
    return boto3.client(
        "s3",
        endpoint_url=stack.s3_endpoint,
        region_name="us-east-1",
        aws_access_key_id=LOCAL_KEY,
        aws_secret_access_key=LOCAL_KEY,
    )


def _open(stack: Any, prefix: str) -> set[str]:
    found = _s3(stack).list_multipart_uploads(Bucket=stack.settings.storage.bucket, Prefix=prefix)
    return {u["UploadId"] for u in found.get("Uploads", [])}


def _cleanup(stack: Any, tmp_path: Path, hours: str) -> dict[str, Any]:
    env = {
        "PATH": "/usr/bin:/bin",
        "SLUICEWAY_HOME": str(tmp_path / "unused-home"),
        "DATABASE_URL": stack.database_url,
        "AWS_ENDPOINT_URL_S3": stack.s3_endpoint,
        "AWS_ACCESS_KEY_ID": LOCAL_KEY,
        "AWS_SECRET_ACCESS_KEY": LOCAL_KEY,
        "SLUICEWAY_STORAGE__BUCKET": stack.settings.storage.bucket,
    }
    done = subprocess.run(
        [sys.executable, "-m", "sluiceway", "cleanup", "--older-than-hours", hours, "--json"],
        env=env | {"PYTHONPATH": ":".join(sys.path)},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def test_the_sweep_aborts_what_ended_jobs_left_and_nothing_in_use(
    stack: Any, client: Client, db: Any, tmp_path: Path, dataset_name: str
) -> None:
    # Given a user's upload in progress (its multipart upload open) ...
    in_progress = client.call(
        "POST", "/uploads", {"dataset": dataset_name, "filename": "big.csv", "size": 20 << 20}
    )
    user_uploads = _open(stack, in_progress["key"])
    assert len(user_uploads) == 1
    # ... an export whose part is stalled with its multipart upload open (its job running) ...
    import_bytes(
        client, tmp_path, b"id,v\n" + b"".join(b"%d,x\n" % i for i in range(50)), dataset_name
    )
    running = client.call(
        "POST",
        f"/datasets/{dataset_name}/exports",
        {"format": "csv", "part_rows": 100, "faults": {"stall_part": 1}},
    )
    wait_stalled(db, running["job_id"], "part")
    running_prefix = f"exports/local/{running['job_id']}/"
    try:
        _sweep_around_a_running_export(
            stack, client, db, tmp_path, dataset_name, in_progress, running_prefix
        )
    finally:  # a stalled part would keep the session's stack from stopping
        release(db, running["job_id"])
    deadline = time.monotonic() + 120
    while (status := client.call("GET", running["status_url"]))["status"] in ("pending", "running"):
        assert time.monotonic() < deadline, "the released export never ended"
        time.sleep(0.1)
    # and that export, released, completes and leaves nothing open
    assert status["status"] == "completed", status["error"]
    assert _open(stack, running_prefix) == set()


def _sweep_around_a_running_export(
    stack: Any,
    client: Client,
    db: Any,
    tmp_path: Path,
    dataset_name: str,
    in_progress: dict[str, Any],
    running_prefix: str,
) -> None:
    s3, bucket = _s3(stack), stack.settings.storage.bucket
    user_uploads = _open(stack, in_progress["key"])
    assert len(_open(stack, running_prefix)) == 1
    # ... an export that failed, and uploads no job will complete: an export part of a job
    # that ended, and a staged copy of a job that is gone
    failed = run_export(client, dataset_name, format="csv", part_rows=10, faults={"part": 1000})
    assert failed["status"] == "failed"
    ended_key = f"exports/local/{failed['job_id']}/part-00000.csv"
    stale_key = f"work/{uuid.uuid4()}/staged"
    ended_id = s3.create_multipart_upload(Bucket=bucket, Key=ended_key)["UploadId"]
    s3.create_multipart_upload(Bucket=bucket, Key=stale_key)

    # When the sweep runs with the default age (24 h), the upload of a job that ended a
    # moment ago is left (the unknown one may go: moto dates every upload 2010)
    swept = recovery.sweep(db, stack.settings)
    assert ended_key not in [u.key for u in swept]
    assert len(_open(stack, ended_key)) == 1

    # When `sluiceway cleanup --older-than-hours 0` runs
    result = _cleanup(stack, tmp_path, "0")

    # Then the uploads of ended or unknown jobs were aborted, and said so
    assert ended_id in {u["upload_id"] for u in result["aborted"]}
    assert _open(stack, ended_key) == set()
    assert _open(stack, stale_key) == set()
    # and the user's upload in progress and the running export's part were left alone
    assert _open(stack, in_progress["key"]) == user_uploads
    assert len(_open(stack, running_prefix)) == 1
