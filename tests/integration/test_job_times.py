"""A job's end is when it ended: completed_at and its seconds count the transaction that ends it.

An import's commit (the diff of a re-import, the lists, the ref) runs in the transaction that
marks the job completed; PostgreSQL's now() is that transaction's start, so a job's end set
with it left the whole commit out of the job's seconds and rows per second.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any

import psycopg
import pytest
from psycopg.rows import dict_row

from sluiceway import jobs

WORK = 0.3  # seconds of work inside the ending transaction


@pytest.fixture
def conn(stack: Any) -> Iterator[psycopg.Connection[dict[str, Any]]]:
    with psycopg.connect(stack.database_url, autocommit=True, row_factory=dict_row) as c:
        yield c


@pytest.mark.parametrize(
    "end",
    [
        lambda conn, job_id: jobs.complete(conn, job_id, {"rows": 0}),
        lambda conn, job_id: jobs.fail(conn, job_id, "the file was cut short", "malformed_file"),
    ],
    ids=["completed", "failed"],
)
def test_a_job_ends_after_the_work_of_the_transaction_that_ends_it(
    conn: psycopg.Connection[dict[str, Any]], end: Callable[..., Any]
) -> None:
    job_id = jobs.create(conn, "import", "job-times", {})
    assert jobs.claim(conn, job_id, {})
    with conn.transaction():
        conn.execute("SELECT pg_sleep(%s)", (WORK,))
        end(conn, job_id)
    row = conn.execute(
        "SELECT started_at, completed_at, updated_at FROM dsa_jobs.analysis_runs WHERE id = %s",
        (job_id,),
    ).fetchone()
    assert row is not None
    assert row["completed_at"] - row["started_at"] >= timedelta(seconds=WORK)
    assert row["updated_at"] >= row["completed_at"]
    assert jobs.get(conn, job_id).progress["seconds"] >= WORK
