"""A re-import's change counts: in memory (sluiceway.changes) against the SQL diff.

Usage: python bench/change_counts.py [--rows 1000000] [--changed-every 100] [--runs 3]

Starts a fresh embedded stack, imports bench/import_vs_copy.py's file and then the same file
with every 100th row changed (the re-import of issue 8), and times, on the two commits, best
of --runs each:
  - the baseline: versioning.compute_diff + diff_counts, the SQL diff a commit counted its
    changes with before (temporary tables a level at a time, in one transaction);
  - changes.count, what the commit counts with now.
Both must give the same counts (the script stops otherwise). The last line is the ratio.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg
from psycopg.rows import dict_row

from sluiceway import changes, db, versioning
from sluiceway.cli import parse_size, run_import
from sluiceway.client import Client
from sluiceway.local.stack import LocalStack
from sluiceway.sample import write_csv
from sluiceway.settings import Settings

DATA = Path(__file__).parent / "data"


def best(runs: int, work: Callable[[], Any]) -> tuple[float, Any]:
    times, result = [], None
    for _ in range(runs):
        started = time.perf_counter()
        result = work()
        times.append(time.perf_counter() - started)
    return min(times), result


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--changed-every", type=int, default=100)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    base = DATA / f"bench_{args.rows}.csv"
    changed = DATA / f"bench_{args.rows}_every{args.changed_every}.csv"
    DATA.mkdir(exist_ok=True)
    if not base.exists():
        write_csv(base, args.rows)
    if not changed.exists():
        write_csv(changed, args.rows, changed_every=args.changed_every)
    with (
        tempfile.TemporaryDirectory() as home,
        LocalStack(Settings(home=Path(home)), stop_database=True) as stack,
    ):
        client = Client(stack.api_url, token=stack.local_token)
        for path in (base, changed):
            result = run_import(
                client, path, "bench", parse_size("64MiB"), None, show_progress=False
            )
            if result["status"] != "completed":
                raise SystemExit(f"import of {path.name} failed: {result['error']}")
        with psycopg.connect(stack.database_url, row_factory=dict_row, autocommit=True) as conn:
            a, b = (
                r["commit_id"]
                for r in conn.execute(
                    "SELECT commit_id FROM dsa_core.commits ORDER BY commit_key"
                ).fetchall()
            )
            db.room_for_temp_tables(conn)

            def in_sql() -> dict[str, int]:
                with conn.transaction():
                    return versioning.diff_counts(conn, versioning.compute_diff(conn, a, b).table)

            sql_s, expected = best(args.runs, in_sql)
            memory_s, counted = best(args.runs, lambda: changes.count(conn, a, b))
    if counted != expected:
        raise SystemExit(f"the counts differ: {counted} in memory, {expected} in SQL")
    print(f"re-import of {args.rows:,} rows, every {args.changed_every}th changed: {expected}")
    print(f"baseline, the SQL diff (compute_diff + diff_counts): {sql_s:.3f} s")
    print(f"changes.count: {memory_s:.3f} s")
    print(f"RESULT change counts in memory / SQL diff: {memory_s / sql_s:.2f}x")


if __name__ == "__main__":
    main()
