"""The DSA schema as the seeds describe it, queryable with plain SQL."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import psycopg
from tests.conftest import import_bytes

from sluiceway import db
from sluiceway.client import Client
from sluiceway.settings import Settings


def _columns(conn: psycopg.Connection[dict[str, Any]], schema: str, table: str) -> set[str]:
    rows = conn.execute(
        "SELECT column_name FROM information_schema.columns WHERE table_schema = %s AND table_name = %s",
        (schema, table),
    ).fetchall()
    return {r["column_name"] for r in rows}


def test_tables_and_views_have_the_seed_shapes(db: psycopg.Connection[dict[str, Any]]) -> None:
    assert {"id", "name", "owner", "description", "created_at", "columns"} <= _columns(
        db, "dsa_core", "datasets"
    )
    assert {"row_hash", "data"} <= _columns(db, "dsa_core", "rows")
    assert {
        "commit_id",
        "dataset_id",
        "parent_commit_id",
        "message",
        "author",
        "authored_at",
        "committed_at",
        "row_count",
    } <= _columns(db, "dsa_core", "commits")
    assert {"commit_id", "logical_row_id", "row_hash"} <= _columns(db, "dsa_core", "commit_rows")
    assert {"dataset_id", "name", "commit_id"} <= _columns(db, "dsa_core", "refs")
    assert {
        "id",
        "run_type",
        "status",
        "dataset_id",
        "run_parameters",
        "progress",
        "checkpoint",
        "output_summary",
        "error_message",
        "created_at",
        "started_at",
        "completed_at",
    } <= _columns(db, "dsa_jobs", "analysis_runs")


def test_job_enums_hold_the_platform_values(db: psycopg.Connection[dict[str, Any]]) -> None:
    def labels(name: str) -> list[str]:
        return [
            r["enumlabel"]
            for r in db.execute(
                "SELECT e.enumlabel FROM pg_enum e JOIN pg_type t ON t.oid = e.enumtypid "
                "WHERE t.typname = %s ORDER BY e.enumsortorder",
                (name,),
            ).fetchall()
        ]

    assert labels("analysis_run_status") == [
        "pending",
        "running",
        "completed",
        "failed",
        "cancelled",
    ]
    assert labels("analysis_run_type") == ["import", "export", "maintenance"]


def test_search_summary_refreshes_concurrently_after_an_import(
    client: Client, db: psycopg.Connection[dict[str, Any]], tmp_path: Path, dataset_name: str
) -> None:
    job = import_bytes(client, tmp_path, b"a,b\n1,2\n3,4\n", dataset_name)
    assert job["status"] == "completed"
    # the state machine's last step refreshed it; a concurrent refresh needs the unique index
    db.execute("REFRESH MATERIALIZED VIEW CONCURRENTLY dsa_search.datasets_summary")
    row = db.execute(
        "SELECT row_count, head_commit_id, commit_count FROM dsa_search.datasets_summary WHERE name = %s",
        (dataset_name,),
    ).fetchone()
    assert row == {
        "row_count": 2,
        "head_commit_id": job["output_summary"]["commit_id"],
        "commit_count": 1,
    }


def test_migrations_are_idempotent(stack: Any) -> None:
    settings = Settings(database_url=stack.database_url)
    assert db.migrate(settings) == []


def test_a_row_hash_is_content_not_position(
    client: Client, db: psycopg.Connection[dict[str, Any]], tmp_path: Path, dataset_name: str
) -> None:
    # the same record at different positions, and with columns in another order
    first = import_bytes(client, tmp_path, b"a,b\nx,y\nz,w\n", dataset_name)
    second = import_bytes(client, tmp_path, b"b,a\nw,z\ny,x\n", dataset_name + "-other")

    def hashes(job: dict[str, Any]) -> list[bytes]:
        rows = db.execute(
            "SELECT row_hash FROM dsa_core.commit_rows WHERE commit_id = %s ORDER BY ord",
            (job["output_summary"]["commit_id"],),
        ).fetchall()
        return [r["row_hash"] for r in rows]

    assert hashes(first) == list(reversed(hashes(second)))
    assert len(set(hashes(first))) == 2


def test_commit_row_range_reads_any_slice_in_logical_order(
    client: Client, db: psycopg.Connection[dict[str, Any]], tmp_path: Path, dataset_name: str
) -> None:
    data = b"n\n" + b"".join(f"{i}\n".encode() for i in range(1, 41))
    job = import_bytes(client, tmp_path, data, dataset_name, chunk_bytes=16)
    commit_id = job["output_summary"]["commit_id"]

    def values(lo: int, hi: int | None) -> list[tuple[int, str]]:
        rows = db.execute(
            "SELECT r.row_number, d.data->>'n' AS n "
            "FROM dsa_core.commit_row_range(%s, %s, %s) r JOIN dsa_core.rows d USING (row_hash)"
            " ORDER BY r.row_number",
            (commit_id, lo, hi),
        ).fetchall()
        return [(r["row_number"], r["n"]) for r in rows]

    assert values(1, None) == [(i, str(i)) for i in range(1, 41)]
    for lo, hi in [(1, 2), (5, 9), (17, 18), (39, 100), (7, 7), (41, None)]:
        assert values(lo, hi) == [(i, str(i)) for i in range(lo, min(hi or 41, 41))], (lo, hi)
