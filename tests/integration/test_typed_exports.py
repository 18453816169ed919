"""Parquet exports carry the commit's column types; CSV and JSON keep the text imported."""

from __future__ import annotations

import io
from datetime import UTC, date, datetime
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from export_support import exported_records, fetch, run_export
from tests.conftest import import_bytes

from sluiceway.client import Client

DATA = (
    b"id,price,ok,day,at,name,maybe\n"
    b"1,2.5,true,2024-01-02,2024-01-02T03:04:05Z,Ann,7\n"
    b"2,-3,no,2024-02-29,2024-01-02 03:04:05+02:00,,\n"
    b'3,1e3,Y,2023-12-31,2024-01-02,"C, y",9\n'
)


def test_parquet_columns_are_typed_from_the_schema_and_keep_nulls(
    client: Client, tmp_path: Path, dataset_name: str
) -> None:
    # Given a commit of typed columns, cut into several ranges
    job = import_bytes(client, tmp_path, DATA, dataset_name, chunk_bytes=40)
    assert job["status"] == "completed", job["error_message"]

    # When it is exported to Parquet in two parts
    status = run_export(client, dataset_name, format="parquet", part_rows=2)
    assert status["status"] == "completed", status

    # Then each part's columns have the schema's types, read back with pyarrow
    parts = [pq.read_table(io.BytesIO(fetch(p["url"]))) for p in status["urls"]["parts"]]
    assert len(parts) == 2
    assert parts[0].schema == pa.schema(
        [
            ("id", pa.int64()),
            ("price", pa.float64()),
            ("ok", pa.bool_()),
            ("day", pa.date32()),
            ("at", pa.timestamp("us", tz="UTC")),
            ("name", pa.string()),
            ("maybe", pa.int64()),
        ]
    )
    assert parts[1].schema == parts[0].schema
    rows = [r for t in parts for r in t.to_pylist()]
    assert rows == [
        {
            "id": 1,
            "price": 2.5,
            "ok": True,
            "day": date(2024, 1, 2),
            "at": datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC),
            "name": "Ann",
            "maybe": 7,
        },
        {
            "id": 2,
            "price": -3.0,
            "ok": False,
            "day": date(2024, 2, 29),
            "at": datetime(2024, 1, 2, 1, 4, 5, tzinfo=UTC),
            "name": None,
            "maybe": None,
        },
        {
            "id": 3,
            "price": 1000.0,
            "ok": True,
            "day": date(2023, 12, 31),
            "at": datetime(2024, 1, 2, tzinfo=UTC),
            "name": "C, y",
            "maybe": 9,
        },
    ]

    # And the same commit as JSON Lines is the text that was imported
    text = run_export(client, dataset_name, format="jsonl")
    assert [r["price"] for r in exported_records(text)] == ["2.5", "-3", "1e3"]


def test_a_filtered_parquet_export_of_some_columns_is_typed_too(
    client: Client, tmp_path: Path, dataset_name: str
) -> None:
    job = import_bytes(client, tmp_path, DATA, dataset_name)
    assert job["status"] == "completed", job["error_message"]
    status = run_export(
        client, dataset_name, format="parquet", columns=["maybe", "id"], filter={"id": {"gte": 2}}
    )
    assert exported_records(status) == [{"maybe": None, "id": 2}, {"maybe": 9, "id": 3}]
