"""Injection strings wherever a caller's text reaches SQL: header names, dataset and ref names,
key columns, filters on lists, document categories. Each is data or a clear 4xx, never SQL."""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from tests.conftest import import_bytes

from sluiceway.client import ApiError, Client

INJECTIONS = [
    "'; DROP TABLE dsa_core.commits; --",
    '"; DROP SCHEMA dsa_core CASCADE; --',
    "Robert'); DROP TABLE dsa_jobs.uploads;--",
    "x' OR '1'='1",
    "1 OR 1=1",
    "$$; DELETE FROM dsa_core.refs; $$",
    "\\'; SELECT pg_sleep(30); --",
    "%s%s%s",
    "%(owner)s",
    "{}",
    "a\u202eb",  # right-to-left override
    "../../../etc/passwd",
    'name"with"quotes',
    "col; COPY dsa_core.row_store TO '/tmp/x'",
]


def _schema(db: Any) -> list[tuple[str, str]]:
    """Every table and view of ours, so a dropped or created one shows."""
    return db.execute(
        "SELECT schemaname, tablename FROM pg_tables WHERE schemaname LIKE 'dsa\\_%' "
        "UNION ALL SELECT schemaname, viewname FROM pg_views WHERE schemaname LIKE 'dsa\\_%' "
        "UNION ALL SELECT schemaname, matviewname FROM pg_matviews "
        "WHERE schemaname LIKE 'dsa\\_%' ORDER BY 1, 2"
    ).fetchall()


def _outcome(client: Client, method: str, path: str, body: Any) -> tuple[int, str]:
    try:
        client.call(method, path, body)
    except ApiError as exc:
        return exc.http_status, exc.message
    return 200, ""


@pytest.fixture
def schema_unchanged(db: Any) -> Any:
    before = _schema(db)
    refs = db.execute("SELECT count(*) AS n FROM dsa_core.refs").fetchone()["n"]
    yield
    assert _schema(db) == before
    assert db.execute("SELECT count(*) AS n FROM dsa_core.refs").fetchone()["n"] >= refs


def test_header_names_are_data_and_come_back_exactly(
    client: Client, tmp_path: Path, dataset_name: str, schema_unchanged: None
) -> None:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(INJECTIONS)
    writer.writerow([f"v{i}" for i in range(len(INJECTIONS))])
    job = import_bytes(client, tmp_path, out.getvalue().encode(), dataset_name)
    assert job["status"] == "completed", job["error_message"]

    rows = client.call("GET", f"/datasets/{dataset_name}/rows?limit=5")["rows"]

    assert rows[0]["data"] == {name: f"v{i}" for i, name in enumerate(INJECTIONS)}


@pytest.mark.parametrize("text", INJECTIONS)
def test_names_refs_and_filters_are_a_clear_4xx_or_nothing_found(
    client: Client, tmp_path: Path, dataset_name: str, text: str, schema_unchanged: None
) -> None:
    job = import_bytes(client, tmp_path, b"id,v\n1,a\n", dataset_name)
    assert job["status"] == "completed"
    q = quote(text, safe="")
    for method, path, body in [
        ("GET", f"/datasets/{q}", None),
        ("GET", f"/datasets/{q}/commits", None),
        ("GET", f"/datasets/{dataset_name}/rows?commit={q}", None),
        ("GET", f"/datasets/{dataset_name}/diff?to={q}", None),
        ("POST", f"/datasets/{dataset_name}/refs", {"name": text}),
        ("POST", "/uploads", {"dataset": text, "filename": "a.csv"}),
        (
            "POST",
            "/uploads",
            {
                "dataset": dataset_name,
                "filename": "a.csv",
                "options": {"mode": "upsert", "key": [text]},
            },
        ),
    ]:
        status, message = _outcome(client, method, path, body)
        if status < 300:  # the only way through is as a value: an upsert key checked at import
            assert body is not None
            assert body.get("options"), (method, path)
        else:
            assert 400 <= status < 500, (method, path, status, message)
            assert message
    for path in (f"/jobs?dataset={q}", f"/uploads?dataset={q}", f"/documents?category={q}"):
        listed = client.call("GET", path)
        assert next(iter(listed.values())) == [], path  # a filter value matches nothing

    # and the dataset is as it was: one commit, its one row
    assert len(client.call("GET", f"/datasets/{dataset_name}/commits")["commits"]) == 1


def test_a_key_column_that_is_an_injection_is_named_as_missing(
    client: Client, tmp_path: Path, dataset_name: str, schema_unchanged: None
) -> None:
    import_bytes(client, tmp_path, b"id,v\n1,a\n", dataset_name)
    evil = INJECTIONS[0]
    job = import_bytes(client, tmp_path, b"id,v\n1,b\n", dataset_name, mode="upsert", key=[evil])
    assert job["status"] == "failed"
    assert evil in job["error_message"]
