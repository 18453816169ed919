"""The same CSV gives the same commit however finely the state machine cuts it into ranges."""

from __future__ import annotations

import csv
import io
import uuid
from pathlib import Path
from typing import Any

import psycopg
import pytest
from tests.conftest import import_bytes

from sluiceway.client import Client

Conn = psycopg.Connection[dict[str, Any]]

# None is the configured default (one range for files this small); 1 puts every byte in its
# own range, so every quote, CR and LF lands on a range boundary somewhere.
CHUNK_SIZES = (None, 1, 7, 16)

CASES: dict[str, tuple[bytes, list[dict[str, str | None]]]] = {
    "quoted fields with commas": (
        b'id,name\n1,"Smith, Jane"\n2,"a,b,,c"\n3,plain\n',
        [
            {"id": "1", "name": "Smith, Jane"},
            {"id": "2", "name": "a,b,,c"},
            {"id": "3", "name": "plain"},
        ],
    ),
    "doubled quotes": (
        b'id,quote\n1,"She said ""hi"""\n2,""""\n3,"a""b,""c"\n',
        [
            {"id": "1", "quote": 'She said "hi"'},
            {"id": "2", "quote": '"'},
            {"id": "3", "quote": 'a"b,"c'},
        ],
    ),
    "LF and CRLF inside quoted fields": (
        b'id,text\n1,"line one\nline two"\n2,"crlf\r\ninside"\n3,"\n"\n4,"\n\n,\n"\n',
        [
            {"id": "1", "text": "line one\nline two"},
            {"id": "2", "text": "crlf\r\ninside"},
            {"id": "3", "text": "\n"},
            {"id": "4", "text": "\n\n,\n"},
        ],
    ),
    "CRLF file": (
        b'id,name\r\n1,a\r\n2,"b\r\nc"\r\n3,"d,e"\r\n',
        [
            {"id": "1", "name": "a"},
            {"id": "2", "name": "b\r\nc"},
            {"id": "3", "name": "d,e"},
        ],
    ),
    "UTF-8 with BOM": (
        '\ufeffid,name\n1,Zoë\n2,"日本, 語"\n'.encode(),
        [{"id": "1", "name": "Zoë"}, {"id": "2", "name": "日本, 語"}],
    ),
    "UTF-8 without BOM": (
        "id,名前\n1,Ünïcödé\n2,😀😀\n3,€\n".encode(),
        [{"id": "1", "名前": "Ünïcödé"}, {"id": "2", "名前": "😀😀"}, {"id": "3", "名前": "€"}],
    ),
    "no trailing newline": (
        b'id,name\n1,a\n2,"b\nc"',
        [{"id": "1", "name": "a"}, {"id": "2", "name": "b\nc"}],
    ),
    "trailing blank lines": (
        b"id,name\n1,a\n2,b\n\n\n\n",
        [{"id": "1", "name": "a"}, {"id": "2", "name": "b"}],
    ),
    "trailing blank CRLF lines": (
        b"id,name\r\n1,a\r\n2,b\r\n\r\n\r\n",
        [{"id": "1", "name": "a"}, {"id": "2", "name": "b"}],
    ),
    # one column: a blank line is a NULL, at the end too (how a CSV export writes one)
    "one column, NULLs last": (
        b'v\nx\n\n""\n\n\n',
        [{"v": "x"}, {"v": None}, {"v": ""}, {"v": None}, {"v": None}],
    ),
    "one column, NULLs last, CRLF": (
        b"v\r\n\r\nx\r\n\r\n",
        [{"v": None}, {"v": "x"}, {"v": None}],
    ),
}


def _commit_rows(db: Conn, commit_id: str) -> list[dict[str, Any]]:
    return db.execute(
        "SELECT cr.logical_row_id, cr.row_hash, r.data FROM dsa_core.commit_rows cr "
        "JOIN dsa_core.rows r USING (row_hash) WHERE cr.commit_id = %s ORDER BY cr.ord",
        (commit_id,),
    ).fetchall()


def _main_commit(db: Conn, dataset: str) -> dict[str, Any] | None:
    return db.execute(
        "SELECT c.commit_id, c.parent_commit_id, c.row_count, c.columns FROM dsa_core.refs r "
        "JOIN dsa_core.datasets d ON d.id = r.dataset_id "
        "JOIN dsa_core.commits c ON c.commit_id = r.commit_id "
        "WHERE d.name = %s AND r.name = 'main'",
        (dataset,),
    ).fetchone()


@pytest.mark.parametrize("case", list(CASES))
def test_every_chunk_size_gives_the_same_commit(
    case: str, client: Client, db: Conn, tmp_path: Path, dataset_name: str
) -> None:
    data, expected = CASES[case]
    commits: dict[int | None, list[dict[str, Any]]] = {}
    for chunk_bytes in CHUNK_SIZES:
        # Given the file imported with ranges of chunk_bytes
        dataset = f"{dataset_name}-{chunk_bytes or 'default'}"
        job = import_bytes(client, tmp_path, data, dataset, chunk_bytes=chunk_bytes)

        # Then the commit holds exactly the file's records, in file order, numbered from 1
        assert job["status"] == "completed", (chunk_bytes, job["error_message"])
        rows = _commit_rows(db, job["output_summary"]["commit_id"])
        assert [r["data"] for r in rows] == expected, f"chunk_bytes={chunk_bytes}"
        assert [r["logical_row_id"] for r in rows] == [str(n) for n in range(1, len(rows) + 1)]
        assert job["output_summary"]["rows"] == len(expected)
        assert job["output_summary"]["columns"] == list(expected[0])
        commits[chunk_bytes] = rows

    # ... and every chunk size stored the same row hashes in the same order
    reference = [r["row_hash"] for r in commits[None]]
    for chunk_bytes, rows in commits.items():
        assert [r["row_hash"] for r in rows] == reference, f"chunk_bytes={chunk_bytes}"


def test_an_empty_file_commits_no_rows(
    client: Client, db: Conn, tmp_path: Path, dataset_name: str
) -> None:
    # Given a file of 0 bytes
    job = import_bytes(client, tmp_path, b"", dataset_name)

    # Then the import completes with an empty commit on main
    assert job["status"] == "completed", job["error_message"]
    assert job["output_summary"]["rows"] == 0
    head = _main_commit(db, dataset_name)
    assert head is not None
    assert head["commit_id"] == job["output_summary"]["commit_id"]
    assert head["row_count"] == 0
    assert _commit_rows(db, head["commit_id"]) == []


@pytest.mark.parametrize(
    ("data", "columns"),
    [
        (b"id,name\n", ["id", "name"]),
        (b"id,name", ["id", "name"]),
        (b'"id","na\nme"\r\n', ["id", "na\nme"]),
    ],
)
@pytest.mark.parametrize("chunk_bytes", [None, 1])
def test_a_header_only_file_commits_its_columns_and_no_rows(
    data: bytes,
    columns: list[str],
    chunk_bytes: int | None,
    client: Client,
    db: Conn,
    tmp_path: Path,
    dataset_name: str,
) -> None:
    # Given a file with a header and no records (with or without a final newline)
    job = import_bytes(client, tmp_path, data, dataset_name, chunk_bytes=chunk_bytes)

    # Then the commit has no rows and records the header's columns
    assert job["status"] == "completed", job["error_message"]
    head = _main_commit(db, dataset_name)
    assert head is not None
    assert head["row_count"] == 0
    assert head["columns"] == columns
    assert _commit_rows(db, head["commit_id"]) == []


def _row_store_size(db: Conn) -> int:
    row = db.execute("SELECT count(*) AS n FROM dsa_core.row_store").fetchone()
    assert row is not None
    return int(row["n"])


def test_identical_rows_are_stored_once_and_a_reimport_adds_none(
    client: Client, db: Conn, tmp_path: Path, dataset_name: str
) -> None:
    # Given a file whose first record appears twice, with values no other test uses
    a, b = uuid.uuid4().hex, uuid.uuid4().hex
    data = f"key,value\n{a},1\n{b},2\n{a},1\n".encode()
    before = _row_store_size(db)

    # When it is imported
    first = import_bytes(client, tmp_path, data, dataset_name)

    # Then the commit has three rows but only two distinct rows were stored
    assert first["status"] == "completed", first["error_message"]
    rows = _commit_rows(db, first["output_summary"]["commit_id"])
    assert [r["data"]["key"] for r in rows] == [a, b, a]
    assert rows[0]["row_hash"] == rows[2]["row_hash"]
    assert _row_store_size(db) == before + 2

    # When the very same file is imported again
    second = import_bytes(client, tmp_path, data, dataset_name)

    # Then the job is recorded, but it makes no empty commit and stores nothing new
    assert second["status"] == "completed", second["error_message"]
    assert second["output_summary"]["unchanged"] is True
    assert "no commit was made" in second["output_summary"]["message"]
    head = _main_commit(db, dataset_name)
    assert head is not None
    assert head["commit_id"] == first["output_summary"]["commit_id"]
    assert second["output_summary"]["commit_id"] == head["commit_id"]
    assert _row_store_size(db) == before + 2


def test_a_csv_export_round_trips_the_imported_file(
    client: Client, db: Conn, tmp_path: Path, dataset_name: str
) -> None:
    # Given an imported file full of quoting, line breaks and non-ASCII text
    data = (
        'id,name,note\r\n1,"Smith, Jane","said ""hi""\r\nthen left"\r\n'
        '2,Zoë,"日本"\r\n3,,""\r\n4," lead and trail ","\n"\r\n'
    ).encode()
    job = import_bytes(client, tmp_path, data, dataset_name, chunk_bytes=7)
    assert job["status"] == "completed", job["error_message"]

    # When main is exported as CSV and downloaded
    status, urls = client.run_export(dataset_name, {"format": "csv"}, poll_seconds=0.05)
    assert urls is not None, status
    out = io.BytesIO()
    size = client.download(urls["url"], out)

    # Then the download holds the same header and records as the file that was imported
    assert size == len(out.getvalue()) == urls["bytes"]
    assert urls["rows"] == 4
    assert urls["commit_id"] == job["output_summary"]["commit_id"]

    def records(raw: bytes) -> list[list[str]]:
        return list(csv.reader(io.StringIO(raw.decode("utf-8"), newline="")))

    assert records(out.getvalue()) == records(data)
