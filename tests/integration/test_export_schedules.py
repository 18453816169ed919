"""Scheduled exports fire in the local runtime; every new commit can be exported on its own."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from export_support import commit_records, fetch, read_part, typed
from tests.conftest import import_bytes

from sluiceway import schedules
from sluiceway.client import ApiError, Client
from sluiceway.errors import InvalidRequest

DATA = b"id,category\n1,test\n2,prod\n3,test\n"


def _wait(predicate: Any, timeout: float = 60) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = predicate()
        if found:
            return found
        time.sleep(0.2)
    raise AssertionError("timed out")


def test_a_due_schedule_fires_in_the_local_runtime(
    client: Client, db: Any, tmp_path: Path, dataset_name: str
) -> None:
    # Given a dataset with an hourly schedule exporting seed 000's filter as JSON Lines
    job = import_bytes(client, tmp_path, DATA, dataset_name)
    created = client.call(
        "POST",
        f"/datasets/{dataset_name}/export-schedules",
        {
            "name": "hourly",
            "expression": "rate(1 hour)",
            "export": {"format": "jsonl", "filter": {"category": "test"}},
        },
    )
    assert created["next_fire_at"] > datetime.now(UTC).isoformat()
    # When its hour has come (rather than waiting one)
    db.execute(
        "UPDATE dsa_core.export_schedules SET next_fire_at = now() - interval '1 second' "
        "WHERE schedule_id = %s",
        (created["schedule_id"],),
    )

    # Then the local scheduler starts the export state machine, which makes the firing's job
    def fired() -> Any:
        [schedule] = client.call("GET", f"/datasets/{dataset_name}/export-schedules")["schedules"]
        return schedule if schedule["last_job_id"] else None

    schedule = _wait(fired)
    assert schedule["next_fire_at"] > datetime.now(UTC).isoformat()  # the next hour
    status_url = f"/exports/{schedule['last_job_id']}"
    status = _wait(
        lambda: (s := client.call("GET", status_url))["status"] in ("completed", "failed") and s
    )
    assert status["status"] == "completed", status
    # And it exported main as it was when it fired, filtered as the schedule asked
    assert status["commit_id"] == job["output_summary"]["commit_id"]
    urls = client.call("GET", f"{status_url}/download-url")
    assert read_part(fetch(urls["url"]), "jsonl") == [
        {"id": "1", "category": "test"},
        {"id": "3", "category": "test"},
    ]


def test_schedules_are_listed_deleted_and_checked(
    client: Client, tmp_path: Path, dataset_name: str
) -> None:
    import_bytes(client, tmp_path, DATA, dataset_name)
    base = f"/datasets/{dataset_name}/export-schedules"
    client.call("POST", base, {"name": "nightly", "expression": "cron(0 3 * * ? *)"})

    [listed] = client.call("GET", base)["schedules"]
    assert listed["expression"] == "cron(0 3 * * ? *)"
    assert listed["next_fire_at"].endswith("03:00:00Z") or "T03:00:00" in listed["next_fire_at"]
    for body, says in [
        ({"name": "bad", "expression": "every day"}, "neither rate"),
        ({"name": "bad", "expression": "cron(0 3 * *)"}, "cron(minutes hours"),
        ({"name": "bad", "expression": "rate(1 fortnight)"}, "neither rate"),
        ({"name": "bad", "expression": "rate(1 hour)", "export": {"columns": ["x"]}}, "'x'"),
        ({"name": "nightly", "expression": "rate(1 hour)"}, "already has"),
    ]:
        with pytest.raises(ApiError) as refused:
            client.call("POST", base, body)
        assert refused.value.http_status == 400
        assert says in refused.value.message
    client.call("DELETE", f"{base}/nightly")
    assert client.call("GET", base)["schedules"] == []


def test_cron_expressions_use_eventbridge_fields() -> None:
    after = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)  # a Tuesday

    assert schedules.next_fire("cron(0 3 * * ? *)", after) == datetime(
        2026, 12, 2, 3, 0, tzinfo=UTC
    )
    # day of week 2 is Monday in EventBridge (1 is Sunday)
    assert schedules.next_fire("cron(30 9 ? * 2 *)", after) == datetime(
        2026, 12, 7, 9, 30, tzinfo=UTC
    )
    assert schedules.next_fire("rate(5 minutes)", after) == datetime(2026, 12, 1, 12, 5, tzinfo=UTC)
    with pytest.raises(InvalidRequest):
        schedules.check_expression("cron(0 3 * * ? 2027)")


def test_every_new_commit_is_exported_under_a_stable_prefix(
    stack: Any, client: Client, tmp_path: Path, dataset_name: str
) -> None:
    # Given a dataset that asks for CSV and Parquet of every commit
    import_bytes(client, tmp_path / "a", DATA, dataset_name)
    setting = {"formats": ["csv", "parquet"], "prefix": f"warehouse/{dataset_name}"}
    client.call("PUT", f"/datasets/{dataset_name}/commit-exports", setting)
    got = client.call("GET", f"/datasets/{dataset_name}/commit-exports")
    assert got["commit_exports"]["formats"] == ["csv", "parquet"]

    # When the next import commits
    job = import_bytes(client, tmp_path / "b", DATA + b"4,dev\n", dataset_name)
    commit = job["output_summary"]["commit_id"]

    # Then each format's parts and manifest appear under <prefix>/<commit>/<format>/
    import boto3

    s3 = boto3.client(
        "s3",
        endpoint_url=stack.s3_endpoint,
        region_name="us-east-1",
        aws_access_key_id="sluiceway-local",
        aws_secret_access_key="sluiceway-local",
    )
    bucket = stack.settings.storage.bucket
    for fmt in ("csv", "parquet"):
        prefix = f"exports/local/warehouse/{dataset_name}/{commit}/{fmt}/"

        def manifest(prefix: str = prefix) -> Any:
            keys = [
                o["Key"]
                for o in s3.list_objects_v2(Bucket=bucket, Prefix=prefix).get("Contents", [])
            ]
            return f"{prefix}manifest.json" in keys and keys

        keys = _wait(manifest)
        listed = json.loads(
            s3.get_object(Bucket=bucket, Key=f"{prefix}manifest.json")["Body"].read()
        )
        assert listed["commit_id"] == commit
        assert sorted(keys) == sorted(
            [f"{prefix}manifest.json"] + [p["key"] for p in listed["parts"]]
        )
        [part] = listed["parts"]
        body = s3.get_object(Bucket=bucket, Key=part["key"])["Body"].read()
        expected = commit_records(client, dataset_name, commit)
        if fmt == "parquet":  # typed from the commit's schema
            expected = typed(expected, client.call("GET", f"/datasets/{dataset_name}")["schema"])
        assert read_part(body, fmt) == expected

    # And a bad setting is refused
    with pytest.raises(ApiError) as refused:
        client.call(
            "PUT",
            f"/datasets/{dataset_name}/commit-exports",
            {"formats": ["csv"], "prefix": "../x"},
        )
    assert refused.value.http_status == 422
