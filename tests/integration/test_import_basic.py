"""A CSV goes through the real state machine into versioned tables."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import psycopg
from tests.conftest import import_bytes

from sluiceway.client import Client


def test_csv_import_creates_a_commit_on_main(
    client: Client, db: psycopg.Connection[dict[str, Any]], tmp_path: Path, dataset_name: str
) -> None:
    # Given a small CSV with a quoted comma
    data = b'id,name\n1,"Smith, Jane"\n2,Bob\n'

    # When it is imported
    job = import_bytes(client, tmp_path, data, dataset_name)

    # Then the job completed with a commit whose rows are the file's records, in order
    assert job["status"] == "completed", job["error_message"]
    commit_id = job["output_summary"]["commit_id"]
    rows = db.execute(
        "SELECT cr.logical_row_id, r.data FROM dsa_core.commit_rows cr "
        "JOIN dsa_core.rows r USING (row_hash) WHERE cr.commit_id = %s ORDER BY cr.ord",
        (commit_id,),
    ).fetchall()
    assert rows == [
        {"logical_row_id": "1", "data": {"id": "1", "name": "Smith, Jane"}},
        {"logical_row_id": "2", "data": {"id": "2", "name": "Bob"}},
    ]
    ref = db.execute(
        "SELECT r.commit_id FROM dsa_core.refs r JOIN dsa_core.datasets d ON d.id = r.dataset_id "
        "WHERE d.name = %s AND r.name = 'main'",
        (dataset_name,),
    ).fetchone()
    assert ref == {"commit_id": commit_id}
