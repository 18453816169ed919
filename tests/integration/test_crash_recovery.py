"""kill -9 the whole local stack mid-import or mid-export: nothing half-done is ever visible,
and the next stack to start on the same database ends the job with a message that says what
happened, and aborts the multipart uploads it had left open in S3."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.exceptions import EndpointConnectionError
from tests.conftest import standalone_env, stop_embedded_server

from sluiceway.client import ApiError, Client
from sluiceway.local.stack import free_port


def _up(env: dict[str, str], port: int) -> tuple[subprocess.Popen[str], list[str]]:
    """`sluiceway up` in a process group of its own (its workers and PostgreSQL with it)."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "sluiceway", "up", "--port", str(port)],
        env=env,
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        text=True,
        start_new_session=True,
    )
    assert proc.stderr is not None
    lines: list[str] = []
    while not any(line.startswith("Token") for line in lines):
        line = proc.stderr.readline()
        assert line, "up exited before printing its endpoints: " + "".join(lines)
        lines.append(line)
    line = proc.stderr.readline()  # the recovery line, if any, comes right after the token
    lines.append(line)
    return proc, lines


def _token(lines: list[str]) -> str:
    [line] = [x for x in lines if x.startswith("Token")]
    return line.split()[1]


def _wait_until(what: str, check: Any, timeout: float = 120) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def _stop(proc: subprocess.Popen[str]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)


def test_a_stack_killed_mid_import_commits_nothing_and_the_next_one_fails_the_job(
    tmp_path: Path,
) -> None:
    env = standalone_env(tmp_path) | {"SLUICEWAY_ALLOW_FAULT_INJECTION": "true"}
    port = free_port()
    api = f"http://127.0.0.1:{port}"
    first_stack, lines = _up(env, port)
    try:
        client = Client(api, token=_token(lines), timeout=60)
        # Given a dataset with one commit on main
        (tmp_path / "v1.csv").write_text("id,name\n1,a\n2,b\n")
        v1 = client.upload_file(tmp_path / "v1.csv", "crash", {})
        done = client.wait_for_job(v1["job_id"], poll_seconds=0.05, timeout=120)
        assert done["status"] == "completed"
        # When a second import stalls inside a range's load (a test-only fault) ...
        (tmp_path / "v2.csv").write_text("id,name\n" + "".join(f"{i},n{i}\n" for i in range(500)))
        v2 = client.upload_file(tmp_path / "v2.csv", "crash", {"faults": {"stall_load": 1}})
        _wait_until(
            "the load to stall",
            lambda: (
                (client.call("GET", f"/jobs/{v2['job_id']}").get("checkpoint") or {}).get("stalled")
                == "load"
            ),
        )
        # ... and the whole stack is killed, its workers and PostgreSQL with it
        os.killpg(first_stack.pid, signal.SIGKILL)
        first_stack.wait(timeout=30)
    finally:
        if first_stack.poll() is None:
            os.killpg(first_stack.pid, signal.SIGKILL)

    # Then the next stack on the same home fails the job at start, and says so
    second_stack, lines = _up(env, port)
    try:
        assert any(v2["job_id"] in line and line.startswith("Failed 1 job") for line in lines), (
            lines
        )
        client = Client(api, token=_token(lines), timeout=60)
        job = client.call("GET", f"/jobs/{v2['job_id']}")
        assert job["status"] == "failed"
        assert "stopped before the job ended" in job["error_message"]
        assert job["error_code"] == "stack_stopped"
        assert "Upload the file again" in job["error_message"]  # the embedded S3 went with it
        # and nothing of it is visible: main is still the first commit, with its two rows
        commits = client.call("GET", "/datasets/crash/commits")["commits"]
        assert [c["commit_id"] for c in commits] == [done["output_summary"]["commit_id"]]
        rows = client.call("GET", "/datasets/crash/rows?limit=10")
        assert [r["data"] for r in rows["rows"]] == [
            {"id": "1", "name": "a"},
            {"id": "2", "name": "b"},
        ]
        upload = client.call("GET", f"/uploads/{v2['upload_id']}")
        assert upload["status"] == "failed"
        # and the stack works as before: the same file imports cleanly now
        again = client.upload_file(tmp_path / "v2.csv", "crash", {})
        assert client.wait_for_job(again["job_id"], poll_seconds=0.05)["status"] == "completed"
    finally:
        _stop(second_stack)
        stop_embedded_server(tmp_path / "home")  # the killed stack's pid keeps it running


def test_a_running_stacks_jobs_are_not_failed_by_another_stack_on_its_database(
    stack: Any, tmp_path: Path
) -> None:
    # Given a job of the session's stack that has not ended (an upload still in progress)
    client = Client(stack.api_url, token=stack.local_token)
    created = client.call("POST", "/uploads", {"dataset": "alive", "filename": "a.csv", "size": 10})
    # When another stack starts on the same database (DATABASE_URL)
    env = standalone_env(tmp_path) | {"DATABASE_URL": stack.database_url}
    other, lines = _up(env, free_port())
    _stop(other)
    # Then it leaves that job alone: its stack holds the runtime lock
    assert not any(line.startswith("Failed") for line in lines), lines
    assert client.call("GET", f"/jobs/{created['job_id']}")["status"] == "pending"


@pytest.fixture
def external_s3(tmp_path: Path) -> Iterator[tuple[str, Any]]:
    """An S3 endpoint of its own (a moto server process) that outlives any stack using it,
    with the stacks' bucket made; yields (endpoint, client)."""
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    endpoint = f"http://127.0.0.1:{port}"
    client = boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id="k",
        aws_secret_access_key="s",
    )
    try:
        _wait_until("the S3 server", lambda: _made_bucket(client), timeout=60)
        yield endpoint, client
    finally:
        server.terminate()
        server.wait(10)


def _made_bucket(client: Any) -> bool:
    try:
        client.create_bucket(Bucket="sluiceway-data")
    except EndpointConnectionError:
        return False
    return True


def test_a_stack_killed_mid_export_leaves_no_multipart_upload_once_the_next_one_starts(
    tmp_path: Path, external_s3: tuple[str, Any]
) -> None:
    endpoint, s3 = external_s3
    env = standalone_env(tmp_path) | {
        "SLUICEWAY_ALLOW_FAULT_INJECTION": "true",
        "AWS_ENDPOINT_URL_S3": endpoint,  # S3 outlives the stack: what it leaves open stays
        "AWS_ACCESS_KEY_ID": "k",
        "AWS_SECRET_ACCESS_KEY": "s",
    }
    port = free_port()
    api = f"http://127.0.0.1:{port}"
    first_stack, lines = _up(env, port)
    try:
        client = Client(api, token=_token(lines), timeout=60)
        # Given a dataset, and an export whose first part stalls with its rows written and
        # its multipart upload open in S3 (a test-only fault) ...
        (tmp_path / "v1.csv").write_text("id,name\n" + "".join(f"{i},n{i}\n" for i in range(300)))
        v1 = client.upload_file(tmp_path / "v1.csv", "crash", {})
        assert client.wait_for_job(v1["job_id"], poll_seconds=0.05)["status"] == "completed"
        started = client.call(
            "POST",
            "/datasets/crash/exports",
            {"format": "csv", "part_rows": 100, "faults": {"stall_part": 1}},
        )
        job_id = started["job_id"]
        _wait_until(
            "the part to stall",
            lambda: (
                (client.call("GET", f"/jobs/{job_id}").get("checkpoint") or {}).get("stalled")
                == "part"
            ),
        )
        prefix = f"exports/local/{job_id}/"
        assert len(s3.list_multipart_uploads(Bucket="sluiceway-data", Prefix=prefix)["Uploads"])
        # ... when the whole stack is killed
        os.killpg(first_stack.pid, signal.SIGKILL)
        first_stack.wait(timeout=30)
    finally:
        if first_stack.poll() is None:
            os.killpg(first_stack.pid, signal.SIGKILL)
    # (the upload really is orphaned: nothing ended it)
    assert s3.list_multipart_uploads(Bucket="sluiceway-data", Prefix=prefix).get("Uploads")

    # Then the next stack fails the export at its start, says so, and aborts its upload
    second_stack, lines = _up(env, port)
    try:
        assert any(job_id in line and line.startswith("Failed 1 job") for line in lines), lines
        client = Client(api, token=_token(lines), timeout=60)
        status = client.call("GET", started["status_url"])
        assert status["status"] == "failed"
        assert "stopped before the job ended" in status["error"]
        assert "request the export again" in status["error"]
        assert status["error_code"] == "stack_stopped"
        assert (
            s3.list_multipart_uploads(Bucket="sluiceway-data", Prefix=prefix).get("Uploads", [])
            == []
        )
        # and no part and no manifest are left under its prefix
        assert s3.list_objects_v2(Bucket="sluiceway-data", Prefix=prefix).get("Contents", []) == []
        with pytest.raises(ApiError) as refused:
            client.call("GET", started["download_url"])
        assert refused.value.http_status == 409
        # and the same export runs cleanly now
        again = client.call("POST", "/datasets/crash/exports", {"format": "csv", "part_rows": 100})
        _wait_until(
            "the export again",
            lambda: client.call("GET", again["status_url"])["status"] == "completed",
        )
    finally:
        _stop(second_stack)
        stop_embedded_server(tmp_path / "home")  # the killed stack's pid keeps it running
