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


@pytest.mark.parametrize(("seed", "count", "step"), [(1, 1, 1), (2, 40, 1), (3, 6000, 3)])
def test_leaves_are_cut_where_the_rule_says(db: Conn, seed: int, count: int, step: int) -> None:
    hashes = _hashes(seed, count)
    # positions with gaps when step > 1: only their order may count
    with db.transaction(force_rollback=True):  # nothing stays: these rows are not stored
        db.execute(
            "CREATE TEMP TABLE cut_src (pos bigint, row_hash bytea, logical_id text) ON COMMIT DROP"
        )
        with db.cursor().copy("COPY cut_src (pos, row_hash) FROM STDIN") as copy:
            for n, h in enumerate(hashes):
                copy.write_row((7 + n * step, h))
        lists = tree.build(db, sql.Identifier("cut_src"), keyed=False)
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
