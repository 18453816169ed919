"""Exact record boundaries for CSV cut into byte ranges.

A range cannot know on its own whether its first byte lies inside a quoted field, and a
quoted field may hold newlines. So each range is scanned for its quote count and for its
first newline at either quote parity; a tiny serial fold over those figures then tells
every range where its first record really starts. The rule is the one PostgreSQL's CSV
reader applies: a newline ends a record exactly when the number of quote characters before
it is even. A range owns every record whose first byte lies inside it.

Everything here is pure and works on bytes, so the planner, the Map tasks and the tests
share it.
"""

from __future__ import annotations

import csv
import io
import itertools
import re
from collections.abc import Iterable
from dataclasses import dataclass

from .errors import MalformedFile, PayloadTooLarge

QUOTE = b'"'
NEWLINE = b"\n"
UTF8_BOM = b"\xef\xbb\xbf"

# From a position outside quotes: the first newline that is also outside quotes.
# Possessive quantifiers keep it linear: the grammar is deterministic.
_FIRST_NEWLINE_EVEN = re.compile(rb'(?:[^"\n]*+"[^"]*+")*+[^"\n]*+\n')
# From a position outside quotes: the first newline after an odd number of quotes.
_FIRST_NEWLINE_ODD = re.compile(rb'(?:[^"]*+"[^"\n]*+")*+[^"]*+"[^"\n]*+\n')


@dataclass(frozen=True)
class Header:
    """The header record of a CSV file."""

    columns: list[str]
    data_start: int  # first byte after the header record (and any BOM)
    bom: bool


@dataclass(frozen=True)
class RangeScan:
    """What one byte range [raw_start, raw_end) says about record boundaries.

    ``first_newline_even``/``_odd``: absolute offset of the first newline at or after
    raw_start - 1 reached after an even / odd number of quotes counted from raw_start, or None;
    ``lines_to_even``/``_odd``: newlines in [raw_start, that newline].
    """

    quote_count: int
    newline_count: int
    first_newline_even: int | None
    first_newline_odd: int | None
    lines_to_even: int = 0
    lines_to_odd: int = 0


@dataclass(frozen=True)
class LoadRange:
    """A byte range [start, end) holding whole records, and the file line it starts on."""

    chunk_no: int
    start: int
    end: int
    first_line: int


def split_ranges(data_end: int, chunk_bytes: int, parallel: int = 1) -> list[tuple[int, int]]:
    """Cut [0, data_end) into equal ranges of at most chunk_bytes.

    The count is rounded up to a multiple of ``parallel`` (the Map's concurrency) so the
    last round of the Map is not one range running alone.
    """
    if chunk_bytes < 1 or parallel < 1:
        raise ValueError("chunk_bytes and parallel must be positive")
    if data_end <= 0:
        return [(0, 0)]
    count = -(-data_end // chunk_bytes)
    if count > 1:
        count = min(-(-count // parallel) * parallel, data_end)
    bounds = [data_end * i // count for i in range(count + 1)]
    return list(itertools.pairwise(bounds))


def first_record_end(buf: bytes, pos: int = 0) -> int | None:
    """Offset of the newline ending the record that starts at pos (outside quotes), or None."""
    match = _FIRST_NEWLINE_EVEN.match(buf, pos)
    return match.end() - 1 if match else None


def scan_range(buf: bytes, raw_start: int) -> RangeScan:
    """Scan one range; ``buf`` holds bytes [max(raw_start - 1, 0), raw_end) of the file."""
    return scan_pieces([buf], raw_start)


def scan_pieces(pieces: Iterable[bytes], raw_start: int) -> RangeScan:
    """:func:`scan_range` over the range's bytes as they arrive, holding one piece at a time.

    Both searches carry the quote parity from piece to piece: the first newline at an even
    (odd) count from raw_start is, inside a piece that starts at parity p, the piece's first
    newline at an even (odd) count of its own when p is even, at an odd (even) one when p is
    odd. A piece is whole when it is searched, so a search that fails in it has no such
    newline in it, and the next piece goes on from the parity after it.
    """
    skip = 1 if raw_start > 0 else 0  # the byte before the range, for the even search only
    offset = max(raw_start - 1, 0)  # the file offset of the piece at hand
    quotes = newlines = 0
    even: int | None = None
    odd: int | None = None
    lines_even = lines_odd = 0
    for piece in pieces:
        start = min(skip, len(piece))
        if skip and start and piece[:1] == NEWLINE:  # the range starts a record
            even = raw_start - 1
        skip -= start
        same, other = (
            (_FIRST_NEWLINE_EVEN, _FIRST_NEWLINE_ODD)
            if quotes % 2 == 0
            else (_FIRST_NEWLINE_ODD, _FIRST_NEWLINE_EVEN)
        )
        if even is None and (m := same.match(piece, start)):
            even = offset + m.end() - 1
            lines_even = newlines + piece.count(NEWLINE, start, m.end())
        if odd is None and (m := other.match(piece, start)):
            odd = offset + m.end() - 1
            lines_odd = newlines + piece.count(NEWLINE, start, m.end())
        quotes += piece.count(QUOTE, start)
        newlines += piece.count(NEWLINE, start)
        offset += len(piece)
    return RangeScan(quotes, newlines, even, odd, lines_even, lines_odd)


def resolve_ranges(
    raw: list[tuple[int, int]],
    scans: list[RangeScan],
    *,
    data_start: int,
    data_end: int,
    header_lines: int,
) -> list[LoadRange]:
    """The serial fold: turn every range's scan into the byte range of whole records it owns.

    ``data_start`` is where the first record starts (after the header and its
    ``header_lines`` newlines), ``data_end`` where the last one ends. Ranges that own no
    record start are left out; a file with no records gives an empty list.
    """
    starts: list[tuple[int, int, int]] = []  # (chunk_no, start, first_line)
    parity = 0
    lines_before = 0  # newlines in [0, raw_start)
    for chunk_no, ((raw_start, raw_end), scan) in enumerate(zip(raw, scans, strict=True)):
        start: int | None = None
        first_line = 0
        if chunk_no == 0:
            start, first_line = data_start, header_lines + 1
        else:
            if parity == 0:
                newline, lines = scan.first_newline_even, scan.lines_to_even
            else:
                newline, lines = scan.first_newline_odd, scan.lines_to_odd
            if newline is not None:
                start, first_line = newline + 1, lines_before + lines + 1
        # A range inside the header finds the header's own end, data_start, as its first
        # boundary, so exactly one range (the one holding data_start) starts the data.
        if start is not None and raw_start <= start < min(raw_end, data_end):
            starts.append((chunk_no, start, first_line))
        parity = (parity + scan.quote_count) % 2
        lines_before += scan.newline_count

    ranges: list[LoadRange] = []
    for i, (chunk_no, start, first_line) in enumerate(starts):
        end = starts[i + 1][1] if i + 1 < len(starts) else data_end
        ranges.append(LoadRange(chunk_no, start, end, first_line))
    return ranges


def parse_header(
    buf: bytes,
    *,
    at_eof: bool,
    max_record_bytes: int,
    delimiter: str = ",",
    encoding: str = "utf-8",
    header: bool = True,
) -> Header:
    """Read the header record from the first bytes of a file (``at_eof``: buf is the whole file).

    Without a ``header`` row the columns are named ``column_1``, ``column_2``, ... after the
    first record's fields, and the data starts at the first byte (after any BOM).
    """
    bom = buf.startswith(UTF8_BOM)
    pos = len(UTF8_BOM) if bom else 0
    end = first_record_end(buf, pos)
    if end is None:
        if not at_eof:
            raise PayloadTooLarge(
                f"The header record is longer than {max_record_bytes:,} bytes, or has an "
                "unclosed quote: no end of line was found.",
                byte_offset=pos,
            )
        record, data_start = buf[pos:], len(buf)
    else:
        record, data_start = buf[pos : end + 1], end + 1
    text = _decode(record, byte_offset=pos, line=1, encoding=encoding)
    if "\x00" in text:
        raise MalformedFile("line 1 (the header) contains a NUL byte.", byte_offset=pos, line=1)
    reader = csv.reader(io.StringIO(text, newline=""), strict=True, delimiter=delimiter)
    rows = list(reader) if text.strip() else []
    if len(rows) > 1:
        raise MalformedFile(
            "lines end with a bare carriage return (CR), which is not supported; save the file "
            "with LF or CR LF line endings.",
            byte_offset=pos,
            line=1,
        )
    if not rows:
        return Header([], data_start, bom)
    if not header:
        return Header([f"column_{i}" for i in range(1, len(rows[0]) + 1)], pos, bom)
    columns = [c.strip() for c in rows[0]]
    seen: set[str] = set()
    for index, name in enumerate(columns):
        if not name:
            raise MalformedFile(
                f"line 1: column {index + 1} of the header has no name.", byte_offset=pos, line=1
            )
        if name in seen:
            raise MalformedFile(
                f"line 1: the header names column {name!r} twice; column names must be unique.",
                byte_offset=pos,
                line=1,
            )
        seen.add(name)
    return Header(columns, data_start, bom)


def trim_trailing_blank_lines(tail: bytes, size: int) -> int:
    """Where the data really ends, given the file's last bytes: blank lines at the end are dropped."""
    stripped = tail.rstrip(b"\r\n")
    if len(stripped) == len(tail):
        return size
    # keep exactly one line terminator after the last record
    cut = len(tail) - len(stripped)
    terminator = 2 if tail[len(stripped) : len(stripped) + 2] == b"\r\n" else 1
    return size - cut + terminator


def _decode(data: bytes, *, byte_offset: int, line: int, encoding: str = "utf-8") -> str:
    try:
        return data.decode(encoding)
    except UnicodeDecodeError as exc:
        name = "UTF-8" if encoding == "utf-8" else encoding
        raise MalformedFile(
            f"Byte {byte_offset + exc.start:,} (line {line}) is not valid {name} "
            f"(0x{data[exc.start]:02x}); save the file as UTF-8 or give its --encoding.",
            byte_offset=byte_offset + exc.start,
            line=line,
        ) from exc


def locate_record(buf: bytes, start: int, record_no: int) -> tuple[int, int]:
    """(byte offset, line offset) of the record_no-th record (1-based) of buf[start:]."""
    pos, lines = start, 0
    for _ in range(record_no - 1):
        end = first_record_end(buf, pos)
        if end is None:
            break
        lines += buf.count(NEWLINE, pos, end + 1)
        pos = end + 1
    return pos, lines


def find_bad_record(
    buf: bytes,
    *,
    base_offset: int,
    first_line: int,
    column_count: int,
    delimiter: str = ",",
    encoding: str = "utf-8",
) -> MalformedFile | None:
    """The first record of ``buf`` (file bytes from ``base_offset``) that cannot be loaded.

    Used to explain a failed COPY in the user's terms: which line and byte, and what is wrong.
    """
    pos, line = 0, first_line
    ending: bytes | None = None
    while pos < len(buf):
        end = first_record_end(buf, pos)
        record = buf[pos:] if end is None else buf[pos : end + 1]
        offset = base_offset + pos
        if end is None and record.count(QUOTE) % 2:
            return MalformedFile(
                f"line {line:,} (byte {offset:,}): a quoted field is never closed.",
                byte_offset=offset,
                line=line,
            )
        try:
            text = _decode(record, byte_offset=offset, line=line, encoding=encoding)
        except MalformedFile as exc:
            return exc
        if end is not None:
            this = b"\r\n" if record.endswith(b"\r\n") else b"\n"
            if ending is not None and this != ending:
                names = {b"\r\n": "CR LF", b"\n": "LF"}
                return MalformedFile(
                    f"line {line:,} (byte {offset:,}) ends with {names[this]} but the lines "
                    f"before it with {names[ending]}; save the file with one kind of line "
                    "ending.",
                    byte_offset=offset,
                    line=line,
                )
            ending = this
        if "\x00" in text:
            return MalformedFile(
                f"line {line:,} (byte {offset:,}): contains a NUL byte, which text cannot hold.",
                byte_offset=offset,
                line=line,
            )
        fields = next(csv.reader(io.StringIO(text, newline=""), delimiter=delimiter), [])
        if len(fields) != column_count:
            return MalformedFile(
                f"line {line:,} (byte {offset:,}) has {len(fields)} field(s); the header has "
                f"{column_count}.",
                byte_offset=offset,
                line=line,
            )
        line += record.count(NEWLINE)
        pos += len(record)
    return None
