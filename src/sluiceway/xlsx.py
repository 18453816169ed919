"""Excel workbooks (.xlsx): sheets, their header rows, and their rows as text, streamed.

A sheet's XML is parsed as it is read (openpyxl's parser, in its read-only mode), so memory
stays small however long the sheet. Its rows are its cells, not its ``<dimension>``: a writer
may leave that hint stale, and openpyxl's ``iter_rows`` drops the cells outside it.

A workbook is a zip that cannot be cut by byte range; the parallel unit is the sheet (one Map
item each), and a row's logical id is ``sheet:row`` (the sheet's own row number, as Excel
shows it).

A cell becomes the text stored for it:
- text as it is; booleans ``true``/``false``; an empty cell NULL;
- numbers: integers in full, other numbers in the shortest text that reads back as the same
  double (Excel keeps every number as a double: 0.1 -> ``0.1``, 1E20 -> ``1e+20``);
- dates and times in ISO 8601: ``2024-01-02T03:04:05``, a midnight date-time as its date
  ``2024-01-02``, a time ``03:04:05``; formulas as their cached value. A formula with none (a
  workbook written by a library, never opened in a spreadsheet program) is an error: it would
  read as an empty cell.
"""

from __future__ import annotations

import datetime
import zipfile
from collections.abc import Iterator
from typing import IO, Any
from xml.etree.ElementTree import ParseError

from openpyxl.reader.excel import ExcelReader
from openpyxl.utils.cell import get_column_letter
from openpyxl.utils.exceptions import InvalidFileException
from openpyxl.worksheet._reader import FORMULA_TAG, VALUE_TAG, WorkSheetParser

from .errors import MalformedFile


def open_workbook(f: IO[bytes], filename: str) -> Any:
    """The workbook in ``f`` (read-only, cached values); a zip that is not one, or one without
    a sheet it lists, is an error."""
    try:
        # load_workbook's own steps, for the reader's list of the sheets the workbook names
        reader = ExcelReader(f, read_only=True, data_only=True)
        reader.read()
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
    for sheet, rel in reader.parser.find_sheets():
        if rel.target not in reader.valid_files:  # openpyxl leaves such a sheet out
            reader.wb.close()
            raise MalformedFile(
                f"{filename}: sheet {sheet.name!r} is listed in the workbook but its part "
                f"{rel.target} is missing from the file: the workbook is damaged or was not "
                "written whole. Save it again from a spreadsheet program, or export the sheet "
                "as CSV.",
                file=filename,
            )
    return reader.wb


def sheet_names(book: Any) -> list[str]:
    """A workbook's worksheets' names (not its chart sheets'); two sheets of one name (only a
    hand-made workbook has them) are an error, as a sheet is found by its name."""
    names: list[str] = list(book.sheetnames)
    for name in names:
        if names.count(name) > 1:
            raise MalformedFile(f"the workbook has two sheets named {name!r}; rename one.")
    return [sheet.title for sheet in book.worksheets]  # a chart sheet has no rows


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


class _SheetParser(WorkSheetParser):  # type: ignore[misc]
    """openpyxl's parser of a sheet's XML, stopping at a formula that has no calculated value
    (with ``data_only`` it reads as an empty cell: the value would be lost without a word)."""

    sheet_name = ""

    def parse_cell(self, element: Any) -> dict[str, Any]:
        cell: dict[str, Any] = super().parse_cell(element)
        formula = element.find(FORMULA_TAG)
        if formula is None or element.get("t") == "inlineStr":
            return cell
        value = element.find(VALUE_TAG)
        # an empty <v> is an empty text only in a cell typed as text (Excel's ="" is one);
        # openpyxl writes every formula with an empty <v>, for a spreadsheet program to fill
        if value is None or not (value.text or element.get("t") == "str"):
            where = element.get("r") or f"{get_column_letter(cell['column'])}{cell['row']}"
            text = f" ({formula.text})" if formula.text else ""
            raise MalformedFile(
                f"sheet {self.sheet_name!r}, cell {where} holds a formula{text} with no "
                "calculated value: the workbook was written by a program that does not "
                "calculate formulas, and not opened since in a spreadsheet program. Open it in "
                "one (Excel, LibreOffice) and save it, so that its formulas are calculated, or "
                "export the sheet as CSV.",
                line=self.row_counter,
            )
        return cell


def _rows(sheet: Any, name: str) -> Iterator[tuple[int, dict[int, Any]]]:
    """(row number, {column number: value}) of each row the sheet's XML holds, in order; a
    column given twice keeps its last value, as openpyxl's own reading does."""
    book = sheet.parent
    previous = 0
    with sheet._get_source() as src:
        parser = _SheetParser(
            src,
            sheet._shared_strings,
            data_only=True,
            epoch=book.epoch,
            date_formats=book._date_formats,
            timedelta_formats=book._timedelta_formats,
        )
        parser.sheet_name = name
        rows = parser.parse()
        while True:
            try:
                row_no, cells = next(rows)
            except StopIteration:
                return
            except (ValueError, IndexError) as exc:  # a number, boolean or string index
                raise MalformedFile(
                    f"sheet {name!r}, row {parser.row_counter:,}: a cell that cannot be read "
                    f"({exc}); the workbook is damaged or hand-made. Save it again from a "
                    "spreadsheet program, or export the sheet as CSV.",
                    line=parser.row_counter,
                ) from exc
            if row_no <= previous:  # two rows of one logical id, or one out of place
                raise MalformedFile(
                    f"sheet {name!r}: row {row_no:,} comes after row {previous:,}; the sheet's "
                    "rows are out of order. Save it again from a spreadsheet program.",
                    line=row_no,
                )
            previous = row_no
            yield row_no, {cell["column"]: cell["value"] for cell in cells}


def sheet_header(sheet: Any, name: str) -> list[str] | None:
    """A sheet's header row (its first row) as column names; None for an empty sheet."""
    first = next(_rows(sheet, name), None)
    if first is None or first[0] != 1:
        return None
    cells = {column: value for column, value in first[1].items() if value is not None}
    if not cells:
        return None
    columns: list[str] = []
    # a stop at the first gap: a hostile cell reference (XFD1, or beyond) costs nothing
    for index in range(1, max(cells) + 1):
        text = (cell_text(cells.get(index)) or "").strip()
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
    for row_no, cells in _rows(sheet, name):
        if row_no == 1:
            continue
        values: list[str | None] = [None] * width
        empty = True
        for column, cell in sorted(cells.items()):
            if cell is None:
                continue
            if column > len(places):
                raise MalformedFile(
                    f"sheet {name!r}, row {row_no:,}: a value in column {column}, beyond the "
                    f"header's {len(places)} columns.",
                    line=row_no,
                )
            text = cell_text(cell)
            if text is not None and "\x00" in text:
                raise MalformedFile(
                    f"sheet {name!r}, row {row_no:,}, column {header[column - 1]!r} holds a NUL "
                    "character.",
                    line=row_no,
                )
            values[places[column - 1]] = text
            empty = False
        if not empty:
            yield f"{name}:{row_no}", values
