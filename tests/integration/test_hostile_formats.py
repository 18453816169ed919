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
from tests.conftest import import_bytes, main_commit

from sluiceway.client import Client

Conn = psycopg.Connection[dict[str, Any]]


def _workbook() -> bytes:
    book = openpyxl.Workbook()
    book.remove(book.active)
    for name, rows in {"A": [["id"], [1], [2]], "B": [["id"], [3], [4]]}.items():
        sheet = book.create_sheet(name)
        for row in rows:
            sheet.append(row)
    out = io.BytesIO()
    book.save(out)
    return out.getvalue()


def _rewritten(data: bytes, part: str, change: Callable[[bytes], bytes]) -> bytes:
    """The workbook with one of its parts changed, as a hand-made or damaged one would be."""
    src, out = zipfile.ZipFile(io.BytesIO(data)), io.BytesIO()
    with zipfile.ZipFile(out, "w") as z:
        for info in src.infolist():
            body = src.read(info.filename)
            z.writestr(info.filename, change(body) if info.filename == part else body)
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
    ],
)
def test_a_damaged_or_hand_made_workbook_fails_as_a_malformed_file(
    client: Client,
    db: Conn,
    tmp_path: Path,
    dataset_name: str,
    case: str,
    part: str,
    change: Callable[[bytes], bytes],
    words: str,
) -> None:
    # Given a dataset with a commit, and a workbook with a damaged or hand-made part
    first = import_bytes(client, tmp_path / "first", b"id\n1\n", dataset_name)
    assert first["status"] == "completed", first["error_message"]
    data = _rewritten(_workbook(), part, change)

    # When the workbook is imported
    job = import_bytes(client, tmp_path, data, dataset_name, filename="book.xlsx")

    # Then the job fails naming the file and what is wrong (not an internal error, nor
    # sheet A's rows imported twice in place of sheet B's), and main keeps its commit
    assert job["status"] == "failed", (case, job["output_summary"])
    assert job["error_code"] == "malformed_file", job["error_message"]
    assert "book.xlsx" in job["error_message"]
    assert words in job["error_message"]
    assert main_commit(db, dataset_name) == first["output_summary"]["commit_id"]
