"""A range's two ways to its type profile, by the share of its rows that changed.

Usage: python bench/profile_paths.py [--rows 500000] [--runs 2]

load.py profiles a range one of two ways (``load._mostly_stored`` picks, from its first 256
rows): codes for every row while it hashes them ("inline", a first import), or, when most rows
are stored already, the stored leaves' profiles read by leaf hash and only the other leaves'
rows tested ("deferred", a re-import). This measures both on the same ranges to show where one
stops paying. On an embedded PostgreSQL of its own, migrated (no S3, no state machine), one
backend:

- a first range (``--rows`` rows of the benchmark CSV) is stored the inline way and committed;
- then, for files with every n-th row's amount changed, each way runs in a transaction that is
  rolled back, so every run finds the same rows and leaves stored. Timed: the hash step,
  the leaves, the profile, storing leaves and lists, and the new rows into row_store, which
  is everything of load.py's range after its COPY.

The last lines give, per share of changed rows, both times, their ratio, the rows the deferred
way tested, and which way the range's first rows would pick.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql
from psycopg.rows import dict_row

from sluiceway import db, load, schema, tree
from sluiceway.local.stack import start_embedded_postgres
from sluiceway.sample import COLUMNS, write_csv
from sluiceway.settings import Settings

RAW, HASHED = sql.Identifier("paths_raw"), sql.Identifier("paths_hashed")
CHANGED_EVERY = (1000, 100, 20, 10, 5, 3, 2)


def copy_range(conn: psycopg.Connection[dict[str, Any]], path: Path) -> None:
    """The CSV at ``path`` COPYed into a new raw table, as a range's load does."""
    db.room_for_temp_tables(conn)
    conn.execute(sql.SQL("DROP TABLE IF EXISTS {}, {}").format(RAW, HASHED))
    conn.execute(load.create_raw_table(RAW, len(COLUMNS)))
    idents = sql.SQL(", ").join(sql.Identifier(f"c{i}") for i in range(1, len(COLUMNS) + 1))
    with (
        conn.cursor().copy(
            sql.SQL("COPY {} ({}) FROM STDIN (FORMAT csv, HEADER)").format(RAW, idents)
        ) as copy,
        path.open("rb") as f,
    ):
        while block := f.read(1 << 20):
            copy.write(block)


def _range(conn: psycopg.Connection[dict[str, Any]], inline: bool) -> dict[str, Any]:
    """load.py's range after its COPY, unkeyed, one way; its profile and the seconds taken."""
    order, names = load.sorted_order(COLUMNS), sorted(COLUMNS)
    sample = schema.sample_masks(conn, RAW, len(COLUMNS))
    sample = [sample[i] for i in order]
    codes = schema.row_codes([sql.Identifier(f"c{i + 1}") for i in order], sample) if inline else []
    started = time.perf_counter()
    conn.execute(load.hash_rows(RAW, HASHED, COLUMNS, key=sql.SQL("NULL"), codes=codes))
    tree.cut(conn, HASHED, keyed=False, codes=len(codes), dense=True)
    if inline:
        found = load.leaves_profile(conn, names)
        refs = tree.store(conn, new_leaves=load._NEW_LEAVES)
        rows = sum(r.row_count for r in refs)
        load._insert_rows_of_new_leaves(conn, HASHED, rows, 1)
    else:
        found = load._profile_new_leaves(conn, HASHED, names, sample)
        tree.store(conn, stored=load._KNOWN)
        load.insert_new_rows(conn, load._FRESH, 1)
    found["seconds"] = time.perf_counter() - started
    return found


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=500_000)
    parser.add_argument("--runs", type=int, default=2)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as home:
        server, url = start_embedded_postgres(Path(home))
        try:
            db.migrate(Settings(home=Path(home), database_url=url))
            base = write_csv(Path(home) / "base.csv", args.rows)
            with psycopg.connect(url, row_factory=dict_row) as conn:
                with conn.transaction():
                    copy_range(conn, base)
                    first = _range(conn, inline=True)
                conn.execute("ANALYZE dsa_core.row_store, dsa_core.row_leaves")
                conn.commit()
                print(f"{args.rows:,} rows stored the inline way in {first['seconds']:.2f} s")
                results = []
                for every in CHANGED_EVERY:
                    path = write_csv(
                        Path(home) / f"every{every}.csv", args.rows, changed_every=every
                    )
                    best: dict[bool, dict[str, Any]] = {}
                    picks = None
                    for run in range(args.runs):
                        for inline in (run % 2 == 0, run % 2 != 0):
                            with conn.transaction(force_rollback=True):
                                copy_range(conn, path)
                                if picks is None:
                                    picks = load._mostly_stored(conn, RAW, COLUMNS)
                                found = _range(conn, inline)
                            if inline not in best or found["seconds"] < best[inline]["seconds"]:
                                best[inline] = found
                    same = {
                        k: v for k, v in best[True].items() if k not in ("seconds", "tested_rows")
                    }
                    other = {
                        k: v for k, v in best[False].items() if k not in ("seconds", "tested_rows")
                    }
                    assert same == other, (every, same, other)  # both ways, the same profile
                    results.append((every, best[True], best[False], picks))
                    print(
                        f"every {every:>4}th row changed: inline {best[True]['seconds']:.2f} s, "
                        f"deferred {best[False]['seconds']:.2f} s "
                        f"({best[False]['tested_rows']:,} rows tested)",
                        flush=True,
                    )
        finally:
            server.cleanup()
    for every, inline_run, deferred_run, picks in results:
        print(
            f"RESULT {100 / every:5.1f}% of rows changed: inline {inline_run['seconds']:.2f} s, "
            f"deferred {deferred_run['seconds']:.2f} s, deferred / inline "
            f"{deferred_run['seconds'] / inline_run['seconds']:.2f}x, "
            f"{deferred_run['tested_rows'] / args.rows:.0%} of rows tested; the range's first "
            f"rows pick {'deferred' if picks else 'inline'}"
        )


if __name__ == "__main__":
    main()
