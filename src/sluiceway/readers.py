"""Stage 2b's readers for records that are not CSV: a range of JSON Lines or of a JSON array,
streamed from S3 and written to COPY as rows.

A range is one GET of exactly its bytes (plan.read_pieces), not smart_open's seekable reader,
which GETs ``bytes=0-`` when opened and ``bytes=start-`` when it seeks: two open-ended GETs a
range, which the store serves on to the object's end.

CSV goes to PostgreSQL's own parser; a JSON record is parsed here (``json`` for a line,
ijson's yajl2_c backend for an array range; numbers as Decimal, so their digits are kept) and each row is sent with ``Copy.write_row``
(COPY's text format, which psycopg's C extension writes: faster than building CSV text, see
bench/formats.py).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from xml.etree.ElementTree import ParseError

import ijson
import psycopg

from . import jsonsplit, storage, xlsx
from .errors import MalformedFile, PayloadTooLarge
from .plan import _read, lookback_start, read_pieces
from .settings import Settings

FIND_BYTES = 64 * 1024

# The yajl2_c backend parses about 19x faster than ijson's pure-Python one here
# (bench figures in bench/README.md); the layer build ships it. Say so if it is missing.
IJSON_BACKEND: str = ijson.backend
if IJSON_BACKEND != "yajl2_c":
    logging.getLogger(__name__).warning(
        "ijson is using its %s backend, not yajl2_c: JSON arrays will parse slowly", IJSON_BACKEND
    )


@dataclass(frozen=True)
class Source:
    """What one load item reads: bytes [start, end) of s3://bucket/key, whose first record is
    on line ``first_line`` of the file (``filename`` in errors), into ``columns``."""

    bucket: str
    key: str
    start: int
    end: int
    first_line: int
    columns: list[str]
    filename: str
    settings: Settings

    def pieces(self) -> Iterator[bytes]:
        """The range's bytes, in one GET (plan.read_pieces)."""
        return read_pieces(self.bucket, self.key, self.start, self.end, self.settings)

    def index(self) -> dict[str, int]:
        """Each column's position in a row."""
        return {c: i for i, c in enumerate(self.columns)}


def _lines(blocks: Iterator[bytes]) -> Iterator[bytes]:
    """The lines of a stream, each with its newline (the last one perhaps without)."""
    rest = b""
    for block in blocks:
        lines = (rest + block).split(b"\n")
        rest = lines.pop()
        for line in lines:
            yield line + b"\n"
    if rest:
        yield rest


def copy_jsonl(copy: psycopg.Copy, src: Source) -> None:
    """Write the JSON Lines records of the range to COPY as rows."""
    index, filename = src.index(), src.filename
    records = jsonsplit.jsonl_records(
        _lines(src.pieces()), first_line=src.first_line, start=src.start
    )
    try:
        for line, offset, record in records:
            try:
                copy.write_row(jsonsplit.record_values(record, index))
            except MalformedFile as exc:
                raise MalformedFile(
                    f"{filename}: line {line:,} (byte {offset:,}): {exc.message}",
                    file=filename,
                    line=line,
                    byte_offset=offset,
                ) from exc
    except MalformedFile as exc:
        if exc.message.startswith(filename):
            raise
        raise MalformedFile(f"{filename}: {exc.message}", file=filename, **exc.details) from exc


class _Bracketed:
    """A file-like ``[`` + the bytes of a stream + ``]``, read by ijson."""

    def __init__(self, blocks: Iterator[bytes]) -> None:
        self._blocks = blocks
        self._pending = b"["
        self._done = False

    def read(self, size: int = -1) -> bytes:
        if size == 0:  # ijson probes with read(0) for bytes or str
            return b""
        if self._pending:
            out, self._pending = self._pending, b""
            return out
        if self._done:
            return b""
        block = next(self._blocks, None)
        if block is None:
            self._done = True
            return b"]"
        return block


def find_comma(
    bucket: str,
    key: str,
    pos: int,
    state: jsonsplit.ArrayState,
    data_end: int,
    settings: Settings,
) -> int | None:
    """The first top-level comma at or after ``pos`` (state: the lexer's at pos), or None if
    the array's data ends first. Reads a growing window until it is found."""
    begin = lookback_start(bucket, key, pos, settings)
    window = FIND_BYTES
    limit = settings.imports.max_record_bytes
    while True:
        stop = min(pos + window, data_end)
        buf = _read(bucket, key, begin, stop, settings)
        found = jsonsplit.top_level_comma(buf, 0, state)
        if found is not None and found >= 0:
            return begin + found
        if found is not None:  # the array closed early: extra data after a ']'
            raise MalformedFile(
                f"byte {begin - 1 - found:,}: the array ends here, before its last ']' at "
                f"byte {data_end:,}; the file is not one JSON array.",
                byte_offset=begin - 1 - found,
            )
        if stop >= data_end:
            return None
        if window > limit:
            raise PayloadTooLarge(
                f"the record that crosses byte {pos:,} is longer than {limit:,} bytes "
                "(imports.max_record_bytes), or a string before it is never closed.",
                byte_offset=pos,
            )
        window *= 4


def array_range(
    bucket: str, key: str, chunk: dict[str, Any], cp: dict[str, Any], settings: Settings
) -> tuple[int, int]:
    """The exact bytes [start, end) of the records a JSON array range owns (start == end: none)."""
    scan = chunk["scan"]
    data_end = cp["data_end"]
    return jsonsplit.owned_range(
        chunk["chunk_no"],
        chunk["raw_start"],
        chunk["raw_end"],
        jsonsplit.ArrayState(scan["in_string"], scan["depth"]),
        jsonsplit.ArrayState(scan["next_in_string"], scan["next_depth"]),
        data_start=cp["data_start"],
        data_end=data_end,
        find=lambda pos, state: find_comma(bucket, key, pos, state, data_end, settings),
    )


def _checked(pieces: Iterator[bytes], filename: str, start: int) -> Iterator[bytes]:
    """The pieces, each checked (with the end of the one before) for what yajl2_c would crash
    on or silently change (:func:`jsonsplit.yajl_trap`) before the parser sees it."""
    carry, at = b"", start  # at: the file offset of carry's first byte
    for piece in pieces:
        data = carry + piece
        # what carry holds was checked, but for the escapes at its very end
        trap = jsonsplit.yajl_trap(data, final=False, since=max(len(carry) - 12, 0))
        if trap is not None:
            raise _trapped(filename, at + trap[0], trap[1])
        yield piece
        carry = data[-jsonsplit.YAJL_CARRY :]
        at += len(data) - len(carry)
    trap = jsonsplit.yajl_trap(carry, final=True, since=max(len(carry) - 12, 0))
    if trap is not None:
        raise _trapped(filename, at + trap[0], trap[1])


def _trapped(filename: str, offset: int, what: str) -> MalformedFile:
    return MalformedFile(f"{filename}: byte {offset:,}: {what}.", file=filename, byte_offset=offset)


def copy_array(copy: psycopg.Copy, src: Source) -> None:
    """Write the JSON array elements of the range (elements and commas) to COPY."""
    if src.end <= src.start:
        return
    index, filename, start = src.index(), src.filename, src.start
    stream = _Bracketed(_checked(src.pieces(), filename, start))
    n = 0
    try:
        for n, record in enumerate(ijson.items(stream, "item"), 1):  # noqa: B007
            copy.write_row(jsonsplit.record_values(record, index))
    except MalformedFile as exc:
        if exc.message.startswith(filename):  # the bytes' check: it names its byte
            raise
        raise MalformedFile(
            f"{filename}: record {n:,} after byte {start:,}: {exc.message}",
            file=filename,
            byte_offset=start,
        ) from exc
    except UnicodeDecodeError as exc:
        where = f"{filename}: record {n + 1:,} after byte {start:,}"
        raise jsonsplit.not_utf8(exc, where, file=filename, byte_offset=start) from exc
    except ijson.JSONError as exc:
        raise MalformedFile(
            f"{filename}: the records after byte {start:,} are not valid JSON after record "
            f"{n:,} of them: {exc}",
            file=filename,
            byte_offset=start,
        ) from exc
    except RecursionError as exc:
        raise MalformedFile(
            f"{filename}: record {n + 1:,} after byte {start:,} is nested too deeply.",
            file=filename,
            byte_offset=start,
        ) from exc


def copy_sheet(copy: psycopg.Copy, src: Source, sheet_no: int) -> None:
    """Write one workbook sheet's rows, each followed by its ``sheet:row`` id, to COPY (a
    workbook is read whole: the range's bytes say nothing)."""
    index, filename = src.index(), src.filename
    with storage.open_object(src.bucket, src.key, src.settings) as f:
        book = xlsx.open_workbook(f, filename)
        try:
            names = xlsx.sheet_names(book)
            if sheet_no >= len(names):
                return  # a workbook without sheets still has its one (empty) item
            name = names[sheet_no]
            sheet = book[name]
            header = xlsx.sheet_header(sheet, name)
            if header is None:
                return
            for rid, values in xlsx.sheet_rows(sheet, name, header, index):
                copy.write_row([*values, rid])
        except ParseError as exc:
            raise MalformedFile(
                f"{filename}: {xlsx.broken_xml(exc).message}", file=filename
            ) from exc
        except MalformedFile as exc:
            raise MalformedFile(f"{filename}: {exc.message}", file=filename, **exc.details) from exc
        finally:
            book.close()
