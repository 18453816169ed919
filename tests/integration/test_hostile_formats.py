"""Hostile or unusual non-CSV files: imported correctly, or failed with a clear error."""

from __future__ import annotations

import io
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import openpyxl
import psycopg
import pytest
from openpyxl.chart import BarChart, Reference
from tests.conftest import import_bytes, main_commit
from tests.integration.test_formats import _workbook, export_records

from sluiceway.client import Client

Conn = psycopg.Connection[dict[str, Any]]


def _two_sheets() -> bytes:
    return _workbook({"A": [["id"], [1], [2]], "B": [["id"], [3], [4]]})


def _rewritten(data: bytes, part: str, change: Callable[[bytes], bytes | None]) -> bytes:
    """The workbook with one of its parts changed (or left out, for None), as a hand-made or
    damaged one would be."""
    src, out = zipfile.ZipFile(io.BytesIO(data)), io.BytesIO()
    with zipfile.ZipFile(out, "w") as z:
        for info in src.infolist():
            body: bytes | None = src.read(info.filename)
            if info.filename == part:
                body = change(body or b"")
            if body is not None:
                z.writestr(info.filename, body)
    return out.getvalue()


@pytest.mark.parametrize("chunk_bytes", [None, 3])
def test_a_json_array_with_a_utf8_bom_imports_like_one_without(
    client: Client, tmp_path: Path, dataset_name: str, chunk_bytes: int | None
) -> None:
    # Given a JSON array file saved with a UTF-8 BOM (as Windows editors do)
    data = b'\xef\xbb\xbf[{"id": 1}, {"id": 2}]'

    # When it is imported
    job = import_bytes(
        client, tmp_path, data, dataset_name, filename="bom.json", chunk_bytes=chunk_bytes
    )

    # Then its records are imported, as a CSV or JSON Lines file's with a BOM are
    assert job["status"] == "completed", job["error_message"]
    assert job["output_summary"]["rows"] == 2


@pytest.mark.parametrize(
    ("case", "part", "change", "words"),
    [
        (
            "a truncated sheet",
            "xl/worksheets/sheet2.xml",
            lambda b: b[: len(b) // 2],
            "not well-formed XML",
        ),
        (
            "a truncated workbook part",
            "xl/workbook.xml",
            lambda b: b[:50],
            "is not an Excel workbook",
        ),
        (
            "a NUL in a sheet's name",
            "xl/workbook.xml",
            lambda b: b.replace(b'name="B"', b'name="B&#0;"'),
            "is not an Excel workbook",
        ),
        (
            "two sheets of one name",
            "xl/workbook.xml",
            lambda b: b.replace(b'name="B"', b'name="A"'),
            "two sheets named 'A'",
        ),
        (
            # as openpyxl writes a formula: its cached value empty, for Excel to calculate
            "a formula never calculated",
            "xl/worksheets/sheet2.xml",
            lambda b: b.replace(b'<c r="A3" t="n"><v>4</v></c>', b'<c r="A3"><f>A2+1</f><v /></c>'),
            "sheet 'B', cell A3 holds a formula (A2+1) with no calculated value",
        ),
        (
            "a formula with no value element",
            "xl/worksheets/sheet2.xml",
            lambda b: b.replace(b'<c r="A3" t="n"><v>4</v></c>', b'<c r="A3"><f>A2+1</f></c>'),
            "sheet 'B', cell A3 holds a formula (A2+1) with no calculated value",
        ),
        (
            "a number cell that holds no number",
            "xl/worksheets/sheet2.xml",
            lambda b: b.replace(b"<v>4</v>", b"<v>four</v>"),
            "sheet 'B', row 3: a cell that cannot be read",
        ),
        (
            "a sheet whose part is missing",
            "xl/worksheets/sheet2.xml",
            lambda b: None,
            "sheet 'B' is listed in the workbook but its part",
        ),
    ],
)
def test_a_damaged_or_hand_made_workbook_fails_as_a_malformed_file(
    client: Client,
    db: Conn,
    tmp_path: Path,
    dataset_name: str,
    case: str,
    part: str,
    change: Callable[[bytes], bytes | None],
    words: str,
) -> None:
    # Given a dataset with a commit, and a workbook with a damaged or hand-made part
    first = import_bytes(client, tmp_path / "first", b"id\n1\n", dataset_name)
    assert first["status"] == "completed", first["error_message"]
    data = _rewritten(_two_sheets(), part, change)

    # When the workbook is imported
    job = import_bytes(client, tmp_path, data, dataset_name, filename="book.xlsx")

    # Then the job fails naming the file and what is wrong (not an internal error, nor
    # sheet A's rows imported twice in place of sheet B's), and main keeps its commit
    assert job["status"] == "failed", (case, job["output_summary"])
    assert job["error_code"] == "malformed_file", job["error_message"]
    assert "book.xlsx" in job["error_message"]
    assert words in job["error_message"]
    assert main_commit(db, dataset_name) == first["output_summary"]["commit_id"]


def _cells(changes: dict[bytes, bytes]) -> Callable[[bytes], bytes]:
    def change(body: bytes) -> bytes:
        for old, new in changes.items():
            assert old in body, old
            body = body.replace(old, new)
        return body

    return change


def test_a_workbook_formula_imports_its_calculated_value(
    client: Client, tmp_path: Path, dataset_name: str
) -> None:
    # Given a workbook saved by a spreadsheet program: formulas with their calculated values,
    # one of them an empty text
    data = _rewritten(
        _workbook({"S": [["id", "double", "label"], [1, 0, "x"], [2, 0, "y"]]}),
        "xl/worksheets/sheet1.xml",
        _cells(
            {
                b'<c r="B2" t="n"><v>0</v></c>': b'<c r="B2"><f>A2*2</f><v>2</v></c>',
                b'<c r="C2" t="inlineStr"><is><t>x</t></is></c>': (
                    b'<c r="C2" t="str"><f>"x"&amp;A2</f><v>x1</v></c>'
                ),
                b'<c r="C3" t="inlineStr"><is><t>y</t></is></c>': (
                    b'<c r="C3" t="str"><f>""</f><v></v></c>'
                ),
            }
        ),
    )

    # When it is imported
    job = import_bytes(client, tmp_path, data, dataset_name, filename="book.xlsx")

    # Then each formula's cell holds its value
    assert job["status"] == "completed", job["error_message"]
    assert export_records(client, dataset_name) == [
        {"id": "1", "double": "2", "label": "x1"},
        {"id": "2", "double": "0", "label": None},
    ]


def test_a_workbook_whose_dimension_is_stale_imports_every_row_and_column(
    client: Client, tmp_path: Path, dataset_name: str
) -> None:
    # Given a sheet whose <dimension> (a hint a writer may leave stale) says it is one cell
    data = _rewritten(
        _workbook({"S": [["id", "name"], [1, "a"], [2, "b"]]}),
        "xl/worksheets/sheet1.xml",
        _cells({b'<dimension ref="A1:B3" />': b'<dimension ref="A1" />'}),
    )

    # When it is imported
    job = import_bytes(client, tmp_path, data, dataset_name, filename="book.xlsx")

    # Then its cells are read, not the hint: every row and column
    assert job["status"] == "completed", job["error_message"]
    assert export_records(client, dataset_name) == [
        {"id": "1", "name": "a"},
        {"id": "2", "name": "b"},
    ]


def test_a_workbook_with_a_chart_sheet_imports_its_worksheets(
    client: Client, tmp_path: Path, dataset_name: str
) -> None:
    # Given a workbook of a worksheet and a chart sheet (a chart with a tab of its own)
    book = openpyxl.Workbook()
    sheet = book.active
    sheet.title = "S"
    for row in [["id"], [1], [2]]:
        sheet.append(row)
    chart = BarChart()
    chart.add_data(Reference(sheet, min_col=1, min_row=1, max_row=3))
    book.create_chartsheet("Chart").add_chart(chart)
    out = io.BytesIO()
    book.save(out)

    # When it is imported
    job = import_bytes(client, tmp_path, out.getvalue(), dataset_name, filename="book.xlsx")

    # Then the worksheet's rows are imported, and the chart sheet, which has none, is passed by
    assert job["status"] == "completed", job["error_message"]
    assert export_records(client, dataset_name) == [{"id": "1"}, {"id": "2"}]


HUGE = b"1" * 5000
YAJL_TRAPS = {
    # ijson's yajl2_c crashed the worker on this number (Python's 4,300-digit limit)
    "a 5,000-digit number in an array": ("n.json", b'[{"id": 1}, {"id": ' + HUGE + b"}]", "4,300"),
    # ... never ended on this one
    "a 5,000-digit decimal in an array": ("d.json", b'[{"id": ' + HUGE + b".5}]", "4,300"),
    # ... and stored this value as "?x"
    "half a surrogate pair in an array": ("s.json", b'[{"id": "\\ud800x"}]', "surrogate"),
    # ... and let this through, as an escaped backslash, "ud83d" and a pair: an internal error
    "an escaped backslash, 'ud83d', then a lone low half in an array": (
        "b.json",
        b'[{"id": "\\\\ud83d\\udc00"}]',
        "byte 16: a value holds a \\u escape of half a surrogate pair (\\udc00)",
    ),
    # json.loads reads it; writing it to COPY was an internal error
    "half a surrogate pair in JSON Lines": ("s.jsonl", b'{"id": 1}\n{"id": "\\udc00"}\n', "line 2"),
    # ... and in a key it was an internal error when the columns were stored
    "half a surrogate pair in a JSON Lines key": (
        "k.jsonl",
        b'{"id": 1}\n{"id\\ud800": 1}\n',
        "line 2 (byte 14): a key holds a \\u escape of half a surrogate pair (\\ud800)",
    ),
    # json.loads reads a surrogate's UTF-8 bytes as it, yajl2_c lets them through to Python's
    # decoder: both were an internal error
    "a surrogate's UTF-8 bytes in a JSON Lines key": (
        "e.jsonl",
        b'{"id": 1}\n{"id\xed\xa0\x80": 1}\n',
        "line 2 (byte 14) is not valid UTF-8 (0xed)",
    ),
    "a surrogate's UTF-8 bytes in an array's key": (
        "e.json",
        b'[{"id": 1}, {"id\xed\xb0\x80x": 1}]',
        "record 2: a key or value is not valid UTF-8 (0xed)",
    ),
    "an overlong NUL in an array's value": (
        "o.json",
        b'[{"id": "\xc0\x80"}]',
        "record 1: a key or value is not valid UTF-8 (0xc0)",
    ),
}


@pytest.mark.parametrize("case", list(YAJL_TRAPS))
def test_json_the_parser_would_crash_on_or_change_fails_as_malformed_and_the_stack_goes_on(
    case: str, client: Client, db: Conn, tmp_path: Path, dataset_name: str
) -> None:
    filename, data, says = YAJL_TRAPS[case]
    # Given a dataset with a commit
    good = import_bytes(client, tmp_path, b'[{"id": "a"}]', dataset_name, filename="good.json")
    assert good["status"] == "completed", good["error_message"]
    before = main_commit(db, dataset_name)

    # When the file is imported, whole and in ranges of 7 bytes
    for chunk_bytes in (None, 7):
        job = import_bytes(
            client, tmp_path, data, dataset_name, filename=filename, chunk_bytes=chunk_bytes
        )

        # Then it fails as a malformed file naming the problem, and main keeps its commit
        assert job["status"] == "failed"
        assert job["error_code"] == "malformed_file", job
        assert filename in job["error_message"]
        assert says in job["error_message"]
        assert main_commit(db, dataset_name) == before

    # ... and the workers live on: the next import completes
    again = import_bytes(client, tmp_path, b'[{"id": "b"}]', dataset_name, filename="next.json")
    assert again["status"] == "completed", again["error_message"]


def test_a_surrogate_pair_and_an_escaped_backslash_in_an_array_are_read_as_written(
    client: Client, tmp_path: Path, dataset_name: str
) -> None:
    # Given escapes the check must let through: a whole pair, and a backslash then "ud800"
    data = b'[{"id": "\\ud83d\\ude00"}, {"id": "\\\\ud800"}]'
    job = import_bytes(client, tmp_path, data, dataset_name, filename="ok.json")
    assert job["status"] == "completed", job["error_message"]
    rows = client.call("GET", f"/datasets/{dataset_name}/rows")["rows"]
    assert [r["data"]["id"] for r in rows] == ["\U0001f600", "\\ud800"]


@pytest.mark.parametrize("data", [b"", b"\n\n  \n", b"\xef\xbb\xbf\r\n\t\n"])
def test_a_json_lines_file_of_blank_lines_imports_no_rows_as_an_empty_one_does(
    client: Client, tmp_path: Path, dataset_name: str, data: bytes
) -> None:
    # (blank lines only failed as an internal error: a table of no columns)
    job = import_bytes(client, tmp_path, data, dataset_name, filename="blank.jsonl")
    assert job["status"] == "completed", job["error_message"]
    assert job["output_summary"]["rows"] == 0


@pytest.mark.parametrize(
    ("data", "says"),
    [
        (b'{"id": 1}\n\n\n[1]\n', "line 4 (byte 12): the record is a JSON array, not an object"),
        (b'{"id": 1}\n\n{"id\\u0000": 1}\n', "line 3 (byte 11): the record has an empty key"),
        (b'\n{"": 1}\n', "line 2 (byte 1): the record has an empty key"),
    ],
)
def test_a_json_lines_error_names_the_line_of_the_file_counting_blank_lines(
    client: Client, db: Conn, tmp_path: Path, dataset_name: str, data: bytes, says: str
) -> None:
    # (the columns' check counted records, not lines: "record 2" for line 4)
    first = import_bytes(
        client, tmp_path / "first", b'{"id": 0}\n', dataset_name, filename="a.jsonl"
    )
    assert first["status"] == "completed", first["error_message"]
    for chunk_bytes in (None, 7):
        job = import_bytes(
            client, tmp_path, data, dataset_name, filename="b.jsonl", chunk_bytes=chunk_bytes
        )
        assert job["status"] == "failed"
        assert job["error_code"] == "malformed_file", job["error_message"]
        assert f"b.jsonl: {says}" in job["error_message"]
        assert main_commit(db, dataset_name) == first["output_summary"]["commit_id"]


# past the first imports.json_sample_bytes (1 MiB), where only the load reads them
LATE = {
    "a surrogate's UTF-8 bytes in an array": (
        "late.json",
        b"[" + b'{"id": 1}, ' * 110_000 + b'{"id": "\xed\xa0\x80"}]',
        "record 110,001 after byte 1: a key or value is not valid UTF-8 (0xed)",
    ),
    "half a surrogate pair in JSON Lines": (
        "late.jsonl",
        b'{"id": 1}\n' * 110_000 + b'{"id": "\\udfff"}\n',
        "line 110,001 (byte 1,100,008): a value holds a \\u escape of half a surrogate pair",
    ),
}


@pytest.mark.parametrize("case", list(LATE))
def test_text_that_is_no_unicode_past_the_sample_fails_the_load_as_malformed(
    case: str, client: Client, db: Conn, tmp_path: Path, dataset_name: str
) -> None:
    filename, data, says = LATE[case]
    first = import_bytes(
        client, tmp_path / "first", b'{"id": 0}\n', dataset_name, filename="a.jsonl"
    )
    assert first["status"] == "completed", first["error_message"]
    job = import_bytes(client, tmp_path, data, dataset_name, filename=filename)
    assert job["status"] == "failed"
    assert job["error_code"] == "malformed_file", job["error_message"]
    assert f"{filename}: {says}" in job["error_message"]
    assert main_commit(db, dataset_name) == first["output_summary"]["commit_id"]


@pytest.mark.parametrize("chunk_bytes", [None, 7])
def test_json_lines_with_text_that_is_no_unicode_are_rejected_when_tolerated(
    client: Client, tmp_path: Path, dataset_name: str, chunk_bytes: int | None
) -> None:
    # (each was an internal error: "Ranges [0] ... were never loaded", or the columns' store)
    data = (
        b'{"id": 1}\n{"id": "\\ud800"}\n{"id": 3, "\\udc00": 1}\n{"id": "\xed\xa0\x80"}\n'
        b'{"id": 5}\n'
    )
    job = import_bytes(
        client,
        tmp_path,
        data,
        dataset_name,
        filename="t.jsonl",
        chunk_bytes=chunk_bytes,
        rules={"max_errors": 3},
    )
    assert job["status"] == "completed", job["error_message"]
    assert job["output_summary"]["rejected_rows"] == 3
    rows = client.call("GET", f"/datasets/{dataset_name}/rows")["rows"]
    assert sorted(r["data"]["id"] for r in rows) == ["1", "5"]
