"""Every input format imports through the real state machine and exports back to the same records."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import psycopg
import pytest
from tests.conftest import import_bytes

from sluiceway.client import Client

Conn = psycopg.Connection[dict[str, Any]]

# None: one range; 1: every byte its own range (every boundary lands everywhere once).
CHUNK_SIZES = (None, 1, 5, 64)

RECORDS: list[dict[str, Any]] = [
    {"id": "1", "name": "Smith, Jane", "note": 'said "hi"\nthen left'},
    {"id": "2", "name": "Zoë", "note": "日本, 語 😀"},
    {"id": "3", "name": "", "note": None},
    {"id": "4", "name": 'back\\slash \\" and ]}[{,', "note": "tab\there"},
]


def export_records(client: Client, dataset: str, fmt: str = "jsonl") -> list[dict[str, Any]]:
    """main's rows, exported and downloaded as JSON Lines."""
    export = client.call("POST", f"/datasets/{dataset}/exports", {"format": fmt})
    out = io.BytesIO()
    client.download(export["url"], out)
    text = out.getvalue().decode()
    if fmt == "json":
        return list(json.loads(text))
    return [json.loads(line) for line in text.splitlines() if line]


def _jsonl(records: list[dict[str, Any]]) -> bytes:
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records).encode()


def _json_array(records: list[dict[str, Any]]) -> bytes:
    return json.dumps(records, ensure_ascii=False, indent=1).encode()


def _completed(job: dict[str, Any]) -> dict[str, Any]:
    assert job["status"] == "completed", job["error_message"]
    return job


@pytest.mark.parametrize("chunk_bytes", CHUNK_SIZES)
@pytest.mark.parametrize(
    ("filename", "encode"), [("data.jsonl", _jsonl), ("data.json", _json_array)]
)
def test_json_formats_round_trip_at_every_chunk_size(
    client: Client,
    tmp_path: Path,
    dataset_name: str,
    filename: str,
    encode: Any,
    chunk_bytes: int | None,
) -> None:
    # Given records full of quotes, commas, newlines, brackets and non-ASCII text
    data = encode(RECORDS)

    # When the file is imported cut into ranges of this size
    job = _completed(
        import_bytes(
            client, tmp_path, data, dataset_name, chunk_bytes=chunk_bytes, filename=filename
        )
    )

    # Then the export gives back the same records, in order
    assert job["output_summary"]["rows"] == len(RECORDS)
    assert export_records(client, dataset_name) == RECORDS


def _csv(records: list[dict[str, Any]], delimiter: str = ",", header: bool = True) -> str:
    import csv

    out = io.StringIO()
    writer = csv.writer(out, delimiter=delimiter, lineterminator="\n")
    if header:
        writer.writerow(records[0])
    for r in records:
        writer.writerow(["" if v is None else v for v in r.values()])
    return out.getvalue()


# CSV cannot tell an empty field from a missing one: both import as NULL, export as null.
CSV_RECORDS = [{k: (v or None) for k, v in r.items()} for r in RECORDS]


@pytest.mark.parametrize("chunk_bytes", [None, 3])
@pytest.mark.parametrize(
    ("filename", "delimiter", "options"),
    [
        ("data.tsv", "\t", {}),  # by the name
        ("data.csv", ";", {}),  # sniffed
        ("data.txt", "|", {}),  # sniffed
        ("data.csv", "|", {"delimiter": "|"}),  # given
        ("data.dat", "\t", {"format": "tsv"}),  # given
    ],
)
def test_delimiters_are_detected_or_given(
    client: Client,
    tmp_path: Path,
    dataset_name: str,
    filename: str,
    delimiter: str,
    options: dict[str, Any],
    chunk_bytes: int | None,
) -> None:
    data = _csv(CSV_RECORDS, delimiter).encode()
    job = import_bytes(
        client, tmp_path, data, dataset_name, chunk_bytes=chunk_bytes, filename=filename, **options
    )
    _completed(job)
    assert export_records(client, dataset_name) == CSV_RECORDS


def test_a_csv_without_a_header_gets_numbered_columns(
    client: Client, tmp_path: Path, dataset_name: str
) -> None:
    data = _csv(CSV_RECORDS, header=False).encode()
    _completed(import_bytes(client, tmp_path, data, dataset_name, chunk_bytes=4, header=False))
    assert export_records(client, dataset_name) == [
        {f"column_{i}": v for i, v in enumerate(r.values(), 1)} for r in CSV_RECORDS
    ]


@pytest.mark.parametrize(
    ("encoding", "given"),
    [
        ("utf-8-sig", None),
        ("latin-1", "latin-1"),
        ("cp1252", "cp1252"),
        ("utf-16", None),  # its BOM says so
        ("utf-16", "utf-16"),
    ],
)
@pytest.mark.parametrize("fmt", ["csv", "jsonl"])
def test_encodings_are_transcoded(
    client: Client,
    tmp_path: Path,
    dataset_name: str,
    encoding: str,
    given: str | None,
    fmt: str,
) -> None:
    # Given text every one of these encodings can hold (and cp1252's euro sign where it can)
    records = [{"id": "1", "name": "Zoë Ærø"}, {"id": "2", "name": "naïve, façade"}]
    if encoding != "latin-1":
        records.append({"id": "3", "name": "€ „quoted“"})
    text = _csv(records) if fmt == "csv" else _jsonl(records).decode()
    options = {"encoding": given} if given else {}
    job = import_bytes(
        client,
        tmp_path,
        text.encode(encoding),
        dataset_name,
        chunk_bytes=5,
        filename=f"data.{fmt}",
        **options,
    )
    _completed(job)
    assert export_records(client, dataset_name) == records


def test_an_undecodable_byte_names_its_line_and_offset(
    client: Client, tmp_path: Path, dataset_name: str
) -> None:
    data = b"id,name\n1,ok\n2,caf\xe9\n"  # latin-1 sent as UTF-8
    job = import_bytes(client, tmp_path, data, dataset_name)
    assert job["status"] == "failed"
    assert "Byte 18 (line 3)" in job["error_message"]
    assert "not valid UTF-8 (0xe9)" in job["error_message"]
    assert "--encoding" in job["error_message"]
