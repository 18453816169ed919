"""A CSV range's blocks (sluiceway.blocks) are the same however its bytes arrive."""

from __future__ import annotations

import hashlib
import random
import zlib

import pytest

from sluiceway import blocks


@pytest.fixture(autouse=True, params=["c", "python"])
def cut_in(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Every test runs with each cut: the C one (_blockcut.c) and Python's C loops."""
    if request.param == "python":
        monkeypatch.setattr(blocks, "_native", None)
    elif blocks._native is None:
        pytest.skip("sluiceway._blockcut is not built here (no C compiler at install)")
    return str(request.param)


RECORDS = [
    (f'{i},"quoted, with a\nnewline {i}",x\n' if i % 5 == 0 else f"{i},plain {i},y\n").encode()
    for i in range(1, 3001)
]
DATA = b"".join(RECORDS)


def _cut(data: bytes, sizes: list[int]) -> list[blocks.Block]:
    cutter, out, at = blocks.Cutter(b"context"), [], 0
    for n in sizes:
        out += cutter.feed(data[at : at + n])
        at += n
    out += cutter.feed(data[at:])
    return out + cutter.finish()


@pytest.mark.parametrize("seed", range(8))
def test_the_blocks_do_not_depend_on_how_the_bytes_are_cut_into_pieces(seed: int) -> None:
    rng = random.Random(seed)
    whole = _cut(DATA, [])
    pieces = _cut(DATA, [rng.randint(1, 3000) for _ in range(200)])
    assert [b.digest for b in pieces] == [b.digest for b in whole]
    assert b"".join(b.data for b in whole) == DATA
    assert sum(b.records for b in whole) == 3000  # a quoted newline is not a record's end
    assert max(b.records for b in whole) <= blocks.MAX_LEAF_ROWS


def test_an_edit_changes_only_the_blocks_around_it() -> None:
    edited = DATA.replace(b"1501,plain 1501,y\n", b"1501,edited,y\n")
    a, b = {x.digest for x in _cut(DATA, [])}, {x.digest for x in _cut(edited, [])}
    assert edited != DATA
    assert 1 <= len(a - b) <= 3  # its block, and caps counted from a moved natural end


def test_a_last_record_without_a_newline_is_a_record() -> None:
    found = _cut(b"1,a\n2,b", [3])
    assert sum(b.records for b in found) == 2
    assert b"".join(b.data for b in found) == b"1,a\n2,b"


def test_mixed_line_endings_are_noticed() -> None:
    cutter = blocks.Cutter(b"context")
    cutter.feed(b"1,a\r\n2,b\r\n")
    assert not cutter.mixed_endings
    cutter.feed(b"3,c\n")
    assert cutter.mixed_endings


def test_a_natural_boundary_is_found_from_either_side_of_a_range_end() -> None:
    def read(a: int, b: int) -> bytes:
        return DATA[a:b]

    # from any record's start, the first block end at or after it, found with little read
    starts, at = [], 0
    for record in RECORDS:
        starts.append(at)
        at += len(record)
    cuts, at = set(), 0
    for b in _cut(DATA, []):
        at += len(b.data)
        cuts.add(at)
    for s in starts[100:160]:
        end = blocks.natural_boundary(read, s, len(DATA))
        assert end in cuts
        assert end >= s


def test_a_quoted_newline_is_not_a_line_ending() -> None:
    # csv.writer ends records with CR LF and keeps a field's LF: not mixed
    cutter = blocks.Cutter(b"context")
    cutter.feed(b'1,"a\nb"\r\n2,c\r\n')
    assert not cutter.mixed_endings


def _reference(data: bytes, context: bytes) -> list[tuple[bytes, bytes, int]]:
    """The blocks by their definition, a record at a time (slow and plain)."""
    out: list[tuple[bytes, bytes, int]] = []
    block, records, record, quotes = b"", 0, b"", 0
    lines = data.split(b"\n")
    for k, line in enumerate(lines):
        last = k == len(lines) - 1
        if last and not line:
            break
        record = record + b"\n" + line if k and record else line
        quotes += line.count(b'"')
        if quotes % 2:
            continue
        block += record + (b"" if last else b"\n")
        records += 1
        if (
            zlib.crc32(record) % blocks.NATURAL == 0
            or records == blocks.MAX_LEAF_ROWS
            or len(block) >= blocks.MAX_BLOCK_BYTES
        ):
            out.append((hashlib.sha256(context + block).digest(), block, records))
            block, records = b"", 0
        record, quotes = b"", 0
    if block:
        out.append((hashlib.sha256(context + block).digest(), block, records))
    return out


def _records(rng: random.Random, count: int) -> bytes:
    """CSV records of every shape: one line, a quoted field over 2 to 5 lines (LF and CR LF
    inside), escaped quotes, empty fields, and now and then one of 300 KB or 1.2 MB."""
    out = []
    for i in range(count):
        kind = rng.random()
        if kind < 0.5:
            out.append(f"{i},plain {rng.random()}\r\n")
        elif kind < 0.75:
            out.append(f'{i},"two\nlines {rng.random()}"\r\n')
        elif kind < 0.9:
            inner = "\r\n".join(f"part {k}" for k in range(rng.randint(2, 5)))
            out.append(f'{i},"{inner} ""quoted"" {rng.random()}"\r\n')
        elif kind < 0.98:
            out.append(f'{i},"",""""\r\n')
        else:
            big = "x" * rng.choice([300_000, 1_200_000])
            out.append(f'{i},"{big}\n{rng.random()}"\r\n')
    return "".join(out).encode()


@pytest.mark.parametrize("seed", range(6))
def test_the_blocks_are_their_definition_whatever_the_pieces(seed: int) -> None:
    rng = random.Random(seed)
    data = _records(rng, 4000)
    expected = _reference(data, b"context")
    sizes = [rng.choice([1, 7, 100, 4096, 65536, 300_000]) for _ in range(400)]
    got = _cut(data, sizes)
    assert [(b.digest, b.data, b.records) for b in got] == expected
    assert sum(b.records for b in got) == 4000
    assert any(len(b.data) >= blocks.MAX_BLOCK_BYTES for b in got)  # the byte cap is met


def test_a_range_without_a_last_newline_ends_with_its_last_record() -> None:
    data = b'1,a\r\n2,"b\r\nc"'
    got = _cut(data, [6])
    assert [(b.data, b.records) for b in got] == [(x[1], x[2]) for x in _reference(data, b"c")]
    assert sum(b.records for b in got) == 2


def test_a_block_ends_once_it_holds_max_block_bytes() -> None:
    size = blocks.MAX_BLOCK_BYTES
    fill = next(c for c in b"xyzw" if zlib.crc32(bytes([c]) * (size - 1)) % blocks.NATURAL)
    exact = bytes([fill]) * (size - 1) + b"\n"  # a record of MAX_BLOCK_BYTES, newline counted
    small = b"1,b\n"
    for pieces in ([], [size // 3, size // 3], [size - 1, 1]):
        got = _cut(exact + small * 3, pieces)
        assert got[0].data == exact
        assert [(b.data, b.records) for b in got] == [
            (x[1], x[2]) for x in _reference(exact + small * 3, b"context")
        ]
    under = bytes([fill]) * (size - 2) + b"\n"
    got = _cut(under + small, [])
    assert len(got) == 1 or zlib.crc32(under[:-1]) % blocks.NATURAL == 0


@pytest.mark.parametrize("seed", range(20))
def test_any_bytes_make_their_definition_s_blocks(seed: int) -> None:
    """Bytes of quotes, commas, CRs and newlines in any order (unbalanced quotes, CR alone, a
    quote at a piece's end, no newline at all), cut into pieces of any size."""
    rng = random.Random(seed)
    data = bytes(rng.choice(b'ab,""\r\n\n\n') for _ in range(rng.randint(0, 5000)))
    sizes = [rng.choice([1, 2, 3, 50, 700]) for _ in range(rng.randint(0, 60))]
    got = _cut(data, sizes)
    assert b"".join(b.data for b in got) == data
    closed = data.count(b'"') % 2 == 0
    if closed:  # an open quote at the end: the last bytes are no record
        assert [(b.digest, b.data, b.records) for b in got] == _reference(data, b"context")


def test_the_c_cut_is_the_python_cut(cut_in: str) -> None:
    """The same blocks, records and line-ending verdicts from both, piece by piece."""
    if cut_in == "python":
        pytest.skip("compares the two: once is enough")
    rng = random.Random(7)
    shapes = [_records(rng, 3000)]  # and bytes of any order, open quotes at the end included
    shapes += [bytes(rng.choice(b'a,"\r\n\n') for _ in range(3000)) for _ in range(20)]
    for data in shapes:
        sizes = [rng.choice([1, 5, 64, 4096, 1 << 16]) for _ in range(300)]
        native, plain = blocks.Cutter(b"c", native=True), blocks.Cutter(b"c", native=False)
        at = 0
        for n in [*sizes, len(data)]:
            piece = data[at : at + n]
            assert native.feed(piece) == plain.feed(piece)
            assert native.mixed_endings == plain.mixed_endings
            at += n
        assert native.finish() == plain.finish()
