"""Exports through the export state machine: every format, several part sizes, read back."""

from __future__ import annotations

import csv
import io
import itertools
import time
from pathlib import Path
from typing import Any

import pytest
from export_support import (
    commit_records,
    exported_records,
    fetch,
    release,
    run_export,
    typed,
    wait_stalled,
)
from tests.conftest import import_bytes

from sluiceway.client import ApiError, Client

COLUMNS = ["id", "category", "value", "note"]


def _rows(n: int, salt: str = "") -> list[list[str]]:
    notes = ["plain", "comma, inside", 'quote " inside', "two\nlines", "Ünïcode ✓", "", "x"]
    return [
        [str(i), ["test", "prod", "dev"][i % 3], str(i * 7 % 101), notes[i % len(notes)] + salt]
        for i in range(1, n + 1)
    ]


def _csv(rows: list[list[str]]) -> bytes:
    out = io.StringIO()
    w = csv.writer(out, lineterminator="\n")
    w.writerow(COLUMNS)
    w.writerows(rows)
    return out.getvalue().encode()


def _as_text(records: list[dict[str, Any]]) -> list[dict[str, str]]:
    """What CSV can say: NULL and the empty string are both an empty field."""
    return [{k: "" if v is None else v for k, v in r.items()} for r in records]


@pytest.fixture(scope="module")
def dataset(stack: Any, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    client = Client(stack.api_url, token=stack.local_token, timeout=120)
    name = "exp-formats"
    job = import_bytes(
        client, tmp_path_factory.mktemp("exp"), _csv(_rows(53)), name, chunk_bytes=700
    )
    assert job["status"] == "completed", job
    commit = job["output_summary"]["commit_id"]
    return {
        "name": name,
        "commit": commit,
        "records": commit_records(client, name, commit),
        "schema": job["output_summary"]["schema"],
    }


@pytest.mark.parametrize(
    ("fmt", "part_rows"),
    [(f, n) for f in ("csv", "json", "jsonl", "parquet") for n in (None, 10, 53)]
    + [("jsonl", 1)],  # one part per row, once
)
def test_every_format_at_several_part_sizes_reads_back_to_the_commit(
    client: Client, dataset: dict[str, Any], fmt: str, part_rows: int | None
) -> None:
    # Given a commit of 53 rows; when it is exported
    body: dict[str, Any] = {"format": fmt}
    if part_rows:
        body["part_rows"] = part_rows
    status = run_export(client, dataset["name"], **body)

    # Then the job completed, pinned to main's commit, and says so
    assert status["status"] == "completed", status
    assert status["commit_id"] == dataset["commit"]
    assert status["started"]["commit_id"] == dataset["commit"]
    assert status["total_records"] == status["processed_records"] == 53
    assert status["percent"] == 100.0
    assert status["started_at"] is not None
    assert status["finished_at"] is not None
    urls = status["urls"]
    expected_parts = -(-53 // part_rows) if part_rows else 1
    assert len(urls["parts"]) == expected_parts
    assert (urls["url"] is not None) == (expected_parts == 1)

    # And the parts, read the way a downstream reader reads them, are the commit's records in order
    records = exported_records(status)
    if fmt == "csv":
        assert records == _as_text(dataset["records"])
    elif fmt == "parquet":  # typed from the commit's schema: id and value are integers
        assert [c["type"] for c in dataset["schema"]] == ["integer", "text", "integer", "text"]
        assert records == typed(dataset["records"], dataset["schema"])
        assert isinstance(records[0]["id"], int)
    else:
        assert records == dataset["records"]
    # keys in the dataset's column order
    assert list(records[0]) == COLUMNS


def test_the_manifest_lists_every_part_with_rows_bytes_and_checksums(
    client: Client, dataset: dict[str, Any]
) -> None:
    import hashlib
    import json

    status = run_export(client, dataset["name"], format="csv", part_rows=20)
    urls = status["urls"]
    manifest = json.loads(fetch(urls["manifest_url"]))

    assert manifest["commit_id"] == dataset["commit"]
    assert manifest["rows"] == 53
    assert [p["rows"] for p in manifest["parts"]] == [20, 20, 13]
    for listed, part in zip(manifest["parts"], urls["parts"], strict=True):
        body = fetch(part["url"])
        assert listed["key"] == part["key"]
        assert listed["bytes"] == len(body)
        assert listed["sha256"] == hashlib.sha256(body).hexdigest()
        assert body.startswith(b"id,category,value,note\n")  # every part stands alone


@pytest.mark.parametrize("fmt", ["csv", "jsonl", "parquet"])
def test_gzip_parts_decompress_to_the_same_records(
    client: Client, dataset: dict[str, Any], fmt: str
) -> None:
    status = run_export(client, dataset["name"], format=fmt, compression="gzip", part_rows=25)

    assert status["status"] == "completed", status
    assert all(p["key"].endswith(".gz") for p in status["urls"]["parts"]) == (fmt != "parquet")
    records = exported_records(status)
    expected = {
        "csv": _as_text(dataset["records"]),
        "parquet": typed(dataset["records"], dataset["schema"]),
    }
    assert records == expected.get(fmt, dataset["records"])


def test_columns_come_out_in_the_order_asked(client: Client, dataset: dict[str, Any]) -> None:
    status = run_export(client, dataset["name"], format="jsonl", columns=["note", "id"])

    records = exported_records(status)
    assert records == [{"note": r["note"], "id": r["id"]} for r in dataset["records"]]
    assert list(records[0]) == ["note", "id"]


def test_a_filter_returns_exactly_the_matching_rows(
    client: Client, dataset: dict[str, Any]
) -> None:
    # Given seed 000's filter, an equality, and a numeric range on another column
    where = {"category": "test", "value": {"gte": 10, "lt": 60}}
    status = run_export(client, dataset["name"], format="json", filter=where, part_rows=10)

    # Then exactly the rows that match, in order, across parts of 10 scanned rows each
    expected = [
        r for r in dataset["records"] if r["category"] == "test" and 10 <= int(r["value"]) < 60
    ]
    assert expected  # the data has some
    assert exported_records(status) == expected
    assert status["exported_records"] == len(expected)
    assert status["total_records"] == 53


def test_a_filter_on_null_and_on_text_bounds(client: Client, dataset: dict[str, Any]) -> None:
    nulls = run_export(client, dataset["name"], format="jsonl", filter={"note": None})
    assert exported_records(nulls) == [r for r in dataset["records"] if r["note"] is None]

    text = run_export(client, dataset["name"], format="jsonl", filter={"id": {"lt": "2"}})
    # text compares byte by byte: "1", "10".."19" are below "2"
    assert exported_records(text) == [r for r in dataset["records"] if r["id"] < "2"]


def test_an_older_commit_exports_its_own_rows(
    client: Client, tmp_path: Path, dataset_name: str
) -> None:
    first = import_bytes(client, tmp_path / "a", _csv(_rows(12, " v1")), dataset_name)
    second = import_bytes(client, tmp_path / "b", _csv(_rows(30, " v2")), dataset_name)
    old = first["output_summary"]["commit_id"]

    status = run_export(client, dataset_name, format="csv", commit=old, part_rows=5)

    assert status["commit_id"] == old != second["output_summary"]["commit_id"]
    records = exported_records(status)
    assert len(records) == 12
    assert records == _as_text(commit_records(client, dataset_name, old))
    assert all(r["note"].endswith(" v1") for r in records)


def test_main_is_pinned_when_the_export_starts(
    client: Client, tmp_path: Path, dataset_name: str
) -> None:
    first = import_bytes(client, tmp_path / "a", _csv(_rows(40)), dataset_name)
    started = client.call("POST", f"/datasets/{dataset_name}/exports", {"format": "jsonl"})
    # main moves while the export runs
    import_bytes(client, tmp_path / "b", _csv(_rows(3)), dataset_name)

    assert started["commit_id"] == first["output_summary"]["commit_id"]
    status = run_export(client, dataset_name, format="jsonl")  # a second export sees the new main
    assert status["commit_id"] != started["commit_id"]
    done = client.call("GET", started["status_url"])
    while done["status"] not in ("completed", "failed"):
        done = client.call("GET", started["status_url"])
    assert done["commit_id"] == started["commit_id"]
    assert done["exported_records"] == 40


def test_an_empty_commit_exports_one_part_with_its_header(
    client: Client, tmp_path: Path, dataset_name: str
) -> None:
    import_bytes(client, tmp_path, b"a,b\n", dataset_name)

    status = run_export(client, dataset_name, format="csv")

    assert status["status"] == "completed", status
    [part] = status["urls"]["parts"]
    assert fetch(part["url"]) == b"a,b\n"


@pytest.mark.parametrize(
    ("body", "status_code", "says"),
    [
        ({"format": "xml"}, 422, "format"),
        ({"columns": ["id", "nope"]}, 400, "'nope'"),
        ({"filter": {"missing": 1}}, 400, "'missing'"),
        ({"filter": {"id": {}}}, 422, "at least one"),
        ({"commit": "no-such-ref"}, 404, "no-such-ref"),
        ({"part_rows": 0}, 422, "part_rows"),
        ({"part_rows": 10**12}, 400, "part_rows"),
        ({"compression": "zip"}, 422, "compression"),
        ({"surprise": True}, 422, "surprise"),
    ],
)
def test_bad_requests_get_a_clear_error(
    client: Client, dataset: dict[str, Any], body: dict[str, Any], status_code: int, says: str
) -> None:
    with pytest.raises(ApiError) as caught:
        client.call("POST", f"/datasets/{dataset['name']}/exports", body)

    assert caught.value.http_status == status_code
    assert says in caught.value.message


def test_an_unknown_export_is_not_found(client: Client) -> None:
    with pytest.raises(ApiError) as caught:
        client.call("GET", "/exports/00000000-0000-0000-0000-000000000000")
    assert caught.value.http_status == 404


def test_another_owners_export_is_not_found(
    stack: Any, client: Client, db: Any, dataset: dict[str, Any]
) -> None:
    from sluiceway import auth

    # Given my finished export, and a token for somebody else
    mine = run_export(client, dataset["name"], format="csv")
    other = Client(stack.api_url, token=auth.create_token(db, "mallory"))

    # Then its status and its download URLs are "not found" for them
    for path in (mine["started"]["status_url"], mine["started"]["download_url"]):
        with pytest.raises(ApiError) as refused:
            other.call("GET", path)
        assert refused.value.http_status == 404


@pytest.mark.parametrize("stored_rows", [0.0, 1e12], ids=["hash-all", "probe-in-hash-order"])
def test_both_query_shapes_read_the_same_rows(
    stack: Any, dataset: dict[str, Any], stored_rows: float
) -> None:
    import psycopg
    from psycopg.rows import dict_row, tuple_row

    from sluiceway.export_part import RowQuery

    with psycopg.connect(stack.database_url, autocommit=True, row_factory=dict_row) as conn:
        shape = RowQuery(conn, COLUMNS)
        shape.stored_rows = stored_rows  # a part that is most, or a sliver, of all stored rows
        query, params = shape.select(COLUMNS, {"category": "test"}, dataset["commit"], 5, 40)
        got = conn.cursor(row_factory=tuple_row).execute(query, params).fetchall()

    expected = [r for r in dataset["records"][4:39] if r["category"] == "test"]
    assert [dict(zip(COLUMNS, row, strict=True)) for row in got] == expected


@pytest.mark.parametrize("fmt", ["csv", "jsonl"])
def test_a_parts_rows_count_in_the_status_before_it_is_written(
    client: Client, db: Any, dataset: dict[str, Any], fmt: str
) -> None:
    # Given an export of one part, held after its rows are written and before its object is
    # complete
    started = client.call(
        "POST",
        f"/datasets/{dataset['name']}/exports",
        {"format": fmt, "faults": {"stall_part": 1}},
    )
    try:
        wait_stalled(db, started["job_id"], "part")
        # Then its status already counts the part's rows, though no part is written yet
        status = client.call("GET", started["status_url"])
        assert (status["status"], status["parts_done"], status["parts_total"]) == (
            "running",
            0,
            1,
        )
        assert status["processed_records"] == status["total_records"] == 53
    finally:
        release(db, started["job_id"])
    deadline = time.monotonic() + 120
    while (status := client.call("GET", started["status_url"]))["status"] == "running":
        assert time.monotonic() < deadline, status
        time.sleep(0.1)
    assert status["status"] == "completed", status["error"]


def test_a_csv_part_reaches_its_sink_a_mebibyte_at_a_time(stack: Any) -> None:
    import psycopg
    from psycopg import sql

    from sluiceway.export_part import GATHER_BYTES, write_csv

    class Counting(io.BytesIO):
        writes = 0

        def write(self, data: Any) -> int:
            self.writes += 1
            return super().write(data)

    # Given a query of 100,000 rows (about 2.5 MB of CSV)
    query = sql.SQL("SELECT g, repeat('x', 20) FROM generate_series(1, 100000) g")
    out = Counting()
    told: list[int] = []
    with psycopg.connect(stack.database_url, autocommit=True) as conn:
        rows = write_csv(conn, query, [], ["n", "pad"], out, told.append, progress_seconds=0)
        # (and told only at the end when it takes less than the interval)
        at_end: list[int] = []
        write_csv(conn, query, [], ["n", "pad"], io.BytesIO(), at_end.append, progress_seconds=60)
        assert at_end == [100_000]

    # Then every row is written, in COPY's CSV after the header
    text = out.getvalue().decode()
    assert rows == 100_000
    assert text.splitlines()[:2] == ["n,pad", "1," + "x" * 20]
    assert len(text.splitlines()) == 100_001
    # and the sink was called for the header and once per GATHER_BYTES, not once per row
    assert 2 <= out.writes <= 1 + -(-len(out.getvalue()) // GATHER_BYTES)
    # and progress, with no interval, was told the rows written at each MiB, growing, and all
    # of them at the end
    # once per full MiB sent and once at the end: as many as the rows' writes (the last one
    # is part of a MiB)
    assert len(told) == out.writes - 1
    assert told == sorted(told)
    assert told[0] < told[-1] == rows
    sizes = itertools.accumulate(len(line) + 1 for line in text.splitlines()[1:])
    assert told[0] == next(n for n, size in enumerate(sizes, 1) if size >= GATHER_BYTES)
