"""Every input format imports through the real state machine and exports back to the same records."""

from __future__ import annotations

import csv
import gzip
import io
import json
from pathlib import Path
from typing import Any

import psycopg
import pytest
import zstandard
from tests.conftest import MAX_UNPACKED_BYTES, import_bytes

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


def _gzip(data: bytes) -> bytes:
    # two members, as pigz and concatenated files make them
    half = len(data) // 2
    return gzip.compress(data[:half]) + gzip.compress(data[half:])


def _zstd(data: bytes) -> bytes:
    return zstandard.ZstdCompressor().compress(data)


@pytest.mark.parametrize("chunk_bytes", [None, 7])
@pytest.mark.parametrize(
    ("filename", "encode"),
    [
        ("data.csv.gz", lambda: _gzip(_csv(CSV_RECORDS).encode())),
        ("data.jsonl.zst", lambda: _zstd(_jsonl(RECORDS))),
        ("data.json.gz", lambda: _gzip(_json_array(RECORDS))),
        ("data.bin", lambda: _gzip(_jsonl(RECORDS))),  # compression and format by content
    ],
)
def test_compressed_files_are_inflated_then_loaded_in_parallel(
    client: Client,
    db: Conn,
    tmp_path: Path,
    dataset_name: str,
    filename: str,
    encode: Any,
    chunk_bytes: int | None,
) -> None:
    job = _completed(
        import_bytes(
            client, tmp_path, encode(), dataset_name, chunk_bytes=chunk_bytes, filename=filename
        )
    )
    expected = CSV_RECORDS if ".csv" in filename else RECORDS
    assert export_records(client, dataset_name) == expected
    ranges = db.execute(
        "SELECT count(*) AS n FROM dsa_jobs.import_chunks WHERE job_id = %s", (job["job_id"],)
    ).fetchone()
    assert ranges is not None
    assert (ranges["n"] > 1) == (chunk_bytes is not None)  # the inflated copy is what is cut


def _fails_and_leaves_nothing(
    client: Client, db: Conn, tmp_path: Path, dataset: str, data: bytes, **options: Any
) -> str:
    """Import ``data`` over a one-row commit: the job fails and main still has that commit."""
    first = _completed(import_bytes(client, tmp_path / "first", b"id\n1\n", dataset))
    job = import_bytes(client, tmp_path / "second", data, dataset, **options)
    assert job["status"] == "failed"
    head = db.execute(
        "SELECT r.commit_id FROM dsa_core.refs r JOIN dsa_core.datasets d ON d.id = r.dataset_id "
        "WHERE d.name = %s AND r.name = 'main'",
        (dataset,),
    ).fetchone()
    assert head == {"commit_id": first["output_summary"]["commit_id"]}
    message: str = job["error_message"]
    return message


def test_a_gzip_bomb_is_stopped_at_the_cap(
    client: Client, db: Conn, tmp_path: Path, dataset_name: str
) -> None:
    bomb = gzip.compress(b"id\n" + b"0\n" * (MAX_UNPACKED_BYTES // 2 + 1024), compresslevel=9)
    assert len(bomb) < MAX_UNPACKED_BYTES // 100
    message = _fails_and_leaves_nothing(
        client, db, tmp_path, dataset_name, bomb, filename="bomb.csv.gz"
    )
    assert f"bomb.csv.gz decompresses to more than {MAX_UNPACKED_BYTES:,} bytes" in message


@pytest.mark.parametrize(
    ("filename", "data", "words"),
    [
        ("cut.csv.gz", _gzip(b"id,name\n" + b"1,abc\n" * 5000)[:-40], "broken or truncated"),
        ("cut.jsonl.zst", _zstd(b'{"id": 1}\n' * 5000)[:-10], "broken or truncated"),
        ("plain.csv.gz", b"id\n1\n", "does not start with a gzip header"),
        ("cut.json", b'[{"id": 1}, {"id": 2', "not closed"),
        ("cut2.json", b'[{"id": 1}, {"id": "2]', "not a valid JSON array"),
        ("cut.jsonl", b'{"id": 1}\n{"id": 2', "line 2 (byte 10) is not valid JSON"),
        ("deep.json", b'[{"id": ' + b"[" * 10_000 + b"]" * 10_000 + b"}]", "nested too deeply"),
        ("deep.jsonl", b'{"id": ' + b"[" * 10_000 + b"]" * 10_000 + b"}\n", "nested too deeply"),
        ("scalars.json", b"[1, 2, 3]", "not a JSON object"),
        # beyond the first imports.json_sample_bytes (1 MiB), where the columns come from
        (
            "late.jsonl",
            b'{"id": 1}\n' * 110_000 + b'{"id": 2, "x": 1}\n',
            "line 110,001 (byte 1,100,000): the record has the key 'x'",
        ),
        ("workbook.xlsx", b"PK\x03\x04" + b"\x00" * 100, "zip archive or an Excel workbook"),
        ("nul.jsonl", b'{"id": "a\\u0000b"}\n', "NUL"),
        ("mixed.csv", b"id,name\n1,a\r\n2,b\n", "ends with LF but the lines before it with CR LF"),
    ],
)
def test_broken_files_end_with_a_clear_error_and_no_commit(
    client: Client,
    db: Conn,
    tmp_path: Path,
    dataset_name: str,
    filename: str,
    data: bytes,
    words: str,
) -> None:
    message = _fails_and_leaves_nothing(client, db, tmp_path, dataset_name, data, filename=filename)
    assert words in message
    assert filename in message


def test_sql_injection_in_header_and_keys_is_just_a_name(
    client: Client, tmp_path: Path, dataset_name: str
) -> None:
    evil = ['id"; DROP TABLE dsa_core.commits; --', "x') OR 1=1 --", "../../etc/passwd", "$1"]
    records = [dict.fromkeys(evil, "v"), {evil[0]: "w", evil[1]: None, evil[2]: "", evil[3]: "z"}]
    _completed(import_bytes(client, tmp_path, _jsonl(records), dataset_name, filename="e.jsonl"))
    assert export_records(client, dataset_name) == records
    renamed = [dict(zip(evil, r.values(), strict=False)) for r in CSV_RECORDS]
    _completed(import_bytes(client, tmp_path / "c", _csv(renamed).encode(), dataset_name))
    assert export_records(client, dataset_name) == renamed
