"""A repeated object-created event starts nothing; a retried planner task carries on."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tests.conftest import import_bytes

from sluiceway import plan
from sluiceway.client import Client


def _event(job: dict[str, Any]) -> dict[str, Any]:
    params = job["run_parameters"]
    return {"detail": {"bucket": {"name": params["bucket"]}, "object": {"key": params["key"]}}}


def test_a_second_event_for_the_same_upload_is_ignored(
    client: Client, tmp_path: Path, dataset_name: str
) -> None:
    job = import_bytes(client, tmp_path, b"a\n1\n", dataset_name)
    assert job["status"] == "completed"
    # When S3's event for that object arrives again, from another execution
    again = plan.plan_import({"event": _event(job), "execution": "arn:another-execution"})
    # Then it is recognised as a repeat and the job is untouched
    assert again["duplicate"] is True
    assert client.call("GET", f"/jobs/{job['job_id']}")["status"] == "completed"
    commits = client.call("GET", f"/datasets/{dataset_name}/commits")["commits"]
    assert len(commits) == 1


def test_the_same_execution_retrying_its_planner_plans_again(
    client: Client, db: Any, tmp_path: Path, dataset_name: str
) -> None:
    # Given a job claimed by an execution whose planner answer was lost
    job = import_bytes(client, tmp_path, b"a\n1\n2\n", dataset_name)
    db.execute(
        "UPDATE dsa_jobs.analysis_runs SET status = 'running', "
        'run_parameters = run_parameters || \'{"execution": "arn:exec-1"}\' WHERE id = %s',
        (job["job_id"],),
    )
    # When that execution's retry runs the planner again
    first = plan.plan_import({"event": _event(job), "execution": "arn:exec-1"})
    # Then it plans (ranges rebuilt, not doubled) instead of ignoring its own job
    assert first["duplicate"] is False
    assert first["job_id"] == job["job_id"]
    ranges = db.execute(
        "SELECT count(*) AS n FROM dsa_jobs.import_chunks WHERE job_id = %s", (job["job_id"],)
    ).fetchone()
    assert ranges == {"n": 1}
    # and any other execution is still a repeat
    assert plan.plan_import({"event": _event(job), "execution": "arn:exec-2"})["duplicate"]


def test_completing_an_upload_twice_gives_one_import(client: Client, dataset_name: str) -> None:
    import urllib3

    data = b"a,b\n1,2\n3,4\n"
    created = client.call(
        "POST", "/uploads", {"dataset": dataset_name, "filename": "x.csv", "size": len(data)}
    )
    [part] = client.call("POST", f"/uploads/{created['upload_id']}/parts", {"part_numbers": [1]})[
        "parts"
    ]
    put = urllib3.request("PUT", part["url"], body=data)
    assert put.status == 200
    parts = {"parts": [{"part_number": 1, "etag": put.headers["ETag"]}]}

    # When the client's complete call is sent twice (a retry after a lost answer)
    first = client.call("POST", f"/uploads/{created['upload_id']}/complete", parts)
    second = client.call("POST", f"/uploads/{created['upload_id']}/complete", parts)

    # Then both answers name the one job, which imports the file once
    assert first["job_id"] == second["job_id"] == created["job_id"]
    job = client.wait_for_job(created["job_id"], poll_seconds=0.05)
    assert job["status"] == "completed"
    assert len(client.call("GET", f"/datasets/{dataset_name}/commits")["commits"]) == 1
    jobs = client.call("GET", f"/jobs?dataset={dataset_name}")["jobs"]
    assert [j["job_id"] for j in jobs] == [created["job_id"]]
