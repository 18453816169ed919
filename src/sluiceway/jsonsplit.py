"""Record boundaries for JSON Lines and JSON arrays cut into byte ranges, and records as rows.

JSON Lines splits exactly at newlines: a newline never occurs inside a JSON string, so a range
owns every line whose first byte lies in it (the CSV fold with no quotes does this).

A JSON array is cut in two passes, like CSV. Pass one, per range and in parallel, counts the
range's unescaped quotes and its net bracket depth under both hypotheses (it starts outside or
inside a string): in JSON an unescaped ``"`` always toggles the string state, and whether a
quote is escaped is decided by the run of backslashes before it, which is local. A serial fold
then gives every range its state (in a string?, depth) at its first byte. Pass two is the load:
from that state it walks tokens only until the first top-level comma, which is usually within
one record. A range owns the records that follow the top-level commas lying inside it (the
first range also owns the first record).

Everything here is pure and works on bytes.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import ijson

from .csvsplit import RangeScan
from .errors import MalformedFile

NEWLINE = b"\n"
_ESCAPE = re.compile(rb"\\.", re.DOTALL)
# Outside a string: a whole string (possibly unterminated at the buffer's end) or a structural byte.
_TOKEN = re.compile(rb'"(?:[^"\\]++|\\.)*+(?:(")|\\?\Z)|[\[\]{},]', re.DOTALL)
# Pairs of (text outside strings, a string without a bracket), as many as there are.
_CLEAN_PAIRS = re.compile(rb'(?:[^"]*+"[^"\[\]{}]*+")*+')
# Inside a string: the rest of it up to and including its closing quote.
_STRING_REST = re.compile(rb'(?:[^"\\]++|\\.)*+"', re.DOTALL)


def scan_lines(buf: bytes, raw_start: int) -> RangeScan:
    """A JSON Lines range's scan; ``buf`` holds bytes [max(raw_start - 1, 0), raw_end)."""
    return scan_lines_pieces([buf], raw_start)


def scan_lines_pieces(pieces: Iterable[bytes], raw_start: int) -> RangeScan:
    """:func:`scan_lines` over the range's bytes as they arrive, one piece at a time."""
    skip = 1 if raw_start > 0 else 0  # the byte before the range
    offset = max(raw_start - 1, 0)  # the file offset of the piece at hand
    newlines = 0
    first: int | None = None
    for piece in pieces:
        start = min(skip, len(piece))
        if skip and start and piece[:1] == NEWLINE:  # the range starts a record
            first = raw_start - 1
        skip -= start
        if first is None and (at := piece.find(NEWLINE, start)) >= 0:
            first = offset + at
        newlines += piece.count(NEWLINE, start)
        offset += len(piece)
    if first is None:
        return RangeScan(0, newlines, None, None, 0, 0)
    # the newline before the range is none of its lines; one inside it is its first
    return RangeScan(0, newlines, first, None, 0 if first < raw_start else 1, 0)


@dataclass(frozen=True)
class ArrayScan:
    """Pass one over a JSON array range: its unescaped quotes, and its net depth change if it
    starts outside (``delta_out``) or inside (``delta_in``) a string."""

    quote_count: int
    delta_out: int
    delta_in: int


def escape_run_start(lookback: bytes) -> int:
    """Where the run of backslashes that ends ``lookback`` begins (len(lookback) if none)."""
    return len(lookback.rstrip(b"\\"))


def _depth(buf: bytes, start: int = 0, end: int | None = None) -> int:
    end = len(buf) if end is None else end
    opened = buf.count(b"[", start, end) + buf.count(b"{", start, end)
    return opened - buf.count(b"]", start, end) - buf.count(b"}", start, end)


def scan_array_range(buf: bytes, rel: int) -> ArrayScan:
    """Scan ``buf[rel:]``; ``buf[:rel]`` is the run of backslashes just before the range (so
    an escape that straddles the range's start is read right).

    With escapes blanked out every quote toggles the string state, so under the "starts
    outside" hypothesis the brackets inside strings are those after an odd number of quotes.
    One possessive regex skips, in C, every string without a bracket; only strings that hold
    one are visited in Python. The net depth if the range starts inside a string is the depth
    of those brackets; outside, the rest. (Splitting at every quote ran at 18 MB/s; walking
    every bracket at 31 MB/s.)
    """
    plain = _ESCAPE.sub(b"__", buf)
    inside, pos, end = 0, rel, len(plain)
    while pos < end:
        pos = _CLEAN_PAIRS.match(plain, pos).end()  # type: ignore[union-attr]  # always matches
        opening = plain.find(b'"', pos)
        if opening < 0:
            break
        closing = plain.find(b'"', opening + 1)
        inside += _depth(plain, opening + 1, end if closing < 0 else closing)
        if closing < 0:
            break
        pos = closing + 1
    return ArrayScan(plain.count(b'"', rel), _depth(plain, rel) - inside, inside)


@dataclass(frozen=True)
class ArrayState:
    """Where the lexer is at a range's first byte."""

    in_string: bool
    depth: int


def fold_array(scans: list[ArrayScan]) -> tuple[list[ArrayState], ArrayState]:
    """The serial fold: every range's state at its first byte, and the state at the data's end.

    The first range starts at byte 0 (before the ``[``), outside any string, at depth 0.
    """
    state = ArrayState(False, 0)
    states = []
    for scan in scans:
        states.append(state)
        delta = scan.delta_in if state.in_string else scan.delta_out
        state = ArrayState(state.in_string != bool(scan.quote_count % 2), state.depth + delta)
    return states, state


def top_level_comma(buf: bytes, pos: int, state: ArrayState) -> int | None:
    """Offset of the first comma at depth 1, outside strings, at or after ``pos``.

    ``buf[pos:]`` starts in ``state`` (pos is before any escape run that straddles the range
    start). None if the buffer ends first, or the array's closing bracket comes first (then
    the offset is -1 - its position).
    """
    depth = state.depth
    if state.in_string:
        m = _STRING_REST.match(buf, pos)
        if m is None:
            return None
        pos = m.end()
    for m in _TOKEN.finditer(buf, pos):
        byte = buf[m.start()]
        if byte == 0x22:  # a string
            if m.group(1) is None:
                return None  # cut by the buffer's end
            continue
        if byte == 0x2C:
            if depth == 1:
                return m.start()
        elif byte in (0x5B, 0x7B):
            depth += 1
        else:
            depth -= 1
            if depth == 0:
                return -1 - m.start()
    return None


def owned_range(
    chunk_no: int,
    raw_start: int,
    raw_end: int,
    state: ArrayState,
    next_state: ArrayState,
    *,
    data_start: int,
    data_end: int,
    find: Callable[[int, ArrayState], int | None],
) -> tuple[int, int]:
    """Pass two: the bytes [start, end) of the elements a range owns (start == end: none).

    A range owns the elements after the top-level commas inside [raw_start, raw_end); the
    first range also owns the first element. ``find(pos, state)`` is the first top-level comma
    at or after pos (None: the data ends first). The result holds elements and the commas
    between them, never a leading or trailing comma.
    """
    if chunk_no == 0:
        start = data_start
    else:
        comma = find(raw_start, state)
        if comma is None or comma >= raw_end:
            return raw_start, raw_start
        start = comma + 1
    if raw_end >= data_end:
        return start, data_end
    comma = find(raw_end, next_state)
    return start, data_end if comma is None else comma


def array_bounds(first: bytes, tail: bytes, size: int) -> tuple[int, int]:
    """(first byte after the opening ``[``, offset of the closing ``]``) of a JSON array file."""
    stripped = first.lstrip()
    if first.startswith(b"\xef\xbb\xbf"):
        stripped = first[3:].lstrip()
    if not stripped.startswith(b"["):
        raise MalformedFile(
            "a JSON file must hold one array of objects, starting with '['.", byte_offset=0
        )
    data_start = len(first) - len(stripped) + 1
    end = tail.rstrip()
    if not end.endswith(b"]"):
        raise MalformedFile(
            f"the JSON array is not closed: the file ends at byte {size:,} without ']' "
            "(truncated?).",
            byte_offset=size,
        )
    data_end = size - len(tail) + len(end) - 1
    if data_end < data_start:
        raise MalformedFile("the file is a lone ']' or '['; not a JSON array.", byte_offset=0)
    return data_start, data_end


def _nested_number(value: Any) -> Any:
    """json.dumps's fallback: a Decimal inside a nested value is written as a double."""
    if isinstance(value, Decimal) and value.is_finite():
        number = float(value)
        if math.isfinite(number):
            return number
    raise MalformedFile(f"the number {str(value)[:40]} is out of range inside a nested value.")


def _text(value: Any) -> str | None:
    """A JSON value as the text stored for it (see docs/architecture.md, "Formats")."""
    if value is None:
        return None
    if isinstance(value, str):
        return value
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, int | Decimal):  # the number's own digits: parsed as Decimal, not float
        return str(value)
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), default=_nested_number)


def record_values(record: Any, columns: dict[str, int]) -> list[str | None]:
    """One JSON object as a row over ``columns`` (name -> index); a missing key is NULL.

    The caller adds where the record is to the error's message.
    """
    if not isinstance(record, dict):
        kind = "array" if isinstance(record, list) else "scalar"
        raise MalformedFile(
            f"the record is a JSON {kind}, not an object; every record must be an object "
            "of column names to values."
        )
    row: list[str | None] = [None] * len(columns)
    for name, value in record.items():
        index = columns.get(name)
        if index is None:
            raise MalformedFile(
                f"the record has the key {name[:200]!r}, which the records sampled at the start "
                "of the file do not have (the columns are the keys of the first records); put "
                "a record with every key first, or give it the key with null."
            )
        try:
            text = _text(value)
        except RecursionError as exc:
            raise MalformedFile(f"the value of {name[:200]!r} is nested too deeply.") from exc
        if text is not None and "\x00" in text:
            raise MalformedFile(f"the value of {name[:200]!r} holds a NUL character.")
        row[index] = text
    return row


def columns_of(records: Iterable[tuple[str, dict[str, Any], Any]]) -> list[str]:
    """The union of the records' keys, in first-seen order.

    Each record comes as (where it is in the file, e.g. ``line 3 (byte 20)``, the error's
    details for that place, the record)."""
    seen: dict[str, None] = {}
    for where, details, record in records:
        if not isinstance(record, dict):
            kind = "array" if isinstance(record, list) else "scalar"
            raise MalformedFile(
                f"{where}: the record is a JSON {kind}, not an object; every record must be an "
                "object of column names to values.",
                **details,
            )
        for name in record:
            if name not in seen:
                if not name or "\x00" in name:
                    raise MalformedFile(
                        f"{where}: the record has an empty key or one with a NUL character; "
                        "column names must be non-empty text.",
                        **details,
                    )
                seen[name] = None
    return list(seen)


def _not_json(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON value")


# A surrogate's UTF-8 bytes, which json.loads reads as that surrogate (it decodes bytes with
# surrogatepass), and no character can be written out again
_SURROGATE_BYTES = re.compile(rb"\xed[\xa0-\xbf]")


def parse_line(line: bytes, line_no: int, offset: int) -> Any:
    """One JSON Lines record; the error names the line and byte offset."""
    surrogate = _SURROGATE_BYTES.search(line)
    if surrogate is not None:
        raise _not_utf8_line(line, line_no, offset, surrogate.start())
    try:
        record = json.loads(line, parse_float=Decimal, parse_constant=_not_json)
    except RecursionError as exc:
        raise MalformedFile(
            f"line {line_no:,} (byte {offset:,}): the record is nested too deeply.",
            line=line_no,
            byte_offset=offset,
        ) from exc
    except UnicodeDecodeError as exc:
        raise _not_utf8_line(line, line_no, offset, exc.start) from exc
    except ValueError as exc:
        raise MalformedFile(
            f"line {line_no:,} (byte {offset:,}) is not valid JSON: {exc}",
            line=line_no,
            byte_offset=offset,
        ) from exc
    # json.loads reads it as a str that no text can hold
    lone = next(lone_surrogates(line), None) if _LONE_SURROGATE.search(line) else None
    if lone is not None:
        raise MalformedFile(
            f"line {line_no:,} (byte {offset + lone:,}): {lone_surrogate_what(line, lone)}.",
            line=line_no,
            byte_offset=offset + lone,
        )
    return record


def _not_utf8_line(line: bytes, line_no: int, offset: int, at: int) -> MalformedFile:
    return MalformedFile(
        f"line {line_no:,} (byte {offset + at:,}) is not valid UTF-8 (0x{line[at]:02x}); save "
        "the file as UTF-8 or give --encoding.",
        line=line_no,
        byte_offset=offset + at,
    )


# What ijson's yajl2_c backend (3.6) gets wrong, found in the bytes before it parses them: a
# number of more than 4,300 digits crashes the process (it does not handle the error of
# Python's limit on reading an int), and a \\uD800-\\uDFFF escape that is not half of a pair
# becomes '?', changing the text without a word. A run of as many digits inside a string is
# refused too: the bytes alone do not say which it is (JSON Lines reads such strings).
_DIGITS_AS_ZERO = bytes.maketrans(b"123456789", b"0" * 9)
_LONG_RUN = b"0" * 4301  # found by bytes.find over the digits made zeros: ~1 GB/s, where a
# regex of a character class runs at ~60 MB/s (slower than yajl2_c parses)
# Half a pair: a high escape not followed by a low one, or a low one not after a high one (or
# after what looks like one but has a backslash before it: text after an escaped backslash, if
# the run of backslashes is odd). The pattern starts with its literal backslash-u, which re
# finds fast; its few matches are then checked for an escaped backslash before them.
_HIGH = rb"\\u[dD][89abAB][0-9a-fA-F]{2}"
_LONE_SURROGATE = re.compile(  # [dD] out of the alternatives: 0.18 -> 0.21 GB/s on \u-heavy text
    rb"\\u[dD](?:[89abAB][0-9a-fA-F]{2}(?!\\u[dD][c-fC-F][0-9a-fA-F]{2})"
    rb"|(?:(?<!" + _HIGH + rb"\\u[dD])|(?<=\\" + _HIGH + rb"\\u[dD]))[c-fC-F][0-9a-fA-F]{2})"
)
_HIGH_AT = re.compile(_HIGH)
# After a string: what says it was a key
_AFTER_STRING = re.compile(rb'(?:[^"\\]++|\\.)*+"[ \t\r\n]*+(.?)', re.DOTALL)
YAJL_CARRY = 4301 + 12  # bytes of a piece to check again with the next one


def _escaped(data: bytes, at: int) -> bool:
    """The byte at ``at`` follows an odd run of backslashes."""
    back = at
    while back > 0 and data[back - 1] == 0x5C:
        back -= 1
    return (at - back) % 2 == 1


def lone_surrogates(data: bytes, since: int = 0) -> Iterator[int]:
    """Offsets of the \\u escapes in ``data[since:]`` that are half a surrogate pair alone; a
    high one at the very end may yet have its low half next."""
    for m in _LONE_SURROGATE.finditer(data, since):
        at = m.start()
        if _escaped(data, at):  # an escaped backslash, then the text "uD8.."
            continue
        low_after_high = at >= 6 and data[at + 3] in b"cdefCDEF" and _HIGH_AT.match(data, at - 6)
        if low_after_high and not _escaped(data, at - 6):
            continue  # the high half before it is an escape, not text: a pair
        yield at


def lone_surrogate_what(data: bytes, at: int) -> str:
    """What is wrong with the lone escape at ``at``, and whether a key or a value holds it (the
    string's end may lie beyond the bytes at hand: then it does not say)."""
    after = _AFTER_STRING.match(data, at)
    holder = "a string"
    if after is not None and after.group(1):
        holder = "a key" if after.group(1) == b":" else "a value"
    escape = data[at : at + 6].decode("ascii")
    return (
        f"{holder} holds a \\u escape of half a surrogate pair ({escape}), which is no "
        "character; write the character's pair of escapes whole, or remove it"
    )


def yajl_trap(data: bytes, *, final: bool, since: int = 0) -> tuple[int, str] | None:
    """(offset, what is wrong) of the first thing in ``data`` that yajl2_c would crash on or
    change; ``final``: nothing follows (else an escape at the very end waits for its pair).
    ``since``: escapes before it were checked already, with what came before them (the low
    half of a pair whose high half is cut off here is no error)."""
    long = data.translate(_DIGITS_AS_ZERO).find(_LONG_RUN)
    for at in lone_surrogates(data, since):
        if 0 <= long < at:
            break
        if not final and at + 12 > len(data):  # its low half may come with the next piece
            break
        return at, lone_surrogate_what(data, at)
    return (long, "a number of more than 4,300 digits") if long >= 0 else None


def not_utf8(exc: UnicodeDecodeError, where: str, **details: Any) -> MalformedFile:
    """The error for a string of a JSON array that Python's decoder refused (yajl2_c checks
    UTF-8 only loosely: an overlong form or a surrogate's bytes pass it)."""
    return MalformedFile(
        f"{where}: a key or value is not valid UTF-8 (0x{exc.object[exc.start]:02x}); save "
        "the file as UTF-8 or give --encoding.",
        **details,
    )


def sample_array(prefix: bytes, *, complete: bool, limit: int) -> list[Any]:
    """The first records of a JSON array file from its first bytes (all of it if ``complete``)."""
    records: list[Any] = []
    trap = yajl_trap(prefix, final=complete)
    if trap is not None:
        raise MalformedFile(f"byte {trap[0]:,}: {trap[1]}.", byte_offset=trap[0])
    try:  # a UTF-8 BOM is no JSON: yajl refuses it (array_bounds skips it too)
        for record in ijson.items(prefix.removeprefix(b"\xef\xbb\xbf"), "item"):
            records.append(record)
            if len(records) >= limit:
                break
    except RecursionError as exc:
        raise MalformedFile("a record near the start of the file is nested too deeply.") from exc
    except UnicodeDecodeError as exc:  # bytes yajl lets through (a surrogate's, say)
        raise not_utf8(exc, f"record {len(records) + 1:,}") from exc
    except ijson.JSONError as exc:
        if complete:
            raise MalformedFile(f"the file is not a valid JSON array: {exc}") from exc
    return records


def jsonl_records(
    lines: Iterable[bytes], *, first_line: int, start: int
) -> Iterator[tuple[int, int, Any]]:
    """(line number, byte offset, record) of each non-blank line."""
    offset = start
    for n, line in enumerate(lines, first_line):
        if line.strip():
            yield n, offset, parse_line(line, n, offset)
        offset += len(line)
