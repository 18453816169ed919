"""A CSV range's blocks (sluiceway.blocks) are the same however its bytes arrive."""

from __future__ import annotations

import random

import pytest

from sluiceway import blocks

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
