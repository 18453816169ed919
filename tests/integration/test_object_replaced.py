"""An upload replaced while it is imported: the import reads the object it planned (every GET
carries If-Match with the planner's ETag), so it fails with a clear error and commits nothing,
never a mix of two files (storage.as_planned)."""

from __future__ import annotations

import gzip
import time
from pathlib import Path
from typing import Any

import psycopg
import pytest
from tests.conftest import import_bytes, main_commit

from sluiceway import plan, storage, unpack
from sluiceway.client import Client
from sluiceway.errors import Conflict

CHANGED = "changed after this import planned it"


def _job(db: psycopg.Connection[dict[str, Any]], job_id: str) -> dict[str, Any]:
    row = db.execute(
        "SELECT run_parameters, coalesce(checkpoint, '{}'::jsonb) AS checkpoint "
        "FROM dsa_jobs.analysis_runs WHERE id = %s",
        (job_id,),
    ).fetchone()
    assert row is not None
    return row


def _rows(db: psycopg.Connection[dict[str, Any]], commit_id: str) -> list[dict[str, Any]]:
    return [
        r["data"]
        for r in db.execute(
            "SELECT d.data FROM dsa_core.commit_row_range(%s, 1, NULL) r "
            "JOIN dsa_core.rows d USING (row_hash) "
            "ORDER BY r.row_number",
            (commit_id,),
        )
    ]


def test_an_upload_replaced_mid_import_fails_the_job_and_main_keeps_its_commit(
    stack: Any,
    client: Client,
    db: psycopg.Connection[dict[str, Any]],
    tmp_path: Path,
    dataset_name: str,
) -> None:
    # Given a dataset with one commit on main
    first = import_bytes(client, tmp_path / "v1", b"id,v\n1,a\n2,b\n", dataset_name)
    assert first["status"] == "completed", first["error_message"]
    before = main_commit(db, dataset_name)
    assert before is not None
    # and a second import cut into several ranges, stalled inside a range's load
    body = b"id,v\n" + b"".join(b"%05d,old\n" for i in range(3000))
    path = tmp_path / "v2.csv"
    path.write_bytes(body)
    created = client.upload_file(
        path, dataset_name, {"chunk_bytes": 8192, "faults": {"stall_load": 1}}
    )
    deadline = time.monotonic() + 120
    while _job(db, created["job_id"])["checkpoint"].get("stalled") != "load":
        assert time.monotonic() < deadline, "the load never stalled"
        time.sleep(0.05)
    job = _job(db, created["job_id"])
    assert job["checkpoint"]["source_etag"]  # what the planner saw

    # When another upload replaces the object with a file of the same size
    params = job["run_parameters"]
    stack.moto_client("s3").put_object(
        Bucket=params["bucket"], Key=params["key"], Body=body.replace(b"old", b"new")
    )
    db.execute(
        "UPDATE dsa_jobs.analysis_runs SET checkpoint = checkpoint || '{\"release\": true}' "
        "WHERE id = %s",
        (created["job_id"],),
    )

    # Then the import fails and says why, and main keeps its commit and its rows
    done = client.wait_for_job(created["job_id"], poll_seconds=0.05, timeout=120)
    assert done["status"] == "failed"
    assert CHANGED in done["error_message"]
    assert params["key"] in done["error_message"]
    assert main_commit(db, dataset_name) == before
    assert _rows(db, before) == [{"id": "1", "v": "a"}, {"id": "2", "v": "b"}]
    # and no row of either file was committed anywhere
    found = db.execute(
        "SELECT count(*) AS n FROM dsa_core.commits c JOIN dsa_core.datasets d "
        "ON d.id = c.dataset_id WHERE d.name = %s",
        (dataset_name,),
    ).fetchone()
    assert found is not None
    assert found["n"] == 1


@pytest.fixture
def replaced(stack: Any) -> tuple[str, str, str]:
    """An object, the ETag it had, and then another object at its key."""
    bucket, key = stack.settings.storage.bucket, "tests/object-replaced/data.bin"
    s3 = stack.moto_client("s3")
    s3.put_object(Bucket=bucket, Key=key, Body=b"a" * 10_000)
    etag = s3.head_object(Bucket=bucket, Key=key)["ETag"]
    s3.put_object(Bucket=bucket, Key=key, Body=b"b" * 10_000)
    return bucket, key, etag


def _seekable(bucket: str, key: str, settings: Any) -> bytes:
    """What the workbook readers do: a seekable reader of the object (smart_open)."""
    with storage.open_object(bucket, key, settings) as f:
        return bytes(f.read(100))


@pytest.mark.parametrize(
    "read",
    [
        lambda b, k, s: plan._read(b, k, 0, 100, s),
        lambda b, k, s: b"".join(plan.read_pieces(b, k, 0, 100, s)),
        _seekable,
    ],
    ids=["one GET", "pieces", "seekable reader"],
)
def test_every_reader_asks_for_the_planned_object(
    stack: Any, replaced: tuple[str, str, str], read: Any
) -> None:
    bucket, key, etag = replaced
    with storage.as_planned(bucket, key, etag), pytest.raises(Conflict, match=CHANGED):
        read(bucket, key, stack.settings)
    # outside an import, or with the ETag it has now, the object is read as it is
    assert read(bucket, key, stack.settings) == b"b" * 100
    now = stack.moto_client("s3").head_object(Bucket=bucket, Key=key)["ETag"]
    with storage.as_planned(bucket, key, now):
        assert read(bucket, key, stack.settings) == b"b" * 100
    # and another object is never asked for the import's ETag
    with storage.as_planned(bucket, "tests/object-replaced/other.bin", etag):
        assert read(bucket, key, stack.settings) == b"b" * 100


def _stage(stack: Any, bucket: str, key: str, dest: str) -> int:
    return unpack.stage(
        bucket,
        key,
        dest,
        compression="gzip",
        encoding="utf-8",
        filename="data.csv.gz",
        settings=stack.settings,
    )


def test_a_compressed_upload_is_staged_from_the_planned_object(
    stack: Any, replaced: tuple[str, str, str]
) -> None:
    # unpack.stage inflates the upload into a copy of the job's own before any range is cut
    bucket, key, etag = replaced
    s3 = stack.moto_client("s3")
    s3.put_object(Bucket=bucket, Key=key, Body=gzip.compress(b"id\n1\n"))
    dest = "tests/object-replaced/staged"
    with storage.as_planned(bucket, key, etag), pytest.raises(Conflict, match=CHANGED):
        _stage(stack, bucket, key, dest)
    assert "Contents" not in s3.list_objects_v2(Bucket=bucket, Prefix=dest)  # nothing staged
    now = s3.head_object(Bucket=bucket, Key=key)["ETag"]
    with storage.as_planned(bucket, key, now):
        assert _stage(stack, bucket, key, dest) == 5
