"""Prototypes, not built: re-imports that recognise unchanged stretches of the file's bytes.

Usage: python bench/block_reuse.py [--rows 500000] [--changed-every 100] [--runs 2]
       [--block-lines 8]

Issue 8 asks a re-import of the 1M file with 1% of rows changed to take <= 0.5x the first
import. load.py's re-import still COPYs, hashes and cuts every row to learn which changed. This
measures two designs that would skip most of that, on one range and one backend, on an
embedded PostgreSQL of its own (no S3, no state machine; bench/README.md, "block_reuse.py").

Both cut the range's bytes into blocks of whole CSV records, by content, in the worker: a block
ends after a record whose last line's CRC-32 is 0 modulo ``--block-lines`` (so an edit moves
only the cuts next to it), or at 4x that many lines. A block's address is the sha256 of its
bytes. A re-import looks its blocks up, COPYs only the blocks not found and hashes only their
rows.

- **row memo**: leaves stay as load.py cuts them (by row hash). A memo keeps each block's row
  hashes; a re-import takes the known blocks' row hashes from it, then cuts every row into
  leaves and profiles and stores the new ones as load.py does (rows of known blocks that fall
  in new leaves read their values from row_store).
- **leaf blocks**: a block's records are one leaf. A memo keeps each block's leaf hash and
  profile; a known block costs nothing a row. A first import is made the same way.

Every way runs in a transaction (re-imports rolled back, so each run finds the same store), and
each re-import must give the same rows in the same order (a digest of the lists' row hashes)
and the same type profile of the range, or the script stops. The last lines print each way's first import and re-import and their ratio.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import tempfile
import time
import zlib
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql
from psycopg.rows import dict_row

from sluiceway import db, load, schema, tree
from sluiceway.local.stack import start_embedded_postgres
from sluiceway.sample import COLUMNS, write_csv
from sluiceway.settings import Settings

Conn = psycopg.Connection[dict[str, Any]]
Block = tuple[bytes, int, int, int]  # sha256, byte start, byte end, records
RAW, HASHED = sql.Identifier("sluiceway_raw"), sql.Identifier("sluiceway_hashed")
BLOCKS, KNOWN = sql.Identifier("reuse_blocks"), sql.Identifier("reuse_known")
ROW_MEMO, LEAF_MEMO = sql.Identifier("reuse_row_memo"), sql.Identifier("reuse_leaf_memo")
GAPS, GAP_VALS = sql.Identifier("reuse_gaps"), sql.Identifier("reuse_gap_vals")
STORED = sql.Identifier("reuse_stored")


def cut_blocks(body: bytes, lines_per_block: int) -> list[Block]:
    """The blocks of ``body`` (whole CSV records, ending with a newline)."""
    out: list[Block] = []
    cap = 4 * lines_per_block
    start = pos = records = lines = quotes = 0
    for line in body.split(b"\n")[:-1]:
        pos += len(line) + 1
        lines += 1
        quotes += line.count(b'"')
        if quotes % 2:  # inside a quoted field: the record goes on
            continue
        records += 1
        if zlib.crc32(line) % lines_per_block == 0 or lines >= cap:
            out.append((hashlib.sha256(body[start:pos]).digest(), start, pos, records))
            start, records, lines = pos, 0, 0
    if pos > start:
        out.append((hashlib.sha256(body[start:pos]).digest(), start, pos, records))
    return out


def numbered(blocks: list[Block]) -> list[tuple[int, bytes, int, int]]:
    """(block_no, digest, first_pos, records): each block's first row's position in the range."""
    rows, first = [], 1
    for no, (digest, _start, _end, n) in enumerate(blocks):
        rows.append((no, digest, first, n))
        first += n
    return rows


def not_found(
    body: bytes, blocks: list[Block], rows: list[tuple[int, bytes, int, int]], found: set[int]
) -> tuple[list[tuple[int, int, int]], list[bytes]]:
    """The blocks not found: (block_no, first ord in the raw table, first pos), and their bytes
    (neighbours in one piece)."""
    new: list[tuple[int, int, int]] = []
    spans: list[tuple[int, int]] = []
    ords = 1
    for (no, _digest, first_pos, n), (_d, start, end, _n) in zip(rows, blocks, strict=True):
        if no not in found:
            new.append((no, ords, first_pos))
            if spans and spans[-1][1] == start:  # next to the last: one write
                spans[-1] = (spans[-1][0], end)
            else:
                spans.append((start, end))
            ords += n
    return new, [body[start:end] for start, end in spans]


def copy_bytes(conn: Conn, pieces: list[bytes]) -> None:
    """``pieces`` COPYed into a new raw table, as a range's load does."""
    conn.execute(sql.SQL("DROP TABLE IF EXISTS {}, {}").format(RAW, HASHED))
    conn.execute(load.create_raw_table(RAW, len(COLUMNS)))
    idents = sql.SQL(", ").join(sql.Identifier(f"c{i}") for i in range(1, len(COLUMNS) + 1))
    with conn.cursor().copy(
        sql.SQL("COPY {} ({}) FROM STDIN (FORMAT csv)").format(RAW, idents)
    ) as copy:
        for piece in pieces:
            copy.write(piece)


def blocks_table(conn: Conn, rows: list[tuple[int, bytes, int, int]]) -> None:
    conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(BLOCKS))
    conn.execute(
        sql.SQL(
            "CREATE TEMP TABLE {} (block_no int, digest bytea, first_pos bigint, n int) "
            "ON COMMIT DROP"
        ).format(BLOCKS)
    )
    with conn.cursor().copy(sql.SQL("COPY {} FROM STDIN").format(BLOCKS)) as copy:
        for row in rows:
            copy.write_row(row)
    conn.execute(sql.SQL("ANALYZE {}").format(BLOCKS))


def sample_masks(conn: Conn) -> list[int | None]:
    sample = schema.sample_masks(conn, RAW, len(COLUMNS))
    return [sample[i] for i in load.sorted_order(COLUMNS)]


def row_codes(sample: list[int | None]) -> list[sql.Composable]:
    order = load.sorted_order(COLUMNS)
    return schema.row_codes([sql.Identifier(f"c{i + 1}") for i in order], sample)


def hash_new_rows(
    conn: Conn, codes: list[sql.Composable], new: list[tuple[int, int, int]], everything: bool
) -> None:
    """load.hash_rows over the raw table, each row given its block and its position in the
    range: ``new`` (block_no, first ord in the raw table, first pos) of the blocks COPYed."""
    text = load.hash_rows(RAW, HASHED, COLUMNS, key=sql.SQL("NULL"), codes=codes).as_string(conn)
    if everything:  # every block COPYed: a row's ord is its pos
        select = "SELECT block_no, ord AS pos,"
        inner = "width_bucket(ord, %(s)s::bigint[]) - 1 AS block_no"
    else:  # the block found once, by a binary search of the blocks' first ords
        select = (
            "SELECT (%(b)s::int[])[k] AS block_no, "
            "ord - (%(s)s::bigint[])[k] + (%(f)s::bigint[])[k] AS pos,"
        )
        inner = "width_bucket(ord, %(s)s::bigint[]) AS k"
    text = text.replace("SELECT ord AS pos,", select, 1)
    text = text.replace("(SELECT ord,", f"(SELECT ord, {inner},", 1)
    conn.execute(
        text,
        {
            "b": [n[0] for n in new] or [0],
            "s": [n[1] for n in new] or [1],
            "f": [n[2] for n in new] or [1],
        },
    )


def found(conn: Conn, refs: list[tree.ListRef], clock: Clock) -> str:
    """What a way made: the digest of its rows (:func:`rows_digest`) and its range's profile
    (but the count of rows it tested)."""
    profile = {k: v for k, v in clock.profile.items() if k != "tested_rows"}
    return f"rows {rows_digest(conn, refs)}, profile {json.dumps(profile, sort_keys=True)}"


def rows_digest(conn: Conn, refs: list[tree.ListRef]) -> str:
    """sha256 of the row hashes of ``refs``'s lists, in order: the same rows, whatever leaves."""
    row = conn.execute(
        "SELECT sha256(string_agg(substring(rl.row_hashes FROM (i - 1) * 32 + 1 FOR 32), "
        "''::bytea ORDER BY l.o, j, i)) AS h "
        "FROM unnest(%s::bytea[]) WITH ORDINALITY l(lh, o) "
        "JOIN dsa_core.leaf_lists ll ON ll.list_hash = l.lh "
        "CROSS JOIN LATERAL generate_series(1, ll.leaf_count) j "
        "JOIN dsa_core.row_leaves rl "
        "  ON rl.leaf_hash = substring(ll.leaf_hashes FROM (j - 1) * 32 + 1 FOR 32) "
        "CROSS JOIN LATERAL generate_series(1, rl.row_count) i",
        ([r.list_hash for r in refs],),
    ).fetchone()
    assert row is not None
    return bytes(row["h"]).hex()[:16]


class Clock:
    """Seconds per named step; ``total`` is their sum (what a caller does after is not counted)."""

    def __init__(self) -> None:
        self.steps: dict[str, float] = {}
        self.last = time.perf_counter()
        self.profile: dict[str, Any] = {}  # the range's type profile, as the way found it

    def step(self, name: str) -> None:
        now = time.perf_counter()
        self.steps[name] = self.steps.get(name, 0.0) + now - self.last
        self.last = now

    @property
    def total(self) -> float:
        return sum(self.steps.values())


# -- load.py as it is -----------------------------------------------------------------------


def first_today(conn: Conn, body: bytes) -> tuple[list[tree.ListRef], Clock]:
    clock = Clock()
    copy_bytes(conn, [body])
    clock.step("COPY")
    codes = row_codes(sample_masks(conn))
    conn.execute(load.hash_rows(RAW, HASHED, COLUMNS, key=sql.SQL("NULL"), codes=codes))
    clock.step("hash")
    tree.cut(conn, HASHED, keyed=False, codes=len(codes), dense=True)
    clock.profile = load.leaves_profile(conn, sorted(COLUMNS))
    refs = tree.store(conn, new_leaves=load._NEW_LEAVES)
    clock.step("leaves and lists")
    load._insert_rows_of_new_leaves(conn, HASHED, sum(r.row_count for r in refs), 1)
    clock.step("rows")
    return refs, clock


def again_today(conn: Conn, body: bytes) -> tuple[list[tree.ListRef], Clock]:
    clock = Clock()
    copy_bytes(conn, [body])
    clock.step("COPY")
    sample = sample_masks(conn)
    conn.execute(load.hash_rows(RAW, HASHED, COLUMNS, key=sql.SQL("NULL")))
    clock.step("hash")
    tree.cut(conn, HASHED, keyed=False, codes=0, dense=True)
    clock.profile = load._profile_new_leaves(conn, HASHED, sorted(COLUMNS), sample)
    refs = tree.store(conn, stored=load._KNOWN)
    load.insert_new_rows(conn, load._FRESH, 1)
    clock.step("cut, profile and store")
    return refs, clock


# -- row memo: a block's row hashes --------------------------------------------------------


def write_row_memo(conn: Conn, blocks: list[Block]) -> None:
    rows = numbered(blocks)
    blocks_table(conn, rows)
    conn.execute(
        sql.SQL(
            "INSERT INTO {memo} (digest, row_hashes) "
            "SELECT b.digest, h.hs FROM (SELECT width_bucket(pos, %s::bigint[]) - 1 AS block_no, "
            "string_agg(row_hash, ''::bytea ORDER BY pos) AS hs FROM {hashed} GROUP BY 1) h "
            "JOIN {blocks} b USING (block_no) ON CONFLICT (digest) DO NOTHING"
        ).format(memo=ROW_MEMO, hashed=HASHED, blocks=BLOCKS),
        ([r[2] for r in rows],),
    )


def again_row_memo(
    conn: Conn, body: bytes, lines_per_block: int
) -> tuple[list[tree.ListRef], Clock]:
    clock = Clock()
    blocks = cut_blocks(body, lines_per_block)
    clock.step("cut the bytes (worker)")
    rows = numbered(blocks)
    blocks_table(conn, rows)
    found = {
        int(r["block_no"])
        for r in conn.execute(
            sql.SQL("SELECT block_no FROM {} b JOIN {} m USING (digest)").format(BLOCKS, ROW_MEMO)
        ).fetchall()
    }
    clock.step("look the blocks up")
    new, pieces = not_found(body, blocks, rows, found)
    copy_bytes(conn, pieces)
    clock.step("COPY the new blocks")
    sample = sample_masks(conn)
    hash_new_rows(conn, [], new, everything=False)
    clock.step("hash the new blocks' rows")
    conn.execute(
        sql.SQL(
            "INSERT INTO {hashed} (pos, row_hash) SELECT b.first_pos + i - 1, "
            "substring(m.row_hashes FROM (i - 1) * 32 + 1 FOR 32) FROM {blocks} b "
            "JOIN {memo} m ON m.digest = b.digest CROSS JOIN LATERAL generate_series(1, b.n) i"
        ).format(hashed=HASHED, blocks=BLOCKS, memo=ROW_MEMO)
    )
    clock.step("the known blocks' rows from the memo")
    tree.cut(conn, HASHED, keyed=False, codes=0, dense=True)
    # rows of known blocks in leaves not stored: their values from row_store
    conn.execute(sql.SQL("DROP TABLE IF EXISTS {}, {}").format(GAPS, GAP_VALS))
    conn.execute(
        sql.SQL(
            "CREATE TEMP TABLE {gaps} ON COMMIT DROP AS SELECT h.pos, h.row_hash "
            "FROM (SELECT generate_series(l.leaf_no, l.last_pos) AS pos FROM {leaves} l "
            "WHERE NOT EXISTS (SELECT 1 FROM dsa_core.row_leaves r "
            "WHERE r.leaf_hash = l.leaf_hash AND r.profile IS NOT NULL)) p "
            "JOIN {hashed} h ON h.pos = p.pos AND h.vals IS NULL"
        ).format(gaps=GAPS, hashed=HASHED, leaves=tree.LEAVES)
    )
    with db.probing_by_index(conn):
        conn.execute(
            sql.SQL(
                "CREATE TEMP TABLE {out} ON COMMIT DROP AS SELECT g.pos, s.vals FROM (SELECT * "
                "FROM {gaps} ORDER BY row_hash OFFSET 0) g CROSS JOIN LATERAL (SELECT vals FROM "
                "dsa_core.row_store s WHERE s.row_hash = g.row_hash OFFSET 0) s"
            ).format(out=GAP_VALS, gaps=GAPS)
        )
    conn.execute(sql.SQL("ANALYZE {}").format(GAP_VALS))
    conn.execute(
        sql.SQL("UPDATE {hashed} h SET vals = g.vals FROM {g} g WHERE h.pos = g.pos").format(
            hashed=HASHED, g=GAP_VALS
        )
    )
    clock.profile = load._profile_new_leaves(conn, HASHED, sorted(COLUMNS), sample)
    refs = tree.store(conn, stored=load._KNOWN)
    load.insert_new_rows(conn, load._FRESH, 1)
    clock.step("cut, profile and store")
    return refs, clock


# -- leaf blocks: a block is a leaf ---------------------------------------------------------


def leaf_blocks(
    conn: Conn, body: bytes, lines_per_block: int, copy_all: bool = False
) -> tuple[list[tree.ListRef], Clock]:
    """A first import or a re-import, the same way: known blocks are leaves already.
    ``copy_all``: COPY every block (no lookups before the COPY) and hash only new ones."""
    clock = Clock()
    blocks = cut_blocks(body, lines_per_block)
    clock.step("cut the bytes (worker)")
    rows = numbered(blocks)
    blocks_table(conn, rows)
    conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(KNOWN))
    conn.execute(
        sql.SQL(
            "CREATE TEMP TABLE {k} ON COMMIT DROP AS SELECT b.block_no, b.first_pos, b.n, "
            "m.leaf_hash, m.profile FROM {b} b JOIN {memo} m ON m.digest = b.digest"
        ).format(k=KNOWN, b=BLOCKS, memo=LEAF_MEMO)
    )
    found = {
        int(r["block_no"])
        for r in conn.execute(sql.SQL("SELECT block_no FROM {}").format(KNOWN)).fetchall()
    }
    clock.step("look the blocks up")
    codes: list[sql.Composable]
    if copy_all:
        copy_bytes(conn, [body])
        clock.step("COPY the new blocks")
        codes = row_codes(sample_masks(conn))
        text = load.hash_rows(RAW, HASHED, COLUMNS, key=sql.SQL("NULL"), codes=codes)
        text_s = text.as_string(conn).replace(
            "SELECT ord AS pos,", "SELECT block_no, ord AS pos,", 1
        )
        text_s = text_s.replace(
            "(SELECT ord,", "(SELECT ord, width_bucket(ord, %(s)s::bigint[]) AS block_no,", 1
        )
        conn.execute(
            text_s + " WHERE NOT (%(k)s::bool[])[block_no]",
            {"s": [r[2] for r in rows], "k": [r[0] in found for r in rows]},
        )
    else:
        new, pieces = not_found(body, blocks, rows, found)
        copy_bytes(conn, pieces)
        clock.step("COPY the new blocks")
        codes = row_codes(sample_masks(conn))
        hash_new_rows(conn, codes, new, everything=not found)
    clock.step("hash the new blocks' rows")
    code_columns = [sql.Identifier(f"code{k}") for k in range(1, len(codes) + 1)]
    conn.execute(sql.SQL("DROP TABLE IF EXISTS {}, {}").format(tree.LEAVES, STORED))
    conn.execute(
        sql.SQL(
            "CREATE TEMP TABLE {leaves} ON COMMIT DROP AS "
            "SELECT leaf_no, last_pos, n, hs, NULL::text[] AS ids, sha256(hs) AS leaf_hash, "
            "profile FROM (SELECT min(pos) AS leaf_no, max(pos) AS last_pos, "
            "count(*)::int AS n, string_agg(row_hash, ''::bytea ORDER BY pos) AS hs, "
            "{profile} AS profile FROM {hashed} GROUP BY block_no) e "
            "UNION ALL SELECT first_pos, first_pos + n - 1, n, NULL, NULL, leaf_hash, profile "
            "FROM {known}"
        ).format(
            leaves=tree.LEAVES,
            profile=schema.and_codes(code_columns),
            hashed=HASHED,
            known=KNOWN,
        )
    )
    conn.execute(
        sql.SQL(
            "CREATE TEMP TABLE {} ON COMMIT DROP AS SELECT first_pos AS leaf_no FROM {}"
        ).format(STORED, KNOWN)
    )
    clock.step("leaves")
    clock.profile = load.leaves_profile(conn, sorted(COLUMNS))
    conn.execute(
        sql.SQL(
            "INSERT INTO {memo} (digest, leaf_hash, profile) SELECT b.digest, l.leaf_hash, "
            "l.profile FROM {leaves} l JOIN {b} b ON b.first_pos = l.leaf_no "
            "WHERE l.hs IS NOT NULL ON CONFLICT (digest) DO NOTHING"
        ).format(memo=LEAF_MEMO, leaves=tree.LEAVES, b=BLOCKS)
    )
    clock.step("profile and memo")
    refs = tree.store(conn, stored=STORED)
    clock.step("store leaves and lists")
    load.insert_new_rows(conn, HASHED, 1)
    clock.step("rows")
    return refs, clock


def vacuum(conn: Conn) -> None:
    conn.commit()
    conn.autocommit = True
    conn.execute("VACUUM ANALYZE dsa_core.row_store, dsa_core.row_leaves, dsa_core.leaf_lists")
    conn.autocommit = False


def report(name: str, clock: Clock) -> None:
    steps = ", ".join(f"{k} {v:.2f}" for k, v in clock.steps.items())
    print(f"  {name}: {clock.total:.2f} s ({steps})", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=500_000)
    parser.add_argument("--changed-every", type=int, default=100)
    parser.add_argument("--runs", type=int, default=2)
    parser.add_argument("--block-lines", type=int, default=8)
    args = parser.parse_args()
    lines = args.block_lines
    results: dict[str, tuple[float, float, str]] = {}
    with tempfile.TemporaryDirectory() as home:
        server, url = start_embedded_postgres(Path(home))
        try:
            db.migrate(Settings(home=Path(home), database_url=url))
            base = write_csv(Path(home) / "base.csv", args.rows).read_bytes()
            changed = write_csv(
                Path(home) / "changed.csv", args.rows, changed_every=args.changed_every
            ).read_bytes()
            base, changed = base.split(b"\n", 1)[1], changed.split(b"\n", 1)[1]  # headers
            with psycopg.connect(url, row_factory=dict_row) as conn:
                db.room_for_temp_tables(conn)
                conn.execute(
                    sql.SQL(
                        "CREATE UNLOGGED TABLE {} (digest bytea PRIMARY KEY, row_hashes bytea)"
                    ).format(ROW_MEMO)
                )
                conn.execute(
                    sql.SQL(
                        "CREATE UNLOGGED TABLE {} (digest bytea PRIMARY KEY, leaf_hash bytea, "
                        "profile int8[])"
                    ).format(LEAF_MEMO)
                )
                conn.commit()
                # 1. load.py's first import, and the row memo's extra work after it
                with conn.transaction():
                    _refs, clock = first_today(conn, base)
                    report("first import, load.py", clock)
                    first = clock.total
                    memo = Clock()
                    blocks = cut_blocks(base, lines)
                    memo.step("cut the bytes (worker)")
                    write_row_memo(conn, blocks)
                    memo.step("the memo")
                    report("the row memo's extra for it", memo)
                vacuum(conn)
                best: dict[str, float] = {}
                digests: dict[str, str] = {}
                for run in range(args.runs):
                    for way in ("today", "row memo") if run % 2 == 0 else ("row memo", "today"):
                        with conn.transaction(force_rollback=True):
                            refs, clock = (
                                again_today(conn, changed)
                                if way == "today"
                                else again_row_memo(conn, changed, lines)
                            )
                            digests[way] = found(conn, refs, clock)
                        report(f"run {run} re-import, {way}", clock)
                        best[way] = min(best.get(way, float("inf")), clock.total)
                results["load.py"] = (first, best["today"], digests["today"])
                results["row memo"] = (first + memo.total, best["row memo"], digests["row memo"])
                # 2. leaf blocks, each way on an empty store
                for name, copy_all in (("leaf blocks", False), ("leaf blocks, COPY all", True)):
                    conn.execute(
                        "TRUNCATE dsa_core.row_store, dsa_core.row_leaves, dsa_core.leaf_lists, "
                        "reuse_leaf_memo CASCADE"
                    )
                    vacuum(conn)
                    with conn.transaction():
                        _refs, clock = leaf_blocks(conn, base, lines, copy_all)
                        report(f"first import, {name}", clock)
                        first_leaf = clock.total
                    vacuum(conn)
                    again = float("inf")
                    for run in range(args.runs):
                        with conn.transaction(force_rollback=True):
                            refs, clock = leaf_blocks(conn, changed, lines, copy_all)
                            digest = found(conn, refs, clock)
                        report(f"run {run} re-import, {name}", clock)
                        again = min(again, clock.total)
                    results[name] = (first_leaf, again, digest)
        finally:
            server.cleanup()
    same = len({d for _f, _a, d in results.values()}) == 1
    assert same, f"the ways made different rows: {results}"
    first_today_s = results["load.py"][0]
    for name, (first_s, again_s, _d) in results.items():
        print(
            f"RESULT {name}: first import {first_s:.2f} s, re-import {again_s:.2f} s, "
            f"re-import / its first import {again_s / first_s:.2f}x, / load.py's first import "
            f"{again_s / first_today_s:.2f}x"
        )


if __name__ == "__main__":
    main()
