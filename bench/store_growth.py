"""A range's row_store insert as the store grows: what a row costs into an empty store and into a full one.

Usage: python bench/store_growth.py [--range-rows 715000] [--steps 8]

On an embedded PostgreSQL of its own, migrated, with the stack's settings (no S3, no state
machine), one backend. Each step generates ``--range-rows`` rows of the benchmark CSV's shape
with a seed of its own (so no row is stored already: a first import's range), COPYs them into a
range's raw table and hashes them (load.hash_rows), then measures, in the same step:

- baseline: ``COPY`` of the step's file into an UNLOGGED, unindexed table of its own
  (import_vs_copy.copy_baseline, the baseline of bench/import_vs_copy.py and import_scale.py);
- probe: the insert's own lookup alone (the range's rows deduplicated and sorted by hash, each
  probing row_store's key for its hash, as load.insert_new_rows plans it), counted, not stored;
- insert: load.insert_new_rows itself. These rows are all new, so it takes a first import's
  way: a sample of them looked up, then the heap and the key's B-tree, with no lookup a row
  (the key's unique check still descends it once).

715,000 rows are about one 64 MiB range of that CSV, so eight steps hold a 10M-row import's
first 5.7M rows. The last lines give the first and the last step's microseconds a row, and
their ratio.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import Any

import psycopg
from import_vs_copy import copy_baseline  # scripts beside this one
from profile_paths import HASHED, RAW, copy_range
from psycopg import sql
from psycopg.rows import dict_row

from sluiceway import db, load
from sluiceway.local.stack import start_embedded_postgres
from sluiceway.sample import COLUMNS, write_csv
from sluiceway.settings import Settings

# load._INSERT_NEW_ROWS's lookup, counted instead of inserted
PROBE = (
    "SELECT count(*) AS n FROM (SELECT DISTINCT ON (row_hash) row_hash, vals FROM {} "
    "ORDER BY row_hash) h "
    "WHERE NOT EXISTS (SELECT 1 FROM dsa_core.row_store r WHERE r.row_hash = h.row_hash)"
)
SIZES = (
    "SELECT count(*) AS n, pg_relation_size('dsa_core.row_store') AS heap, "
    "pg_relation_size('dsa_core.row_store_pkey') AS key FROM dsa_core.row_store"
)


def _step(
    conn: psycopg.Connection[dict[str, Any]], url: str, path: Path, column_set: int
) -> dict[str, float]:
    copy_seconds = copy_baseline(url, path)
    with conn.transaction():
        copy_range(conn, path)
        conn.execute(load.hash_rows(RAW, HASHED, COLUMNS, key=sql.SQL("NULL")))
        with db.probing_by_index(conn):  # the probe alone, planned as the insert's
            started = time.perf_counter()
            found = conn.execute(sql.SQL(PROBE).format(HASHED)).fetchone()
            probe_seconds = time.perf_counter() - started
        started = time.perf_counter()
        load.insert_new_rows(conn, HASHED, column_set)
        insert_seconds = time.perf_counter() - started
    assert found is not None
    return {
        "copy": copy_seconds,
        "probe": probe_seconds,
        "insert": insert_seconds,
        "new": found["n"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--range-rows", type=int, default=715_000)
    parser.add_argument("--steps", type=int, default=8)
    args = parser.parse_args()
    n = args.range_rows
    steps: list[dict[str, float]] = []
    with tempfile.TemporaryDirectory() as home:
        server, url = start_embedded_postgres(Path(home))
        try:
            db.migrate(Settings(home=Path(home), database_url=url))
            with psycopg.connect(url, row_factory=dict_row, autocommit=True) as conn:
                conn.execute("SET max_parallel_workers_per_gather = 0")  # one backend
                found = conn.execute(
                    "INSERT INTO dsa_core.column_sets (columns) VALUES (%s) "
                    "RETURNING column_set_id",
                    (sorted(COLUMNS),),
                ).fetchone()
                assert found is not None
                for step in range(args.steps):
                    path = write_csv(Path(home) / f"step{step}.csv", n, seed=100 + step)
                    before = conn.execute(SIZES).fetchone()
                    assert before is not None
                    figures = _step(conn, url, path, found["column_set_id"])
                    path.unlink()
                    if figures["new"] != n:
                        raise SystemExit(f"step {step}: {figures['new']:,} new rows, not {n:,}")
                    figures["stored"] = before["n"]
                    steps.append(figures)
                    print(
                        f"step {step}: into {before['n']:,} stored rows (heap "
                        f"{before['heap'] / 1e6:,.0f} MB, key {before['key'] / 1e6:,.0f} MB): "
                        f"COPY {figures['copy']:.2f} s, probe {figures['probe']:.2f} s, "
                        f"insert {figures['insert']:.2f} s = "
                        f"{figures['insert'] / n * 1e6:.2f} us a row, "
                        f"{figures['insert'] / figures['copy']:.1f}x the COPY",
                        flush=True,
                    )
        finally:
            server.cleanup()
    first, last = steps[0], steps[-1]
    for name, s in (("first", first), ("last", last)):
        print(
            f"RESULT {name} step, into {int(s['stored']):,} stored rows: insert "
            f"{s['insert'] / n * 1e6:.2f} us a row (probe {s['probe'] / n * 1e6:.2f}), "
            f"COPY {s['copy'] / n * 1e6:.2f} us a row"
        )
    print(
        f"RATIO insert a row, last step / first: {last['insert'] / first['insert']:.2f}x "
        f"(probe {last['probe'] / first['probe']:.2f}x, COPY {last['copy'] / first['copy']:.2f}x)"
    )


if __name__ == "__main__":
    main()
