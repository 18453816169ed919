"""Leaf cuts: tree.build's SQL cuts rows exactly where the rule says (a model in Python)."""

from __future__ import annotations

import hashlib
import random
from typing import Any

import psycopg
import pytest
from psycopg import sql

from sluiceway import tree

Conn = psycopg.Connection[dict[str, Any]]


def _model_leaves(hashes: list[bytes]) -> list[list[bytes]]:
    """The rule, row by row: a leaf ends at a natural cut (last byte's three low bits zero)
    or at the MAX_LEAF_ROWS-th row since the last natural cut."""
    leaves: list[list[bytes]] = [[]]
    since_natural = 0
    for h in hashes:
        leaves[-1].append(h)
        since_natural += 1
        if h[31] & 7 == 0:
            since_natural = 0
            leaves.append([])
        elif since_natural % tree.MAX_LEAF_ROWS == 0:
            leaves.append([])
    return [leaf for leaf in leaves if leaf]


def _hashes(seed: int, count: int) -> list[bytes]:
    rng = random.Random(seed)
    out: list[bytes] = []
    while len(out) < count:
        h = bytearray(rng.randbytes(32))
        # now and then, and first of all, a long run with no natural cut: the cap cuts it
        if not out or rng.random() < 0.01:
            for _ in range(rng.randint(17, 70)):
                h = bytearray(rng.randbytes(32))
                h[31] |= 1
                out.append(bytes(h))
        else:
            out.append(bytes(h))
    return out[:count]


def _rows_table(db: Conn, name: str, hashes: list[bytes], first: int = 1, step: int = 1) -> None:
    """A temporary table (pos, row_hash, logical_id) of ``hashes``, as tree.build reads."""
    table = sql.Identifier(name)
    db.execute(
        sql.SQL("CREATE TEMP TABLE {} (pos bigint, row_hash bytea, logical_id text)").format(table)
    )
    with db.cursor().copy(sql.SQL("COPY {} (pos, row_hash) FROM STDIN").format(table)) as copy:
        for n, h in enumerate(hashes):
            copy.write_row((first + n * step, h))


def _range_table(db: Conn, source: str, name: str, start: int, end: int) -> None:
    """Rows [start, end) of ``source``, numbered from 1, as a range builds them."""
    db.execute(
        sql.SQL(
            "CREATE TEMP TABLE {} AS SELECT pos - %s + 1 AS pos, row_hash, logical_id "
            "FROM {} WHERE pos >= %s AND pos < %s"
        ).format(sql.Identifier(name), sql.Identifier(source)),
        (start, start, end),
    )


@pytest.mark.parametrize(
    ("seed", "count", "first", "step", "dense"),
    [
        (1, 1, 7, 1, False),
        (2, 40, 7, 1, False),
        (3, 6000, 7, 3, False),
        # positions 1..N, as a range's rows come from COPY: cut counting from pos itself
        (4, 1, 1, 1, True),
        (5, 17, 1, 1, True),
        (6, 6000, 1, 1, True),
        (7, 20000, 1, 1, True),
    ],
)
def test_leaves_are_cut_where_the_rule_says(
    db: Conn, seed: int, count: int, first: int, step: int, dense: bool
) -> None:
    hashes = _hashes(seed, count)
    # positions with gaps when step > 1: only their order may count
    with db.transaction(force_rollback=True):  # nothing stays: these rows are not stored
        _rows_table(db, "cut_src", hashes, first=first, step=step)
        tree.cut(db, sql.Identifier("cut_src"), keyed=False, dense=dense)
        lists = tree.store(db)
        stored = db.execute(
            "SELECT ll.leaf_hashes FROM unnest(%s::bytea[]) WITH ORDINALITY g(list_hash, n) "
            "JOIN dsa_core.leaf_lists ll USING (list_hash) ORDER BY g.n",
            ([ref.list_hash for ref in lists],),
        ).fetchall()
    got = [
        bytes(r["leaf_hashes"])[i : i + 32]
        for r in stored
        for i in range(0, len(r["leaf_hashes"]), 32)
    ]
    want = [hashlib.sha256(b"".join(leaf)).digest() for leaf in _model_leaves(hashes)]
    assert got == want
    assert sum(ref.row_count for ref in lists) == count


def _crafted(seed: int, count: int, seam: int, first: str) -> list[bytes]:
    """Rows where a range starting at pos ``seam`` begins with a leaf that the whole does
    not have (the whole's leaf there starts 3 rows earlier, after a natural cut) and whose
    hash ends a list, so the range's first list ends where the whole's lists do not.

    ``first``: how that leaf ends. "natural": at a natural cut, 6 rows in. "cap": at the
    cap, 16 rows in, where the whole's leaves (cut by the cap 3 rows earlier) are in the
    middle of a 3-row leaf. "cap, tail ends a list": the same, and those 3 rows, as a leaf
    of their own, have a hash that ends a list: what a rebuild of the seam ending there
    has last, a leaf that is not whole yet."""
    rng = random.Random(seed)
    hashes = [rng.randbytes(32) for _ in range(count)]

    def cut(i: int, natural: bool) -> None:
        h = bytearray(hashes[i - 1])
        h[31] = (h[31] & ~7) if natural else (h[31] | 1)
        hashes[i - 1] = bytes(h)

    def ends_list(i: int, length: int) -> bool:
        rows = b"".join(hashes[i - 1 : i - 1 + length])
        return hashlib.sha256(rows).digest()[31] == 0  # tree.LIST_BOUNDARY, 8 bits

    def retry(i: int) -> None:  # other bytes for row i, not its cut
        hashes[i - 1] = rng.randbytes(31) + bytes([rng.randrange(256) | 1])

    length = 6 if first == "natural" else tree.MAX_LEAF_ROWS  # the range's first leaf
    cut(seam - 4, True)
    for i in range(seam - 3, seam + length - 1):
        cut(i, False)
    cut(seam + length - 1, first == "natural")
    if first == "cap, tail ends a list":
        tail = seam + tree.MAX_LEAF_ROWS - 3
        while not ends_list(tail, 3):
            retry(tail)
    while not ends_list(seam, length):
        retry(seam + 1)
    return hashes


@pytest.mark.parametrize("first", ["natural", "cap", "cap, tail ends a list"])
def test_a_range_whose_first_leaf_ends_a_list_is_stitched_as_the_whole(
    db: Conn, first: str
) -> None:
    # Given rows whose second range starts with a leaf the whole does not have, one that
    # happens to end a list (cut at the first natural cut, or by the cap counted from the
    # range's start); one range in 256 or so starts like that by chance
    count, seam = 9_000, 4_001
    hashes = _crafted(11, count, seam, first)
    with db.transaction(force_rollback=True):
        _rows_table(db, "st_all", hashes)
        whole = tree.build(db, sql.Identifier("st_all"), keyed=False)
        _range_table(db, "st_all", "st_a", 1, seam)
        _range_table(db, "st_all", "st_b", seam, count + 1)
        ranges = [tree.build(db, sql.Identifier(t), keyed=False) for t in ("st_a", "st_b")]
        # (the second range's first list is that one leaf)
        assert ranges[1][0].row_count == (6 if first == "natural" else tree.MAX_LEAF_ROWS)
        # When they are stitched, then the lists are the whole's
        assert tree.stitch(db, ranges) == whole


def _with_a_list_cap_run(seed: int, count: int, start: int, leaves: int) -> list[bytes]:
    """Random rows in which the ``leaves`` leaves from row ``start`` on have no list
    boundary, so the list cap cuts them (rows are changed only in bytes that do not move a
    leaf cut, until no leaf hash there ends a list)."""
    rng = random.Random(seed)
    hashes = [rng.randbytes(32) for _ in range(count)]
    while True:
        at, seen, bad = 0, 0, []
        for leaf in _model_leaves(hashes):
            if at >= start and seen < leaves:
                seen += 1
                if hashlib.sha256(b"".join(leaf)).digest()[31] == 0:
                    bad.append(at)
            at += len(leaf)
        if not bad:
            return hashes
        for i in bad:  # a new first row, with the same last byte: the same cuts
            hashes[i] = rng.randbytes(31) + hashes[i][31:]


def test_ranges_cut_anywhere_stitch_to_the_whole_lists(db: Conn) -> None:
    # Given 30,000 rows in which a stretch of more than two list caps has no list boundary,
    # built at once and built as ranges cut at random places, some inside that stretch
    count = 30_000
    hashes = _with_a_list_cap_run(5, count, 6_000, 2_600)
    rng = random.Random(7)
    with db.transaction(force_rollback=True):
        _rows_table(db, "sw_all", hashes)
        whole = tree.build(db, sql.Identifier("sw_all"), keyed=False)
        # the cap cut twice (lists of MAX_LIST_LEAVES leaves, not ending by their hash)
        caps = db.execute(
            "SELECT count(*) AS n FROM dsa_core.leaf_lists WHERE list_hash = ANY(%s) "
            "AND leaf_count = %s",
            ([x.list_hash for x in whole], tree.MAX_LIST_LEAVES),
        ).fetchone()
        assert caps is not None
        assert caps["n"] >= 2
        for trial in range(12):
            seams = sorted(rng.sample(range(2, count), 3))
            if trial < 4:  # one seam inside the capped stretch
                seams[1] = rng.randrange(6_500, 20_000)
                seams.sort()
            ranges = []
            for n, (a, b) in enumerate(zip([1, *seams], [*seams, count + 1], strict=True)):
                _range_table(db, "sw_all", f"sw_{trial}_{n}", a, b)
                ranges.append(tree.build(db, sql.Identifier(f"sw_{trial}_{n}"), keyed=False))
            # When they are stitched, then they are the whole's lists, wherever the seams fell
            assert tree.stitch(db, ranges) == whole, seams
