"""Structural sharing: a commit's rows as content-addressed leaves and leaf lists.

A commit is ``commit_chunks -> leaf_lists -> row_leaves -> row_store`` (see migration 0005).
Rows are cut into leaves where a row's hash ends in three zero bits (and after 16 rows without
such a cut), so a leaf boundary depends only on the rows around it: editing a row changes its leaf, inserting one changes one leaf, and
every other leaf is the same bytes as before and is stored once. Long row sequences (keyed
commits) are cut into several lists the same way, one level up, by leaf hash.

Everything here is set-based SQL over a temporary table ``(pos, row_hash, logical_id)``.
"""

from __future__ import annotations

from dataclasses import dataclass

from psycopg import sql

from . import db

# A row ends its leaf when its hash's last byte has three zero low bits (a "natural" cut), or
# when it is the 16th row since the last natural cut: leaves of 7 rows on average, never more
# than 16. What a 1% change rewrites is the leaves it touches, and a random row sits in a big
# leaf more often than in a small one, so the cap matters as much as the mean; every commit
# also writes its list of leaf hashes (36 bytes a leaf). 8 and 16 minimise the sum (see
# bench/versioning.py and docs/architecture.md).
NATURAL_CUT = "(get_byte({h}, 31) & 7) = 0"
MAX_LEAF_ROWS = 16
# A leaf ends its list (keyed commits only) when 12 more bits are zero: ~4,096 leaves a list.
LIST_BOUNDARY = "(get_byte({h}, 31) = 0 AND (get_byte({h}, 30) & 15) = 0)"
EMPTY_LIST_HASH = bytes.fromhex("e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855")


@dataclass(frozen=True)
class ListRef:
    list_hash: bytes
    row_count: int


def build(
    conn: db.Conn, source: sql.Composable, *, keyed: bool, split_lists: bool
) -> list[ListRef]:
    """Store the leaves and lists of the rows in ``source`` (pos, row_hash, logical_id).

    Rows are taken in ``pos`` order. Returns the lists in order (one list unless
    ``split_lists``); an empty source gives the one empty list.
    """
    leaves, lists = sql.Identifier("sluiceway_leaves"), sql.Identifier("sluiceway_lists")
    conn.execute(sql.SQL("DROP TABLE IF EXISTS {}, {}").format(leaves, lists))
    ids = sql.SQL("array_agg(logical_id ORDER BY pos)" if keyed else "NULL::text[]")
    conn.execute(
        sql.SQL(
            """
            CREATE TEMP TABLE {leaves} ON COMMIT DROP AS
            SELECT leaf_no, n, hs, ids,
                   CASE WHEN ids IS NULL THEN sha256(hs)
                        ELSE sha256(hs || convert_to(ids::text, 'UTF8')) END AS leaf_hash
            FROM (SELECT leaf_no, count(*)::int AS n,
                         string_agg(row_hash, ''::bytea ORDER BY pos) AS hs, {ids} AS ids
                  FROM (SELECT pos, row_hash, logical_id,
                               sum(brk) OVER (ORDER BY pos) - brk AS leaf_no
                        FROM (SELECT pos, row_hash, logical_id,
                                     (nat OR row_number() OVER (PARTITION BY run ORDER BY pos)
                                             % {cap} = 0)::int AS brk
                              FROM (SELECT pos, row_hash, logical_id, nat,
                                           sum(nat::int) OVER (ORDER BY pos) - nat::int AS run
                                    FROM (SELECT pos, row_hash, logical_id,
                                                 {natural} AS nat FROM {source}) a) b) c) d
                  GROUP BY leaf_no) e
            """
        ).format(
            leaves=leaves,
            ids=ids,
            natural=sql.SQL(NATURAL_CUT.format(h="row_hash")),
            cap=sql.Literal(MAX_LEAF_ROWS),
            source=source,
        )
    )
    conn.execute(
        sql.SQL(
            "INSERT INTO dsa_core.row_leaves (leaf_hash, row_count, row_hashes, logical_ids) "
            "SELECT DISTINCT ON (leaf_hash) leaf_hash, n, hs, ids FROM {} ORDER BY leaf_hash "
            "ON CONFLICT (leaf_hash) DO NOTHING"
        ).format(leaves)
    )
    list_break = sql.SQL(LIST_BOUNDARY.format(h="leaf_hash")) if split_lists else sql.SQL("false")
    conn.execute(
        sql.SQL(
            """
            CREATE TEMP TABLE {lists} ON COMMIT DROP AS
            SELECT list_no, count(*)::int AS leaf_count, sum(n)::bigint AS row_count,
                   string_agg(leaf_hash, ''::bytea ORDER BY leaf_no) AS leaf_hashes,
                   array_agg(ends::int ORDER BY leaf_no) AS leaf_ends
            FROM (SELECT leaf_no, n, leaf_hash, list_no,
                         sum(n) OVER (PARTITION BY list_no ORDER BY leaf_no) AS ends
                  FROM (SELECT leaf_no, n, leaf_hash,
                               sum(brk) OVER (ORDER BY leaf_no) - brk AS list_no
                        FROM (SELECT leaf_no, n, leaf_hash, ({list_break})::int AS brk
                              FROM {leaves}) a) b) c
            GROUP BY list_no
            """
        ).format(lists=lists, leaves=leaves, list_break=list_break)
    )
    rows = conn.execute(
        sql.SQL(
            """
            WITH ins AS (
                INSERT INTO dsa_core.leaf_lists
                    (list_hash, leaf_count, row_count, leaf_hashes, leaf_ends)
                SELECT DISTINCT ON (sha256(leaf_hashes)) sha256(leaf_hashes), leaf_count,
                       row_count, leaf_hashes, leaf_ends
                FROM {lists} ORDER BY sha256(leaf_hashes)
                ON CONFLICT (list_hash) DO NOTHING)
            SELECT sha256(leaf_hashes) AS list_hash, row_count FROM {lists} ORDER BY list_no
            """
        ).format(lists=lists)
    ).fetchall()
    conn.execute(sql.SQL("DROP TABLE {}, {}").format(leaves, lists))
    if not rows:
        return [ListRef(EMPTY_LIST_HASH, 0)]
    return [ListRef(bytes(r["list_hash"]), int(r["row_count"])) for r in rows]


def write_chunks(conn: db.Conn, commit_key: int, lists: list[ListRef]) -> int:
    """Point a new commit at its lists, in order; returns its row count."""
    offset = 0
    with conn.cursor().copy(
        "COPY dsa_core.commit_chunks (commit_key, chunk_no, row_offset, row_count, list_hash) "
        "FROM STDIN"
    ) as copy:
        for n, ref in enumerate(lists):
            copy.write_row((commit_key, n, offset, ref.row_count, ref.list_hash))
            offset += ref.row_count
    return offset


def commit_lists(conn: db.Conn, commit_id: str) -> list[ListRef]:
    """A commit's lists, in order."""
    rows = conn.execute(
        "SELECT k.list_hash, k.row_count FROM dsa_core.commit_chunks k "
        "JOIN dsa_core.commits c ON c.commit_key = k.commit_key "
        "WHERE c.commit_id = %s ORDER BY k.chunk_no",
        (commit_id,),
    ).fetchall()
    return [ListRef(bytes(r["list_hash"]), int(r["row_count"])) for r in rows]


def same_content(a: list[ListRef], b: list[ListRef]) -> bool:
    """True when two commits' lists are identical (empty lists do not count)."""
    return [x for x in a if x.row_count] == [x for x in b if x.row_count]
