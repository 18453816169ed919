"""Storage that grows with the change: bytes a re-import adds, and what a diff costs.

Usage: python bench/versioning.py [--rows N]

Starts a fresh embedded stack and imports, into one dataset, in this order:
  1. the base file (N rows x 8 columns, as bench/import_vs_copy.py);
  2. the same file with 1% of its rows changed (every 100th row's amount);
  3. the base file with 10% changed (every 10th row);
  4. that same 10% file again (0% changed: no commit should be made).
After each, it measures the bytes the versioned tables gained (pg_total_relation_size of
row_store, row_leaves, leaf_lists, commit_chunks, commits: rows, commit_rows and their
indexes) and times the diff of the new commit against its parent through the API.
The last lines are the figures and the ratios to the first import.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import psycopg

from sluiceway.cli import run_import
from sluiceway.client import Client
from sluiceway.local.stack import LocalStack
from sluiceway.sample import write_csv
from sluiceway.settings import Settings

DATA = Path(__file__).parent / "data"
TABLES = ("row_store", "row_leaves", "leaf_lists", "commit_chunks", "commits", "column_sets")


def table_bytes(url: str) -> dict[str, int]:
    """pg_total_relation_size (heap, TOAST, indexes, free space and visibility maps) per table."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("CHECKPOINT")
        row = conn.execute(
            "SELECT " + ", ".join(f"pg_total_relation_size('dsa_core.{t}')" for t in TABLES)
        ).fetchone()
    assert row is not None
    return dict(zip(TABLES, (int(v) for v in row), strict=True))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=1_000_000)
    args = parser.parse_args()
    files = {
        "first import": DATA / f"bench_{args.rows}.csv",
        "1% changed": DATA / f"bench_{args.rows}_1pct.csv",
        "10% changed": DATA / f"bench_{args.rows}_10pct.csv",
        "0% changed (same file again)": DATA / f"bench_{args.rows}_10pct.csv",
    }
    every = {"1% changed": 100, "10% changed": 10}
    for label, path in files.items():
        if not path.exists():
            write_csv(path, args.rows, changed_every=every.get(label, 0))

    results: list[tuple[str, int, float, float, dict[str, int] | None, bool]] = []
    with tempfile.TemporaryDirectory() as home, LocalStack(Settings(home=Path(home))) as stack:
        client = Client(stack.api_url, token=stack.local_token)
        for label, path in files.items():
            before = table_bytes(stack.database_url)
            result = run_import(client, path, "bench", None, None, show_progress=False)
            if result["status"] != "completed":
                raise SystemExit(f"{label}: import failed: {result['error']}")
            after = table_bytes(stack.database_url)
            by_table = {t: after[t] - before[t] for t in TABLES}
            added = sum(by_table.values())
            started = time.perf_counter()
            diff = client.call("GET", "/datasets/bench/diff?to=main&limit=100")
            diff_seconds = time.perf_counter() - started
            counts = {k: diff[k] for k in ("added", "removed", "changed")}
            results.append(
                (label, added, result["seconds"], diff_seconds, counts, result["unchanged"])
            )
            print(
                f"{label}: +{added / 1e6:.2f} MB in {result['seconds']:.2f} s; "
                f"{'no commit (unchanged)' if result['unchanged'] else 'diff vs parent'} "
                f"{counts} in {diff_seconds:.3f} s"
            )
            print(
                "   by table (kB): " + ", ".join(f"{t} {b / 1e3:,.0f}" for t, b in by_table.items())
            )

    first_bytes, first_seconds = results[0][1], results[0][2]
    print()
    print(f"rows: {args.rows:,}; tables: {', '.join(TABLES)}")
    for label, added, seconds, diff_seconds, _, _ in results:
        print(
            f"{label:30s} bytes added {added / 1e6:8.2f} MB = {added / first_bytes:6.1%} of the "
            f"first; import {seconds:6.2f} s = {seconds / first_seconds:4.2f}x; "
            f"diff {diff_seconds:.3f} s"
        )


if __name__ == "__main__":
    main()
