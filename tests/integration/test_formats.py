"""Every input format imports through the real state machine and exports back to the same records."""

from __future__ import annotations

import csv
import gzip
import io
import json
import uuid
import zipfile
from datetime import date, datetime, time
from pathlib import Path
from typing import Any

import openpyxl
import psycopg
import pytest
import zstandard
from click.testing import CliRunner
from export_support import exported_records, run_export
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tests.conftest import MAX_UNPACKED_BYTES, import_bytes

from sluiceway.cli import cli
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
    """main's rows, exported (the export state machine) and read back from its parts."""
    status = run_export(client, dataset, format=fmt)
    assert status["status"] == "completed", status
    return exported_records(status)


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
        ("scalars.json", b"[1, 2, 3]", "record 1: the record is a JSON scalar, not an object"),
        # beyond the first imports.json_sample_bytes (1 MiB), where the columns come from
        (
            "late.jsonl",
            b'{"id": 1}\n' * 110_000 + b'{"id": 2, "x": 1}\n',
            "line 110,001 (byte 1,100,000): the record has the key 'x'",
        ),
        ("zip.xlsx", b"", "is not an Excel workbook (.xlsx)"),  # a zip of a text file
        ("truncated.xlsx", b"PK\x03\x04" + b"\x00" * 100, "is not an Excel workbook (.xlsx)"),
        ("old.xls", b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + b"\x00" * 100, "Excel 97-2003"),
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
    if filename == "zip.xlsx":
        data = _zip_of_text()
    message = _fails_and_leaves_nothing(client, db, tmp_path, dataset_name, data, filename=filename)
    assert words in message
    assert filename in message


def _zip_of_text() -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as z:
        z.writestr("notes.txt", "not a workbook")
    return out.getvalue()


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


def _workbook(sheets: dict[str, list[list[Any]]]) -> bytes:
    book = openpyxl.Workbook()
    book.remove(book.active)
    for name, rows in sheets.items():
        sheet = book.create_sheet(name)
        for row in rows:
            sheet.append(row)
    out = io.BytesIO()
    book.save(out)
    return out.getvalue()


def test_an_excel_workbook_loads_one_sheet_per_item_with_sheet_row_ids(
    client: Client, db: Conn, tmp_path: Path, dataset_name: str
) -> None:
    # Given a workbook of two sheets (the second with a column of its own), typed cells, an
    # empty row, and a sheet that is empty
    data = _workbook(
        {
            "Sales 2024": [
                ["id", "when", "amount", "paid", "note"],
                [1, datetime(2024, 1, 2, 3, 4, 5), 1.5, True, 'say "hi", then\nleave'],
                [2, date(2024, 2, 29), 10**20, False, None],
                [None, None, None, None, None],
                [3, time(13, 30), 0.1, None, "日本"],
            ],
            "Empty": [],
            "Returns": [["id", "amount", "reason"], [4, -2, "damaged"]],
        }
    )

    # When it is imported (by its name; each sheet is one Map item)
    job = _completed(import_bytes(client, tmp_path, data, dataset_name, filename="book.xlsx"))

    # Then the rows are the sheets' rows in order, dates and numbers as ISO 8601 and
    # round-tripping number text, and each row's logical id is sheet:row
    assert export_records(client, dataset_name) == [
        {
            "id": "1",
            "when": "2024-01-02T03:04:05",
            "amount": "1.5",
            "paid": "true",
            "note": 'say "hi", then\nleave',
            "reason": None,
        },
        {
            "id": "2",
            "when": "2024-02-29",
            "amount": "1e+20",
            "paid": "false",
            "note": None,
            "reason": None,
        },
        {
            "id": "3",
            "when": "13:30:00",
            "amount": "0.1",
            "paid": None,
            "note": "日本",
            "reason": None,
        },
        {"id": "4", "when": None, "amount": "-2", "paid": None, "note": None, "reason": "damaged"},
    ]
    ids = db.execute(
        "SELECT logical_row_id FROM dsa_core.commit_rows WHERE commit_id = %s ORDER BY ord",
        (job["output_summary"]["commit_id"],),
    ).fetchall()
    assert [r["logical_row_id"] for r in ids] == [
        "Sales 2024:2",
        "Sales 2024:3",
        "Sales 2024:5",
        "Returns:2",
    ]


def test_a_workbook_row_wider_than_its_header_is_an_error(
    client: Client, db: Conn, tmp_path: Path, dataset_name: str
) -> None:
    data = _workbook({"S": [["id"], [1], [2, "extra"]]})
    message = _fails_and_leaves_nothing(
        client, db, tmp_path, dataset_name, data, filename="wide.xlsx"
    )
    assert (
        "wide.xlsx: sheet 'S', row 3: a value in column 2, beyond the header's 1 columns" in message
    )


TYPED = (
    '{"id": 1, "price": 1.50, "big": 123456789012345678901234567890, "ok": true, '
    '"tags": ["a", {"b": 2.5}], "none": null, "huge": 1e400, "neg": -0.0}'
)


@pytest.mark.parametrize(
    ("filename", "data"),
    [("typed.jsonl", (TYPED + "\n").encode()), ("typed.json", f"[{TYPED}]".encode())],
)
def test_json_values_keep_their_text(
    client: Client, tmp_path: Path, dataset_name: str, filename: str, data: bytes
) -> None:
    _completed(import_bytes(client, tmp_path, data, dataset_name, filename=filename))
    assert export_records(client, dataset_name) == [
        {
            "id": "1",
            "price": "1.50",
            "big": "123456789012345678901234567890",
            "ok": "true",
            "tags": '["a",{"b":2.5}]',
            "none": None,
            "huge": "1E+400",
            "neg": "-0.0",
        }
    ]


KEY_NAMES = ["id", "name with space", 'q"uote', "comma,key", "nl\nkey", "日本", "x') OR 1=1 --"]
VALUE_TEXT = st.one_of(
    st.sampled_from(["", ",", '"', '""', "\n", "\r\n", "a,b", "é", "😀", "[{", "\\", '\\"']),
    st.text(st.characters(codec="utf-8", exclude_characters="\x00\r"), max_size=12),
)


@st.composite
def tables(draw: st.DrawFn) -> tuple[list[str], list[list[str | None]]]:
    columns = draw(st.lists(st.sampled_from(KEY_NAMES), min_size=1, max_size=4, unique=True))
    width = len(columns)
    rows = draw(
        st.lists(
            st.lists(st.one_of(st.none(), VALUE_TEXT), min_size=width, max_size=width),
            min_size=1,
            max_size=12,
        )
    )
    return columns, rows


def _write(fmt: str, columns: list[str], rows: list[list[str | None]]) -> bytes:
    if fmt in ("csv", "tsv"):
        out = io.StringIO()
        writer = csv.writer(
            out, delimiter="\t" if fmt == "tsv" else ",", lineterminator="\n", quoting=csv.QUOTE_ALL
        )
        writer.writerow(columns)
        writer.writerows(rows)
        return out.getvalue().encode()
    records = [dict(zip(columns, r, strict=True)) for r in rows]
    return _jsonl(records) if fmt == "jsonl" else _json_array(records)


@pytest.mark.timeout(900)  # a few imports cut into ranges of a few bytes
@settings(
    max_examples=6,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    table=tables(), fmt=st.sampled_from(["csv", "tsv", "jsonl", "json"]), chunk=st.integers(1, 90)
)
def test_random_records_round_trip_in_every_format(
    client: Client,
    tmp_path: Path,
    table: tuple[list[str], list[list[str | None]]],
    fmt: str,
    chunk: int,
) -> None:
    columns, rows = table
    dataset = f"t-{uuid.uuid4().hex[:12]}"
    options = {"delimiter": ","} if fmt == "csv" else {}
    job = import_bytes(
        client,
        tmp_path / dataset,
        _write(fmt, columns, rows),
        dataset,
        chunk_bytes=chunk,
        filename=f"data.{fmt}",
        **options,
    )
    _completed(job)
    # every CSV field is quoted here, and a quoted empty field is an empty string, not NULL
    expected = [
        dict(
            zip(columns, ["" if v is None and fmt in ("csv", "tsv") else v for v in r], strict=True)
        )
        for r in rows
    ]
    assert export_records(client, dataset) == expected


def test_cli_and_uppy_metadata_carry_the_format_options(
    stack: Any, client: Client, tmp_path: Path, dataset_name: str
) -> None:
    # Given a semicolon-separated cp1252 file without a header, named as if it were anything
    src = tmp_path / "export.dat"
    src.write_bytes("1;Zoë €\n2;naïve\n".encode("cp1252"))
    common = ["--api", stack.api_url, "--token", stack.local_token, "--json"]
    args = ["import", str(src), "-d", dataset_name, "--format", "csv", "--delimiter", ";"]
    result = CliRunner().invoke(cli, [*args, "--no-header", "--encoding", "cp1252", *common])
    assert result.exit_code == 0, result.output
    job = client.call("GET", f"/jobs/{json.loads(result.output)['job_id']}")
    assert job["run_parameters"]["options"] == {
        "format": "csv",
        "delimiter": ";",
        "header": False,
        "encoding": "cp1252",
        "mode": "replace",
    }
    assert export_records(client, dataset_name) == [
        {"column_1": "1", "column_2": "Zoë €"},
        {"column_1": "2", "column_2": "naïve"},
    ]
    # and Uppy's metadata may carry the same names
    uppy = client.call(
        "POST",
        "/uploads/s3/multipart",
        {
            "filename": "x.txt",
            "metadata": {
                "dataset": dataset_name,
                "format": "tsv",
                "header": "false",
                "encoding": "latin-1",
                "delimiter": "tab",
            },
        },
    )
    found = client.call("GET", f"/jobs?key={uppy['key']}")["jobs"][0]
    assert found["run_parameters"]["options"] == {
        "format": "tsv",
        "delimiter": "\t",
        "header": False,
        "encoding": "iso8859-1",
        "mode": "replace",
    }
