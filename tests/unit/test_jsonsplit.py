"""JSON Lines and JSON arrays cut into byte ranges: every record exactly once, at any cut."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sluiceway import csvsplit, jsonsplit
from sluiceway.errors import MalformedFile

# Text built from what makes JSON splitting hard: quotes, escapes (a backslash before a
# quote, runs of backslashes), brackets and commas inside strings, newlines, non-ASCII.
TRICKY = ['"', "\\", '\\"', "\\\\", "]", "}", "[{", ",", "\n", "é", "😀", "\u2028", ""]
TEXT = st.one_of(
    st.sampled_from(TRICKY),
    st.text(alphabet=st.sampled_from(list('ab ,"\\[]{}\né😀\t')), max_size=10),
    st.text(st.characters(codec="utf-8", exclude_characters="\x00"), max_size=6),
)
SCALAR = st.one_of(TEXT, st.none(), st.booleans(), st.integers(-(10**12), 10**12))
VALUE = st.recursive(
    SCALAR,
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(TEXT, inner, max_size=3)),
    max_leaves=6,
)
KEYS = st.sampled_from(["id", "name", 'q"uote', "back\\slash", "br]ack{et", "日本"])
RECORDS = st.lists(st.dictionaries(KEYS, VALUE, min_size=1, max_size=4), max_size=8)


def _as_stored(records: list[dict[str, Any]]) -> list[dict[str, str | None]]:
    columns = jsonsplit.columns_of((f"record {n}", {}, r) for n, r in enumerate(records, 1))
    index = {c: i for i, c in enumerate(columns)}
    return [dict(zip(columns, jsonsplit.record_values(r, index), strict=True)) for r in records]


def _split_array(data: bytes, chunk_bytes: int) -> list[Any]:
    """Plan, scan every range, fold, then let every range find and parse what it owns."""
    data_start, data_end = jsonsplit.array_bounds(data[:4096], data[-4096:], len(data))
    raw = csvsplit.split_ranges(data_end, chunk_bytes)
    scans = []
    for raw_start, raw_end in raw:
        lookback = jsonsplit.escape_run_start(data[:raw_start])
        scans.append(jsonsplit.scan_array_range(data[lookback:raw_end], raw_start - lookback))
    states, end = jsonsplit.fold_array(scans)
    assert end == jsonsplit.ArrayState(False, 1)

    def find(pos: int, state: jsonsplit.ArrayState) -> int | None:
        begin = jsonsplit.escape_run_start(data[:pos])
        found = jsonsplit.top_level_comma(data[:data_end], begin, state)
        assert found is None or found >= 0
        return found

    out: list[Any] = []
    nexts = [*states[1:], end]
    for n, ((raw_start, raw_end), state, nxt) in enumerate(zip(raw, states, nexts, strict=True)):
        start, stop = jsonsplit.owned_range(
            n, raw_start, raw_end, state, nxt, data_start=data_start, data_end=data_end, find=find
        )
        if stop > start:
            out += json.loads(b"[" + data[start:stop] + b"]")
    return out


@settings(max_examples=300, deadline=None)
@given(
    records=RECORDS,
    chunk_bytes=st.integers(1, 80),
    indent=st.sampled_from([None, 0, 2]),
    bom=st.booleans(),
)
def test_a_json_array_cut_anywhere_gives_every_record_once(
    records: list[dict[str, Any]], chunk_bytes: int, indent: int | None, bom: bool
) -> None:
    data = (b"\xef\xbb\xbf" if bom else b"") + json.dumps(
        records, ensure_ascii=False, indent=indent
    ).encode()
    assert _split_array(data, chunk_bytes) == records


@settings(max_examples=300, deadline=None)
@given(
    records=RECORDS,
    chunk_bytes=st.integers(1, 80),
    ascii_only=st.booleans(),
    piece_bytes=st.integers(1, 20),
)
def test_json_lines_cut_anywhere_give_every_record_once(
    records: list[dict[str, Any]], chunk_bytes: int, ascii_only: bool, piece_bytes: int
) -> None:
    data = "".join(json.dumps(r, ensure_ascii=ascii_only) + "\n" for r in records).encode()
    raw = csvsplit.split_ranges(len(data), chunk_bytes)
    scans = [jsonsplit.scan_lines(data[max(a - 1, 0) : b], a) for a, b in raw]
    # the scan Map reads a range in pieces: any pieces give the same scan as the whole range
    for (a, b), scan in zip(raw, scans, strict=True):
        buf = data[max(a - 1, 0) : b]
        pieces = [buf[i : i + piece_bytes] for i in range(0, len(buf), piece_bytes)]
        assert jsonsplit.scan_lines_pieces([b"", *pieces], a) == scan
    loads = csvsplit.resolve_ranges(raw, scans, data_start=0, data_end=len(data), header_lines=0)
    got: list[Any] = []
    for load in loads:
        lines = data[load.start : load.end].splitlines(keepends=True)
        parsed = list(jsonsplit.jsonl_records(lines, first_line=load.first_line, start=load.start))
        for line_no, offset, record in parsed:
            # each record knows its own line and byte offset in the file
            assert data.count(b"\n", 0, offset) + 1 == line_no
            got.append(record)
    assert got == records


@settings(max_examples=100, deadline=None)
@given(records=RECORDS)
def test_stored_values_are_text_and_nested_values_are_json(records: list[dict[str, Any]]) -> None:
    for original, stored in zip(records, _as_stored(records), strict=True):
        for key, value in original.items():
            text = stored[key]
            if value is None:
                assert text is None
            elif isinstance(value, str):
                assert text == value
            else:
                assert text is not None
                assert json.loads(text) == value


def test_a_record_with_a_key_outside_the_sample_is_an_error() -> None:
    with pytest.raises(MalformedFile, match="the record has the key 'late'"):
        jsonsplit.record_values({"id": 1, "late": 2}, {"id": 0})


def test_a_record_that_is_not_an_object_is_an_error() -> None:
    with pytest.raises(MalformedFile, match="a JSON array, not an object"):
        jsonsplit.record_values([1, 2], {"id": 0})


def test_a_value_nested_10000_deep_is_an_error_not_a_crash() -> None:
    deep = "[" * 10_000 + "]" * 10_000
    with pytest.raises(MalformedFile, match="nested too deeply"):
        jsonsplit.parse_line(('{"a": ' + deep + "}").encode(), 1, 0)
    with pytest.raises(MalformedFile, match="nested too deeply"):
        jsonsplit.record_values(_deep(10_000), {"a": 0})


def _deep(depth: int) -> dict[str, Any]:
    value: Any = []
    for _ in range(depth):
        value = [value]
    return {"a": value}


def test_an_unbalanced_array_does_not_fold_to_its_end() -> None:
    data = b'[{"a": [1, 2}, {"b": "]"}]'
    _, data_end = jsonsplit.array_bounds(data, data, len(data))
    scan = jsonsplit.scan_array_range(data[:data_end], 0)
    _, end = jsonsplit.fold_array([scan])
    assert end != jsonsplit.ArrayState(False, 1)


@pytest.mark.parametrize(
    ("data", "words"),
    [
        (b'{"a": 1}', "starting with '\\['"),
        (b'[{"a": 1}, {"a": 2}', "not closed"),
        (b"   ", "starting with '\\['"),
    ],
)
def test_what_is_not_a_json_array_says_so(data: bytes, words: str) -> None:
    with pytest.raises(MalformedFile, match=words):
        jsonsplit.array_bounds(data, data, len(data))


def test_json_arrays_are_parsed_by_ijsons_c_backend() -> None:
    from sluiceway import readers

    assert readers.IJSON_BACKEND == "yajl2_c"


LONE = "a \\u escape of half a surrogate pair"
TRAPS = [
    # (array text, what is wrong, or None: yajl2_c reads it right)
    (b'[{"a": 1' + b"1" * 5000 + b"}]", "4,300 digits"),  # crashed the process
    (b'[{"a": 1' + b"1" * 5000 + b".5}]", "4,300 digits"),  # never ended
    (b'[{"a": "\\ud800x"}]', LONE),  # was stored as "?x"
    (b'[{"a": "x\\udc00"}]', LONE),
    (b'[{"a": "\\u0041\\udc00"}]', LONE),  # a low after an escape that is not a high
    (b'[{"a": "\\ud800\\ud800\\udc00"}]', LONE),  # a high, then a whole pair
    (b'[{"\\udbff": 1}]', LONE),
    (b'[{"a": "\\ud800"}]', LONE),  # at the very end of a piece and of the data
    (b'[{"a": "\\ud83d\\ude00"}]', None),  # a pair: one character
    (b'[{"a": "\\\\ud800"}]', None),  # an escaped backslash, then text
    (b'[{"a": "\\\\\\ud800x"}]', LONE),  # a backslash, then a lone escape
    # an escaped backslash, the text "ud83d", then a lone low escape (not the pair it looks)
    (b'[{"a": "\\\\ud83d\\udc00"}]', LONE),
    (b'[{"\\\\ud83d\\udc00": 1}]', LONE),
    (b'[{"a": "\\\\\\ud83d\\udc00"}]', None),  # an escaped backslash, then a pair
    (b'[{"a": "\\\\\\\\ud83d\\udc00"}]', LONE),  # two escaped backslashes, then text
    (b'[{"a": ' + b"1" * 4300 + b"}]", None),  # as long as Python reads
]


@pytest.mark.parametrize(("data", "wrong"), TRAPS)
def test_what_yajl2_c_would_crash_on_or_change_is_found_in_the_bytes_wherever_they_are_cut(
    data: bytes, wrong: str | None
) -> None:
    from sluiceway.readers import _checked

    whole = jsonsplit.yajl_trap(data, final=True)
    if wrong is None:
        assert whole is None
    else:
        assert whole is not None
        assert wrong in whole[1]
    # the reader checks piece by piece, with the end of the one before: cut it anywhere
    for cut in {1, 2, 7, 8, 9, 13, len(data) // 2, len(data) - 3, len(data) - 1}:
        pieces = iter([data[:cut], data[cut:]])
        if wrong is None:
            assert b"".join(_checked(pieces, "f.json", 100)) == data
        else:
            with pytest.raises(MalformedFile) as refused:
                list(_checked(pieces, "f.json", 100))
            assert wrong in refused.value.message
            assert refused.value.details["byte_offset"] == 100 + whole[0]  # type: ignore[index]


def test_the_sample_of_an_array_refuses_what_yajl2_c_would_crash_on() -> None:
    with pytest.raises(MalformedFile, match="4,300 digits"):
        jsonsplit.sample_array(TRAPS[0][0], complete=True, limit=10)


@pytest.mark.parametrize(
    ("line", "says", "at"),
    [
        (b'{"a\\ud800": 1}\n', "line 3 (byte 103): a key holds a \\u escape of half", 103),
        (b'{"a": "x\\udc00"}\n', "line 3 (byte 108): a value holds a \\u escape of half", 108),
        (b'{"a": "\\\\ud83d\\udc00"}\n', "line 3 (byte 114): a value holds", 114),
        (b'{"a\xed\xa0\x80": 1}\n', "line 3 (byte 103) is not valid UTF-8 (0xed)", 103),
    ],
)
def test_a_json_line_with_text_no_string_can_hold_names_its_line_and_byte(
    line: bytes, says: str, at: int
) -> None:
    # json.loads reads these as a lone surrogate, which cannot be written to PostgreSQL
    with pytest.raises(MalformedFile) as refused:
        jsonsplit.parse_line(line, 3, 100)
    assert says in refused.value.message
    assert refused.value.details == {"line": 3, "byte_offset": at}


def test_a_json_line_with_a_whole_pair_or_an_escaped_backslash_is_read() -> None:
    line = b'{"a": "\\ud83d\\ude00", "b": "\\\\ud800"}\n'
    assert jsonsplit.parse_line(line, 1, 0) == {"a": "\U0001f600", "b": "\\ud800"}
