"""Hostile column names and empty values through every export format: read back as a downstream
reader would (csv module, json, pyarrow), the names and values are the ones imported."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

import pytest
from tests.conftest import import_bytes
from tests.integration.export_support import commit_records, exported_records, fetch, run_export

from sluiceway.client import Client

# Names a header may hold that break naive writers: quotes, the delimiter, line breaks inside
# a quoted name, non-ASCII, SQL words, dots, a leading digit, more than PostgreSQL's 63-byte
# identifiers, and names that differ only in case. (The import refuses an empty name and a
# name given twice, and trims spaces around a name: "  padded  " is "padded".)
NAMES = [
    'quo"te',
    "com,ma",
    "new\nline",
    "cr\r\nlf",
    "ünïcødé ✓ 😀",
    "select",
    "SELECT",
    '"x"',
    "a.b",
    "1st",
    "tab\there",
    "back\\slash",
    "semi;colon",
    "ö" * 300,
    "padded",
]
HEADER = [*NAMES[:-1], "  padded  "]
# None: an empty field (NULL); "": a quoted empty string
ROWS: list[list[str | None]] = [
    [
        *['he said "hi"', "1,2", "two\nlines", "\r\n", "naïve ✓", "drop table", "x", '"'],
        *[".", "one", "\t", "\\", ";", " spaced ", "p"],
    ],
    [None, "", None, "", None, "", None, "", None, "", None, "", None, "", None],
]


def _field(value: str | None) -> str:
    return "" if value is None else '"' + value.replace('"', '""') + '"'


def _csv(header: list[str], rows: list[list[str | None]]) -> bytes:
    lines = [",".join(map(_field, header)), *(",".join(map(_field, r)) for r in rows)]
    return ("\n".join(lines) + "\n").encode()


@pytest.mark.parametrize("fmt", ["csv", "json", "jsonl", "parquet"])
def test_hostile_column_names_come_back_as_imported_in_every_format(
    client: Client, tmp_path: Path, dataset_name: str, fmt: str
) -> None:
    # Given a CSV whose header holds hostile names, and a row of NULLs and empty strings
    job = import_bytes(client, tmp_path, _csv(HEADER, ROWS), dataset_name)
    assert job["status"] == "completed", job["error_message"]
    assert client.call("GET", f"/datasets/{dataset_name}")["columns"] == NAMES

    # When the dataset is exported in this format
    status = run_export(client, dataset_name, format=fmt)

    # Then each record has the imported names, in order, and the imported values (the csv
    # module reads NULL and "" alike as "")
    assert status["status"] == "completed", status["error"]
    assert status["urls"]["columns"] == NAMES
    records = exported_records(status)
    assert [list(r) for r in records] == [NAMES, NAMES]
    expected = [[("" if v is None else v) for v in r] for r in ROWS] if fmt == "csv" else ROWS
    assert [list(r.values()) for r in records] == expected


def _reimported(client: Client, tmp_path: Path, data: bytes, dataset: str) -> list[Any]:
    job = import_bytes(client, tmp_path / "again", data, dataset)
    assert job["status"] == "completed", job["error_message"]
    found = client.call("GET", f"/datasets/{dataset}")
    return [found["columns"], commit_records(client, dataset, found["head_commit_id"])]


def test_a_csv_export_of_hostile_names_nulls_and_empty_strings_imports_as_the_same_rows(
    client: Client, tmp_path: Path, dataset_name: str
) -> None:
    # Given the dataset of hostile names, exported as CSV
    import_bytes(client, tmp_path, _csv(HEADER, ROWS), dataset_name)
    status = run_export(client, dataset_name, format="csv")
    assert status["status"] == "completed", status["error"]
    (part,) = status["urls"]["parts"]

    # When the exported file is imported as a new dataset
    again = _reimported(client, tmp_path, fetch(part["url"]), f"{dataset_name}-again")

    # Then it has the same columns and rows: NULL stayed NULL and "" stayed ""
    assert again == [NAMES, [dict(zip(NAMES, r, strict=True)) for r in ROWS]]


@pytest.mark.parametrize(
    "values",
    [
        ["x", None, "", None, None],  # NULLs at the end: blank last lines
        [None, None],  # NULLs only
        ["", None, ""],
    ],
)
def test_a_one_column_csv_export_keeps_nulls_apart_from_empty_strings_and_imports_the_same(
    client: Client, tmp_path: Path, dataset_name: str, values: list[str | None]
) -> None:
    # Given one column of values, NULLs and empty strings (JSON Lines says which is which)
    data = "".join(json.dumps({"v": v}) + "\n" for v in values).encode()
    job = import_bytes(client, tmp_path, data, dataset_name, filename="data.jsonl")
    assert job["status"] == "completed", job["error_message"]

    # When it is exported as CSV: a NULL is an empty line, an empty string a quoted ""
    status = run_export(client, dataset_name, format="csv")
    assert status["status"] == "completed", status["error"]
    (part,) = status["urls"]["parts"]
    exported = fetch(part["url"])
    rows = list(csv.reader(io.StringIO(exported.decode(), newline="")))
    assert rows == [["v"], *([] if v is None else [v] for v in values)]

    # Then the exported file imported again gives the same rows (blank lines at its end were
    # trimmed as if they were no records, and the NULLs they hold lost)
    again = _reimported(client, tmp_path, exported, f"{dataset_name}-again")
    assert again == [["v"], [{"v": v} for v in values]]
