"""Excel workbooks (.xlsx): sheets, their header rows, and their rows as text, streamed.

openpyxl's read-only mode parses a sheet's XML as it is read, so memory stays small however
long the sheet. A workbook is a zip that cannot be cut by byte range; the parallel unit is the
sheet (one Map item each), and a row's logical id is ``sheet:row`` (the sheet's own row
number, as Excel shows it).

A cell becomes the text stored for it:
- text as it is; booleans ``true``/``false``; an empty cell NULL;
- numbers: integers in full, other numbers in the shortest text that reads back as the same
  double (Excel keeps every number as a double: 0.1 -> ``0.1``, 1E20 -> ``1e+20``);
- dates and times in ISO 8601: ``2024-01-02T03:04:05``, a midnight date-time as its date
  ``2024-01-02``, a time ``03:04:05``; formulas as their cached value.
"""

from __future__ import annotations

import datetime
import zipfile
from collections.abc import Iterator
from typing import IO, Any
from xml.etree.ElementTree import ParseError

from openpyxl import load_workbook
from openpyxl.utils.exceptions import InvalidFileException

from .errors import MalformedFile


def open_workbook(f: IO[bytes], filename: str) -> Any:
    """The workbook in ``f`` (read-only, cached values); a zip that is not one is an error."""
    try:
        return load_workbook(f, read_only=True, data_only=True)
    except (
        KeyError,
        InvalidFileException,
        zipfile.BadZipFile,
        ValueError,
        OSError,
        ParseError,
    ) as exc:
        raise MalformedFile(
            f"{filename} is not an Excel workbook (.xlsx): {exc}; a zip of other files, a "
            "truncated workbook or an old .xls cannot be read. Save it as .xlsx or CSV.",
            file=filename,
        ) from exc


def sheet_names(book: Any) -> list[str]:
    """A workbook's sheet names; two sheets of one name (only a hand-made workbook has them)
    are an error, as a sheet is found by its name."""
    names: list[str] = list(book.sheetnames)
    for name in names:
        if names.count(name) > 1:
            raise MalformedFile(f"the workbook has two sheets named {name!r}; rename one.")
    return names


def broken_xml(exc: ParseError) -> MalformedFile:
    """A sheet whose XML does not parse (a truncated or hand-made workbook)."""
    return MalformedFile(f"a part of the workbook is not well-formed XML ({exc}); save it again.")


def cell_text(value: Any) -> str | None:
    """A cell's value as stored text (see the module's docstring)."""
    if value is None:
        return None
    if isinstance(value, str):
        return value
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, datetime.datetime):
        if value.time() == datetime.time(0) and value.tzinfo is None:
            return value.date().isoformat()
        return value.isoformat()
    if isinstance(value, datetime.date | datetime.time):
        return value.isoformat()
    return str(value)


def sheet_header(sheet: Any, name: str) -> list[str] | None:
    """A sheet's header row (its first row) as column names; None for an empty sheet."""
    first = next(sheet.iter_rows(min_row=1, max_row=1, values_only=True), None)
    if first is None:
        return None
    cells = list(first)
    while cells and cells[-1] is None:
        cells.pop()
    if not cells:
        return None
    columns: list[str] = []
    for index, value in enumerate(cells, 1):
        text = (cell_text(value) or "").strip()
        if not text:
            raise MalformedFile(
                f"sheet {name!r}, row 1: column {index} of the header has no name.", line=1
            )
        if text in columns:
            raise MalformedFile(
                f"sheet {name!r}, row 1: the header names column {text!r} twice; column names "
                "must be unique.",
                line=1,
            )
        columns.append(text)
    return columns


def sheet_rows(
    sheet: Any, name: str, header: list[str], columns: dict[str, int]
) -> Iterator[tuple[str, list[str | None]]]:
    """(``sheet:row``, values over ``columns``) of each non-empty row after the header."""
    width = len(columns)
    places = [columns[c] for c in header]
    for row_no, cells in enumerate(sheet.iter_rows(min_row=2, values_only=True), 2):
        values: list[str | None] = [None] * width
        empty = True
        for i, cell in enumerate(cells):
            if cell is None:
                continue
            if i >= len(places):
                raise MalformedFile(
                    f"sheet {name!r}, row {row_no:,}: a value in column {i + 1}, beyond the "
                    f"header's {len(places)} columns.",
                    line=row_no,
                )
            text = cell_text(cell)
            if text is not None and "\x00" in text:
                raise MalformedFile(
                    f"sheet {name!r}, row {row_no:,}, column {header[i]!r} holds a NUL character.",
                    line=row_no,
                )
            values[places[i]] = text
            empty = False
        if not empty:
            yield f"{name}:{row_no}", values
