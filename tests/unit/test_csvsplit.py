"""Record boundaries of CSV cut into byte ranges: every record exactly once, at any cut."""

from __future__ import annotations

import csv
import io
import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sluiceway import csvsplit
from sluiceway.errors import MalformedFile, PayloadTooLarge

MAX_RECORD_BYTES = 1024

# Fields built from the pieces that make CSV hard: separators, quotes, every kind of line
# break, empty strings and multi-byte characters.
TRICKY = ["", ",", '"', '""', "\r", "\n", "\r\n", '"a,b"', "x\ny", "é", "€", "😀", " "]
FIELD = st.one_of(
    st.sampled_from(TRICKY),
    st.text(alphabet=st.sampled_from(list('ab ,"\r\né€😀\t;')), max_size=8),
    st.text(st.characters(codec="utf-8", exclude_characters="\x00"), max_size=6),
)
COLUMN_NAME = st.text(alphabet=st.sampled_from(list('abc ,"\né')), min_size=1, max_size=5).filter(
    lambda s: s.strip() == s
)


def _field(value: str, *, quote_all: bool) -> str:
    # Written by hand: Python 3.11's csv writer leaves a lone CR unquoted under "\n" endings.
    if quote_all or not value or any(c in value for c in ',"\r\n'):
        return '"' + value.replace('"', '""') + '"'
    return value


@st.composite
def csv_files(draw: st.DrawFn) -> tuple[bytes, list[str], list[list[str]]]:
    """A CSV file as bytes, with the header and records it was written from."""
    columns = draw(st.lists(COLUMN_NAME, min_size=1, max_size=4, unique=True))
    records = draw(st.lists(st.lists(FIELD, min_size=len(columns), max_size=len(columns))))
    terminator = draw(st.sampled_from(["\n", "\r\n"]))
    quote_all = draw(st.booleans())
    text = "".join(
        ",".join(_field(v, quote_all=quote_all) for v in row) + terminator
        for row in [columns, *records]
    )
    ending = draw(st.sampled_from(["final newline", "no final newline", "blank lines"]))
    if ending == "no final newline":
        text = text.removesuffix(terminator)
    elif ending == "blank lines":
        text += terminator * draw(st.integers(1, 3))
    bom = csvsplit.UTF8_BOM if draw(st.booleans()) else b""
    return bom + text.encode("utf-8"), columns, records


Plan = tuple[csvsplit.Header, list[tuple[int, int]], list[csvsplit.LoadRange], int]


def _plan(data: bytes, chunk_bytes: int, parallel: int = 1) -> Plan:
    """What the planner, the scan Map and the fold do, on one file held in memory."""
    first = data[: MAX_RECORD_BYTES + 4]
    header = csvsplit.parse_header(
        first, at_eof=len(first) == len(data), max_record_bytes=MAX_RECORD_BYTES
    )
    data_end = max(csvsplit.trim_trailing_blank_lines(data[-4096:], len(data)), header.data_start)
    raw = csvsplit.split_ranges(data_end, chunk_bytes, parallel)
    scans = [csvsplit.scan_range(data[max(a - 1, 0) : b], a) for a, b in raw]
    loads = csvsplit.resolve_ranges(
        raw,
        scans,
        data_start=header.data_start,
        data_end=data_end,
        header_lines=data[: header.data_start].count(b"\n"),
    )
    return header, raw, loads, data_end


def _parse(data: bytes) -> list[list[str]]:
    return list(csv.reader(io.StringIO(data.decode("utf-8"), newline=""), strict=True))


@settings(max_examples=200, deadline=None)
@given(data=st.data(), file=csv_files())
def test_ranges_hold_every_record_once_in_order_at_any_chunk_size(
    data: st.DataObject, file: tuple[bytes, list[str], list[list[str]]]
) -> None:
    # Given a CSV file and a chunk size anywhere from one byte to more than the whole file
    raw_bytes, columns, records = file
    chunk_bytes = data.draw(st.integers(1, len(raw_bytes) + 10), label="chunk_bytes")
    parallel = data.draw(st.integers(1, 8), label="parallel")

    # When it is cut, scanned and folded into load ranges
    header, raw, loads, data_end = _plan(raw_bytes, chunk_bytes, parallel)

    # Then the header is the file's first record, without the BOM
    assert header.columns == columns
    # ... the raw cut covers the data in pieces of at most chunk_bytes
    assert raw[0][0] == 0
    assert raw[-1][1] == data_end
    assert all(b - a <= chunk_bytes for a, b in raw)
    # ... the load ranges tile the data exactly, each starting inside the raw range that owns it
    assert [r.start for r in loads[1:]] == [r.end for r in loads[:-1]]
    if records:
        assert loads[0].start == header.data_start
        assert loads[-1].end == data_end
    else:
        assert loads == []
    for r in loads:
        assert raw[r.chunk_no][0] <= r.start < raw[r.chunk_no][1]
    # ... parsing each range on its own gives the records of a sequential parse, in order
    per_range = [_parse(raw_bytes[r.start : r.end]) for r in loads]
    assert all(per_range), "every range holds at least one record"
    assert [rec for rng in per_range for rec in rng] == records
    sequential = _parse(raw_bytes.removeprefix(csvsplit.UTF8_BOM))
    while sequential and sequential[-1] == []:  # trailing blank lines
        sequential.pop()
    assert sequential[1:] == records
    # ... and each range knows the file line it starts on
    for r in loads:
        assert r.first_line == 1 + raw_bytes[: r.start].count(b"\n")


def _cut(buf: bytes, cuts: list[int]) -> list[bytes]:
    """``buf`` in pieces, cut at ``cuts`` (offsets into it, any order, repeats give empties)."""
    bounds = [0, *sorted(c % (len(buf) + 1) for c in cuts), len(buf)]
    return [buf[a:b] for a, b in itertools.pairwise(bounds)]


@settings(max_examples=300, deadline=None)
@given(data=st.data(), file=csv_files())
def test_a_range_scanned_in_pieces_finds_what_it_finds_whole(
    data: st.DataObject, file: tuple[bytes, list[str], list[list[str]]]
) -> None:
    # Given a raw range anywhere in a CSV file (the scan Map's reads start one byte early)
    raw_bytes = file[0]
    a = data.draw(st.integers(0, len(raw_bytes)), label="raw_start")
    b = data.draw(st.integers(a, len(raw_bytes)), label="raw_end")
    buf = raw_bytes[max(a - 1, 0) : b]
    # When its bytes arrive in pieces of any sizes, empty ones and single bytes included
    cuts = data.draw(st.lists(st.integers(0, max(len(buf), 1)), max_size=12), label="cuts")
    pieces = _cut(buf, cuts)
    # Then the scan is the same as over the whole range at once (which the test above checks
    # against the csv module), so every record is found once whatever the pieces
    assert b"".join(pieces) == buf
    assert csvsplit.scan_pieces(pieces, a) == csvsplit.scan_range(buf, a)


def test_a_quoted_field_across_many_pieces_keeps_its_newlines_inside() -> None:
    # A range that starts inside a long quoted field with newlines: its first record starts
    # after the field closes, several pieces later; read at the even parity it would be
    # the field's first inner newline.
    buf = b"x\nmore" + b"\n".join([b"inside"] * 50) + b'",z\nnext,1\n'
    whole = csvsplit.scan_range(buf, 1)
    pieces = [buf[i : i + 7] for i in range(0, len(buf), 7)]
    assert csvsplit.scan_pieces(pieces, 1) == whole
    assert whole.first_newline_odd == buf.index(b'",z\n') + 3  # after the closing quote
    assert whole.first_newline_even == buf.index(b"\n")  # the lookbehind byte is not a newline
    assert whole.quote_count == 1


def test_a_record_with_newlines_in_quotes_is_never_split() -> None:
    # Given a record whose quoted field spans lines, cut one byte at a time
    data = b'id,text\n1,"a\nb\r\nc"\n2,"say ""hi"", ok"\n'

    # When it is planned
    _, _, loads, _ = _plan(data, 1)

    # Then each record is one range, starting on its own line
    assert [(data[r.start : r.end], r.first_line) for r in loads] == [
        (b'1,"a\nb\r\nc"\n', 2),
        (b'2,"say ""hi"", ok"\n', 5),
    ]


@pytest.mark.parametrize(("data_end", "chunk_bytes"), [(10, 4), (10, 10), (10, 100), (1, 1)])
def test_split_ranges_tiles_the_data_in_pieces_no_larger_than_asked(
    data_end: int, chunk_bytes: int
) -> None:
    raw = csvsplit.split_ranges(data_end, chunk_bytes)
    assert raw[0][0] == 0
    assert raw[-1][1] == data_end
    assert all(a < b <= a + chunk_bytes for a, b in raw)
    assert [a for a, _ in raw[1:]] == [b for _, b in raw[:-1]]


def test_split_ranges_of_no_data_is_one_empty_range() -> None:
    assert csvsplit.split_ranges(0, 4) == [(0, 0)]
    with pytest.raises(ValueError, match="positive"):
        csvsplit.split_ranges(10, 0)


# -- parse_header ----------------------------------------------------------------------------


def test_parse_header_rejects_a_duplicate_column_by_name() -> None:
    with pytest.raises(MalformedFile, match="'price' twice") as caught:
        csvsplit.parse_header(b"id,price,price\n1,2,3\n", at_eof=True, max_record_bytes=1024)
    assert caught.value.details["line"] == 1


def test_parse_header_duplicates_are_compared_after_trimming_spaces() -> None:
    with pytest.raises(MalformedFile, match="'a' twice"):
        csvsplit.parse_header(b"a, a\n1,2\n", at_eof=True, max_record_bytes=1024)


def test_parse_header_rejects_an_empty_column_name() -> None:
    with pytest.raises(MalformedFile, match="column 2 of the header has no name"):
        csvsplit.parse_header(b"a,,c\n1,2,3\n", at_eof=True, max_record_bytes=1024)


def test_parse_header_strips_the_bom() -> None:
    header = csvsplit.parse_header(
        csvsplit.UTF8_BOM + "naïve,b\n1,2\n".encode(), at_eof=True, max_record_bytes=1024
    )
    assert header == csvsplit.Header(columns=["naïve", "b"], data_start=3 + 9, bom=True)


def test_parse_header_reads_quoted_names_with_commas_and_newlines() -> None:
    data = b'"a,b","line\nbreak"\n1,2\n'
    header = csvsplit.parse_header(data, at_eof=True, max_record_bytes=1024)
    assert header.columns == ["a,b", "line\nbreak"]
    assert data[header.data_start :] == b"1,2\n"


def test_parse_header_of_a_header_only_file_without_newline() -> None:
    header = csvsplit.parse_header(b"a,b", at_eof=True, max_record_bytes=1024)
    assert header == csvsplit.Header(columns=["a", "b"], data_start=3, bom=False)


def test_parse_header_of_an_empty_file_has_no_columns() -> None:
    assert csvsplit.parse_header(b"", at_eof=True, max_record_bytes=1024).columns == []


def test_parse_header_longer_than_the_buffer_is_too_large() -> None:
    # Given the first bytes of a larger file, with no end of line in them
    first = b"a," * 600

    # Then the header cannot be read, and the error says why
    with pytest.raises(PayloadTooLarge, match="longer than 1,024 bytes"):
        csvsplit.parse_header(first, at_eof=False, max_record_bytes=1024)


def test_parse_header_names_the_byte_of_invalid_utf8() -> None:
    with pytest.raises(MalformedFile, match=r"Byte 2 \(line 1\) is not valid UTF-8 \(0xff\)"):
        csvsplit.parse_header(b"a,\xffb\n1,2\n", at_eof=True, max_record_bytes=1024)


# -- trim_trailing_blank_lines ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "expected_end"),
    [
        (b"a\n1\n", 4),
        (b"a\n1", 3),
        (b"a\n1\n\n\n", 4),
        (b"a\r\n1\r\n\r\n\r\n", 6),
        (b"a\r\n1\r\n", 6),
        (b'a\n"1\n\n"\n\n', 8),
    ],
)
def test_trim_trailing_blank_lines_keeps_one_terminator(data: bytes, expected_end: int) -> None:
    assert csvsplit.trim_trailing_blank_lines(data, len(data)) == expected_end


def test_trim_trailing_blank_lines_works_on_the_tail_of_a_larger_file() -> None:
    # only the last bytes are read; the answer is an offset in the whole file
    assert csvsplit.trim_trailing_blank_lines(b"9,9\n\n\n", 1000) == 998


# -- find_bad_record -------------------------------------------------------------------------


def test_find_bad_record_names_line_and_byte_of_a_wrong_field_count() -> None:
    # Given a range starting at byte 4 (line 2) whose second record has three fields
    buf = b"1,2\n3,4,5\n6,7\n"

    found = csvsplit.find_bad_record(buf, base_offset=4, first_line=2, column_count=2)

    assert found is not None
    assert found.message == "line 3 (byte 8) has 3 field(s); the header has 2."
    assert found.details == {"byte_offset": 8, "line": 3}


def test_find_bad_record_counts_lines_inside_quoted_fields() -> None:
    buf = b'1,"a\nb"\n3\n'
    found = csvsplit.find_bad_record(buf, base_offset=4, first_line=2, column_count=2)
    assert found is not None
    assert found.message == "line 4 (byte 12) has 1 field(s); the header has 2."


def test_find_bad_record_names_the_byte_of_invalid_utf8() -> None:
    buf = b"1,2\n3,x\xffy\n"
    found = csvsplit.find_bad_record(buf, base_offset=4, first_line=2, column_count=2)
    assert found is not None
    assert found.details == {"byte_offset": 11, "line": 3}
    assert "Byte 11 (line 3) is not valid UTF-8 (0xff)" in found.message


def test_find_bad_record_finds_an_unclosed_quote() -> None:
    buf = b'1,2\n3,"abc\n4,5\n'
    found = csvsplit.find_bad_record(buf, base_offset=4, first_line=2, column_count=2)
    assert found is not None
    assert found.message == "line 3 (byte 8): a quoted field is never closed."


def test_find_bad_record_finds_a_nul_byte() -> None:
    found = csvsplit.find_bad_record(b"1,a\x00b\n", base_offset=4, first_line=2, column_count=2)
    assert found is not None
    assert found.message == "line 2 (byte 4): contains a NUL byte, which text cannot hold."


def test_find_bad_record_accepts_good_records() -> None:
    buf = 'a,"b, ""c"""\r\n"x\r\ny",é\r\n'.encode()
    assert csvsplit.find_bad_record(buf, base_offset=0, first_line=2, column_count=2) is None


def test_find_bad_record_names_mixed_line_endings() -> None:
    # PostgreSQL's COPY refuses a CR LF line after LF lines (and the other way round)
    found = csvsplit.find_bad_record(b"1,a\n2,b\r\n", base_offset=8, first_line=2, column_count=2)
    assert found is not None
    assert found.message == (
        "line 3 (byte 12) ends with CR LF but the lines before it with LF; save the file "
        "with one kind of line ending."
    )


def test_parse_header_refuses_bare_cr_line_ends() -> None:
    with pytest.raises(MalformedFile, match="bare carriage return"):
        csvsplit.parse_header(b"id,name\r1,a\r2,b\r", at_eof=True, max_record_bytes=1024)


def test_parse_header_refuses_a_nul_byte() -> None:
    with pytest.raises(MalformedFile, match="NUL"):
        csvsplit.parse_header(b"id,na\x00me\n1,a\n", at_eof=True, max_record_bytes=1024)


def test_split_ranges_makes_exactly_a_multiple_of_parallel_equal_ranges() -> None:
    ranges = csvsplit.split_ranges(10, 3, 8)
    assert len(ranges) == 8
    assert {b - a for a, b in ranges} <= {1, 2}
    assert ranges[0][0] == 0
    assert ranges[-1][1] == 10
