"""Ranges that insert the same new rows at the same time: each row stored once, no range fails."""

from __future__ import annotations

import hashlib
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql
from psycopg.rows import dict_row
from tests.conftest import import_bytes

from sluiceway.client import Client
from sluiceway.load import insert_new_rows


def test_a_row_committed_by_another_range_meanwhile_is_not_inserted_twice(stack: Any) -> None:
    # Given a range's hashed rows, one of which another range is inserting right now
    row_hash = hashlib.sha256(b"race-" + threading.current_thread().name.encode()).digest()
    other = hashlib.sha256(row_hash).digest()
    with (
        psycopg.connect(stack.database_url, row_factory=dict_row) as mine,
        psycopg.connect(stack.database_url) as theirs,
    ):
        mine.execute("CREATE TEMP TABLE h (row_hash bytea, vals text[])")
        mine.execute("INSERT INTO h VALUES (%s, '{a}'), (%s, '{b}')", (row_hash, other))
        theirs.execute(
            "INSERT INTO dsa_core.row_store VALUES (%s, 0, '{a}')", (row_hash,)
        )  # not committed yet

        # When this range inserts its new rows (it waits on the other's uncommitted row)
        with ThreadPoolExecutor(1) as pool:
            done = pool.submit(insert_new_rows, mine, sql.Identifier("h"), 0)
            _wait_until_blocked(stack.database_url, mine.info.backend_pid)
            theirs.commit()  # the other range commits first: a unique violation for us
            done.result(timeout=30)
        mine.commit()

        # Then both rows are there, once each
        found = mine.execute(
            "SELECT count(*) AS n FROM dsa_core.row_store WHERE row_hash = ANY(%s)",
            ([row_hash, other],),
        ).fetchone()
        assert found == {"n": 2}


def _wait_until_blocked(url: str, pid: int) -> None:
    with psycopg.connect(url, autocommit=True) as watcher:
        for _ in range(300):
            row = watcher.execute(
                "SELECT wait_event_type FROM pg_stat_activity WHERE pid = %s", (pid,)
            ).fetchone()
            if row and row[0] == "Lock":
                return
            time.sleep(0.05)
    raise AssertionError("the insert never waited on the other range's row")


def test_two_imports_of_the_same_new_content_at_once_both_commit(
    client: Client, db: Any, tmp_path: Path, dataset_name: str
) -> None:
    body = b"k,v\n" + b"".join(f"{i},{dataset_name}\n".encode() for i in range(5000))
    with ThreadPoolExecutor(2) as pool:
        jobs = list(
            pool.map(
                lambda n: import_bytes(
                    client, tmp_path / n, body, f"{dataset_name}-{n}", chunk_bytes=4096
                ),
                ["a", "b"],
            )
        )
    assert [j["status"] for j in jobs] == ["completed", "completed"]
    stored = db.execute(
        "SELECT count(DISTINCT cr.row_hash) AS n FROM dsa_core.commit_rows cr "
        "JOIN dsa_core.row_store s USING (row_hash) WHERE cr.commit_id = %s",
        (jobs[0]["output_summary"]["commit_id"],),
    ).fetchone()
    assert stored == {"n": 5000}
