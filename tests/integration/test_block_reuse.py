"""A CSV re-import takes the blocks of bytes it has seen before as stored (sluiceway.blocks).

The rows each commit holds are checked against the file itself, in order; what the blocks
change is only how many rows a range COPYs and hashes (``reused_rows`` on its range).
"""

from __future__ import annotations

import csv
import io
import uuid
from pathlib import Path
from typing import Any

import psycopg
import pytest
from tests.conftest import import_bytes as plain_import
from tests.conftest import main_commit

from sluiceway.client import Client

Conn = psycopg.Connection[dict[str, Any]]
HEADER = ["id", "name", "note", "score"]


def _rows(count: int, changed: dict[int, str] | None = None) -> list[list[str]]:
    out = []
    for i in range(1, count + 1):
        note = f'a "quoted" note, with a comma\nand a newline {i}' if i % 7 == 0 else f"n{i}"
        out.append([str(i), f"name {i}", note, (changed or {}).get(i, str(i * 13 % 101))])
    return out


def _csv(rows: list[list[str]], newline: str = "\n") -> bytes:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator=newline)
    writer.writerow(HEADER)
    writer.writerows(rows)
    return buf.getvalue().encode()


def import_bytes(*args: Any, **kwargs: Any) -> dict[str, Any]:
    """An import that asks for blocks (off by default: sluiceway.settings)."""
    return plain_import(*args, reuse_blocks=True, **kwargs)


def _ok(job: dict[str, Any]) -> dict[str, Any]:
    assert job["status"] == "completed", job["error_message"]
    summary: dict[str, Any] = job["output_summary"]
    return summary


def _stored(db: Conn, commit_id: str) -> list[list[str]]:
    found = db.execute(
        "SELECT r.data FROM dsa_core.commit_rows cr JOIN dsa_core.rows r USING (row_hash) "
        "WHERE cr.commit_id = %s ORDER BY cr.ord",
        (commit_id,),
    ).fetchall()
    return [[r["data"][c] for c in HEADER] for r in found]


def _reused(db: Conn, job: dict[str, Any]) -> int:
    row = db.execute(
        "SELECT coalesce(sum(reused_rows), 0) AS n, count(*) AS ranges "
        "FROM dsa_jobs.import_chunks WHERE job_id = %s",
        (job["job_id"],),
    ).fetchone()
    assert row is not None
    return int(row["n"])


def test_a_reimport_takes_its_unchanged_blocks_as_stored_and_holds_the_files_rows(
    client: Client, tmp_path: Path, db: Conn, dataset_name: str
) -> None:
    # Given a 3,000-row CSV imported in several ranges
    first_rows = _rows(3000)
    first = _ok(import_bytes(client, tmp_path, _csv(first_rows), dataset_name, chunk_bytes=40_000))
    assert _stored(db, first["commit_id"]) == first_rows

    # When the file is imported again with one value changed
    second_rows = _rows(3000, changed={1500: "changed"})
    job = import_bytes(client, tmp_path, _csv(second_rows), dataset_name, chunk_bytes=40_000)
    second = _ok(job)

    # Then the commit holds the new file's rows, one changed, and almost every row was
    # taken from a block found stored rather than COPYed again
    assert _stored(db, second["commit_id"]) == second_rows
    assert second["changes"] == {"added": 0, "removed": 0, "changed": 1}
    assert _reused(db, job) >= 2900


def test_rows_inserted_and_deleted_keep_their_places(
    client: Client, tmp_path: Path, db: Conn, dataset_name: str
) -> None:
    # Given an imported file
    rows = _rows(2000)
    _ok(import_bytes(client, tmp_path, _csv(rows), dataset_name, chunk_bytes=30_000))

    # When it comes back with a row inserted near the start and others deleted near the end
    edited = [*rows[:10], ["new", "inserted", "x", "1"], *rows[10:1800], *rows[1810:]]
    job = import_bytes(client, tmp_path, _csv(edited), dataset_name, chunk_bytes=30_000)
    summary = _ok(job)

    # Then the commit is the edited file, row for row
    assert _stored(db, summary["commit_id"]) == edited
    assert _reused(db, job) >= 1800


def test_the_same_bytes_again_make_no_commit_and_copy_nothing(
    client: Client, tmp_path: Path, db: Conn, dataset_name: str
) -> None:
    data = _csv(_rows(1000))
    _ok(import_bytes(client, tmp_path, data, dataset_name))
    job = import_bytes(client, tmp_path, data, dataset_name)
    assert _ok(job)["unchanged"] is True
    assert _reused(db, job) == 1000


def test_the_same_rows_with_other_line_endings_are_the_same_rows(
    client: Client, tmp_path: Path, db: Conn, dataset_name: str
) -> None:
    # CR LF bytes are other blocks than LF ones: nothing is reused, the rows are the same
    rows = _rows(800)
    first = _ok(import_bytes(client, tmp_path, _csv(rows), dataset_name))
    job = import_bytes(client, tmp_path, _csv(rows, newline="\r\n"), dataset_name)
    second = _ok(job)
    assert second["unchanged"] is True  # the same rows make no commit
    assert second["commit_id"] == first["commit_id"]
    assert _stored(db, first["commit_id"]) == rows
    assert _reused(db, job) == 0


def test_the_same_rows_in_another_order_are_a_commit(
    client: Client, tmp_path: Path, db: Conn, dataset_name: str
) -> None:
    # a diff pairs rows by content and counts nothing changed; the order still changed
    rows = _rows(400)
    _ok(import_bytes(client, tmp_path, _csv(rows), dataset_name))
    moved = rows[200:] + rows[:200]
    second = _ok(import_bytes(client, tmp_path, _csv(moved), dataset_name))
    assert "unchanged" not in second or second["unchanged"] is False
    assert _stored(db, second["commit_id"]) == moved


def test_gc_forgets_the_blocks_of_the_leaves_it_deletes(
    client: Client, tmp_path: Path, db: Conn, dataset_name: str
) -> None:
    # Given a file imported, then replaced by another, and gc keeping only the last commit
    old_rows = [[f"gc{r[0]}", *r[1:]] for r in _rows(600)]
    _ok(import_bytes(client, tmp_path, _csv(old_rows), dataset_name))
    _ok(import_bytes(client, tmp_path, _csv(_rows(50)), dataset_name))
    client.call("POST", f"/datasets/{dataset_name}/gc", {"keep": 1})

    # Then no block names a leaf that is gone
    dangling = db.execute(
        "SELECT count(*) AS n FROM dsa_core.block_leaves b WHERE NOT EXISTS "
        "(SELECT 1 FROM dsa_core.row_leaves l WHERE l.leaf_hash = b.leaf_hash)"
    ).fetchone()
    assert dangling is not None
    assert dangling["n"] == 0

    # And the old file imported again is stored whole once more
    job = import_bytes(client, tmp_path, _csv(old_rows), dataset_name)
    summary = _ok(job)
    assert _stored(db, summary["commit_id"]) == old_rows
    assert _reused(db, job) == 0


@pytest.mark.parametrize(
    ("where", "bad"),
    [
        (1200, b"1200,name 1200,n1200,7,an extra field\n"),  # a record too long
        (1800, b"1800,name \xff\xfe 1800,n1800,7\n"),  # not UTF-8
        (2999, b'2999,name 2999,"an unterminated quote\n'),  # the quote runs to the end
    ],
    ids=["extra field", "not utf-8", "unterminated quote"],
)
def test_a_bad_record_in_a_new_block_fails_the_reimport_as_the_ordinary_load_does(
    client: Client, tmp_path: Path, db: Conn, where: int, bad: bytes
) -> None:
    # Given the same good file imported into two datasets, with blocks and without
    good = _csv(_rows(3000))
    blocks_set, plain_set = f"b-{uuid.uuid4().hex[:10]}", f"p-{uuid.uuid4().hex[:10]}"
    _ok(import_bytes(client, tmp_path / "1", good, blocks_set, chunk_bytes=40_000))
    _ok(plain_import(client, tmp_path / "2", good, plain_set, chunk_bytes=40_000))
    before = main_commit(db, blocks_set), main_commit(db, plain_set)

    # When a file with one bad record in the middle of reused blocks is imported into both
    lines = good.split(b"\n")
    starts = [i for i, line in enumerate(lines) if line.startswith(f"{where},".encode())]
    lines[starts[0]] = bad.rstrip(b"\n")
    bad_file = b"\n".join(lines)
    with_blocks = import_bytes(client, tmp_path / "3", bad_file, blocks_set, chunk_bytes=40_000)
    without = plain_import(client, tmp_path / "4", bad_file, plain_set, chunk_bytes=40_000)

    # Then both fail with the same message, which names the place, and main keeps its commit
    assert without["status"] == "failed"
    assert with_blocks["status"] == "failed"
    assert with_blocks["error_message"] == without["error_message"]
    assert "data.csv" in with_blocks["error_message"], with_blocks["error_message"]
    assert (main_commit(db, blocks_set), main_commit(db, plain_set)) == before
