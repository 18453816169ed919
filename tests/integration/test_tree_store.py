"""A range's new leaves go into row_leaves without ON CONFLICT's lookup each when none is
stored yet, and the usual way when the sample that decided it missed a stored one: either
way every leaf is stored once, and ``new_leaves`` names exactly the copies stored anew."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from psycopg import sql
from psycopg.rows import dict_row
from tests.conftest import index_scans, migrated_database

from sluiceway import db, tree

NEW = sql.Identifier("new_leaves")
ROWS = 20 * db.UNPROBED_SAMPLE  # leaves of about 7 rows: about 2,900 of them


@pytest.fixture
def conn(stack: Any) -> Iterator[psycopg.Connection[dict[str, Any]]]:
    """A connection to a new, migrated database, and a range's rows ``src`` (pos,
    row_hash, logical_id) cut into leaves (tree.LEAVES)."""
    with (
        migrated_database(stack, "leaves") as url,
        psycopg.connect(url, row_factory=dict_row) as conn,
    ):
        conn.execute("CREATE TEMP TABLE src (pos bigint, row_hash bytea, logical_id text)")
        with conn.cursor().copy("COPY src (pos, row_hash) FROM STDIN") as copy:
            for n in range(1, ROWS + 1):
                copy.write_row((n, hashlib.sha256(f"leaf row {n}".encode()).digest()))
        tree.cut(conn, sql.Identifier("src"), keyed=False, dense=True)
        yield conn


def _leaves(conn: psycopg.Connection[dict[str, Any]]) -> list[dict[str, Any]]:
    return conn.execute(
        sql.SQL("SELECT leaf_hash, n, hs, leaf_no, last_pos FROM {} ORDER BY leaf_no").format(
            tree.LEAVES
        )
    ).fetchall()


def _new(conn: psycopg.Connection[dict[str, Any]]) -> list[tuple[int, int, int]]:
    return [
        (r["row_count"], r["first_pos"], r["last_pos"])
        for r in conn.execute(sql.SQL("SELECT * FROM {} ORDER BY first_pos").format(NEW))
    ]


def test_a_range_of_new_leaves_is_stored_without_looking_each_up(
    conn: psycopg.Connection[dict[str, Any]],
) -> None:
    # Given a range whose leaves row_leaves has none of
    leaves = _leaves(conn)
    assert len(leaves) > 2 * db.UNPROBED_SAMPLE

    # When they are stored
    tree.store(conn, new_leaves=NEW)

    # Then each is stored, each is new, and row_leaves' key was searched only for the sample
    assert index_scans(conn, "dsa_core.row_leaves_pkey") <= db.UNPROBED_SAMPLE
    assert _new(conn) == [(r["n"], r["leaf_no"], r["last_pos"]) for r in leaves]
    stored = conn.execute("SELECT count(*) AS n FROM dsa_core.row_leaves").fetchone()
    assert stored == {"n": len(leaves)}


def test_a_stored_leaf_the_sample_missed_is_not_stored_again(
    conn: psycopg.Connection[dict[str, Any]],
) -> None:
    # Given a range whose last leaf (past the sample's first leaves) is stored already
    leaves = _leaves(conn)
    last = leaves[-1]
    conn.execute(
        "INSERT INTO dsa_core.row_leaves (leaf_hash, row_count, row_hashes) VALUES (%s, %s, %s)",
        (last["leaf_hash"], last["n"], last["hs"]),
    )

    # When the range's leaves are stored
    tree.store(conn, new_leaves=NEW)

    # Then they were looked up after all, every leaf is stored once, and the stored one is
    # not among the new
    assert index_scans(conn, "dsa_core.row_leaves_pkey") >= len(leaves)
    assert _new(conn) == [(r["n"], r["leaf_no"], r["last_pos"]) for r in leaves[:-1]]
    stored = conn.execute("SELECT count(*) AS n FROM dsa_core.row_leaves").fetchone()
    assert stored == {"n": len(leaves)}
