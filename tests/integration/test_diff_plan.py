"""The diff's pairing step plans hash work over its never-analyzed source tables.

``versioning._unpaired`` leaves its source (every list, leaf or row entry of both sides) without
statistics. A nested loop over it would cost entries x keys; these tests EXPLAIN the statement
on sources of the sizes a 1% re-import of 1M rows gives, and check what it keeps against a
multiset pairing computed here.
"""

from __future__ import annotations

import hashlib
import random
from collections import defaultdict
from typing import Any

import psycopg
import pytest
from psycopg import sql

from sluiceway.versioning import unpaired_sql

Conn = psycopg.Connection[dict[str, Any]]
SOURCE, TARGET = sql.Identifier("plan_source"), sql.Identifier("plan_target")


def _entries(keys: int, unpaired_share: float, seed: int) -> list[tuple[str, bytes, int]]:
    """(side, key, order): every key once on each side, but a share of them on one side only
    or with an extra copy, in random order."""
    rng = random.Random(seed)
    out: list[tuple[str, bytes, int]] = []
    for n in range(keys):
        key = hashlib.sha256(f"{seed}/{n}".encode()).digest()
        sides = ["a", "b"]
        if rng.random() < unpaired_share:
            sides = rng.choice([["a"], ["b"], ["a", "a", "b"], ["a", "b", "b", "b"]])
        out += [(side, key, 0) for side in sides]
    rng.shuffle(out)
    return [(side, key, order) for order, (side, key, _) in enumerate(out)]


def _expected(entries: list[tuple[str, bytes, int]]) -> set[tuple[str, bytes, int]]:
    by_key: dict[tuple[str, bytes], list[int]] = defaultdict(list)
    for side, key, order in entries:
        by_key[side, key].append(order)
    kept = set()
    for (side, key), orders in by_key.items():
        other = len(by_key.get(("b" if side == "a" else "a", key), []))
        kept |= {(side, key, o) for o in sorted(orders)[other:]}
    return kept


def _nodes(plan: dict[str, Any]) -> list[dict[str, Any]]:
    return [plan, *(n for child in plan.get("Plans", []) for n in _nodes(child))]


@pytest.mark.parametrize(("keys", "unpaired_share"), [(150_000, 0.08), (20_000, 1.0)])
def test_the_pairing_hashes_its_unanalyzed_source_and_keeps_the_unpaired_copies(
    db: Conn, keys: int, unpaired_share: float
) -> None:
    # Given a source table of both sides' entries, never analyzed (as _unpaired leaves it)
    entries = _entries(keys, unpaired_share, seed=keys)
    with db.transaction():
        db.execute(
            sql.SQL(
                "CREATE TEMP TABLE {} (side text, leaf_hash bytea, start_row bigint) ON COMMIT DROP"
            ).format(SOURCE)
        )
        with db.cursor().copy(
            sql.SQL("COPY {} (side, leaf_hash, start_row) FROM STDIN").format(SOURCE)
        ) as copy:
            for entry in entries:
                copy.write_row(entry)
        statement = unpaired_sql(SOURCE, TARGET, "leaf_hash", "start_row")

        # When the pairing statement is planned and run
        explained = db.execute(sql.SQL("EXPLAIN (FORMAT JSON) {}").format(statement)).fetchone()
        assert explained is not None
        nodes = _nodes(next(iter(explained.values()))[0]["Plan"])
        db.execute(statement)
        kept = db.execute(
            sql.SQL("SELECT side, leaf_hash, start_row FROM {}").format(TARGET)
        ).fetchall()

    # Then the source is read twice, by sequential scans, with no nested loop over it
    types = [n["Node Type"] for n in nodes]
    assert "Nested Loop" not in types, types
    scans = [n for n in nodes if n.get("Relation Name") == "plan_source"]
    assert [n["Node Type"] for n in scans] == ["Seq Scan", "Seq Scan"], types
    assert {"Hash Join", "Aggregate"} <= set(types), types
    # and it keeps exactly the copies without a partner: the n-th copy pairs with the n-th
    got = {(r["side"], bytes(r["leaf_hash"]), r["start_row"]) for r in kept}
    assert got == _expected(entries)
    assert 0 < len(got) < len(entries)
