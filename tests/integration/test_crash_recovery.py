"""kill -9 the whole local stack mid-import: nothing half-done is ever visible, and the next
stack to start on the same database ends the job with a message that says what happened."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from tests.conftest import standalone_env

from sluiceway.client import Client
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
