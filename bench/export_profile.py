"""Where one export part's time goes: the stages of reading a commit's rows, one at a time.

Usage: python bench/export_profile.py [--rows 1000000] [--part-rows 500000]

Imports N rows of the generated CSV (bench/import_vs_copy.py's file) through the pipeline on a
fresh embedded stack, then, on one backend, times cumulative stages of what an export part of
R rows does (src/sluiceway/export_part.py, a small share of row_store: probes in hash order):
  1. unpack the commit's lists and leaves into (row_number, row_hash): commit_row_range;
  2. the same, sorted by row hash;
  3. the same, each row's values probed from row_store by its hash;
  4. the whole part: COPY (... ORDER BY row_number) TO STDOUT (FORMAT csv), read and dropped;
and, as the baseline, COPY TO STDOUT of R rows of a plain table of the same rows. The last
lines are the figures and each stage's share of the part.
"""

from __future__ import annotations

import argparse
import contextlib
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
from export_vs_copy import _data, _positions

from sluiceway.cli import run_import
from sluiceway.client import Client
from sluiceway.local.stack import LocalStack
from sluiceway.sample import COLUMNS
from sluiceway.settings import Settings

RANGE = "dsa_core.commit_row_range(%s, 1, %s)"
BY_HASH = f"(SELECT row_number, row_hash FROM {RANGE} ORDER BY row_hash OFFSET 0) r"
PROBED = (
    f"{BY_HASH} CROSS JOIN LATERAL (SELECT s.vals FROM dsa_core.row_store s "
    "WHERE s.row_hash = r.row_hash OFFSET 0) s"
)


def _timed(conn: psycopg.Connection[tuple[object, ...]], query: str, params: tuple) -> float:
    started = time.perf_counter()
    if query.startswith("COPY"):
        with conn.cursor().copy(query, params) as copy:
            for _ in copy:
                pass
    else:
        conn.execute(query, params).fetchall()
    return time.perf_counter() - started


def _plain_table(conn: psycopg.Connection[tuple[object, ...]], path: Path) -> None:
    """The same rows in a plain table, as bench/export_vs_copy.py's baseline has them."""
    cols = ", ".join(f'"{c}" text' for c in COLUMNS)
    conn.execute("DROP TABLE IF EXISTS bench_plain")
    conn.execute(f"CREATE UNLOGGED TABLE bench_plain ({cols})")
    with (
        conn.cursor().copy("COPY bench_plain FROM STDIN (FORMAT csv, HEADER)") as copy,
        path.open("rb") as f,
    ):
        while block := f.read(1 << 20):
            copy.write(block)
    conn.execute("VACUUM ANALYZE bench_plain")


@contextlib.contextmanager
def imported_stack(rows: int) -> Iterator[tuple[LocalStack, Client, Path, dict[str, Any]]]:
    """A fresh embedded stack (in a temporary home) holding dataset "bench": N rows of the
    generated CSV imported through the pipeline. Yields the stack, a client, the file and
    the import's job."""
    path = _data(rows)
    with (
        tempfile.TemporaryDirectory() as home,
        LocalStack(Settings(home=Path(home)), stop_database=True) as stack,
    ):
        client = Client(stack.api_url, token=stack.local_token)
        imported = run_import(client, path, "bench", None, None, show_progress=False)
        if imported["status"] != "completed":
            raise SystemExit(f"import failed: {imported['error']}")
        yield stack, client, path, imported


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--part-rows", type=int, default=500_000)
    args = parser.parse_args()
    with imported_stack(args.rows) as (stack, _client, path, imported):
        commit_id, to_row = imported["commit_id"], args.part_rows + 1
        fields = ", ".join(f"s.vals[{i}]" for i in _positions())
        stages = {
            "unpack lists and leaves (commit_row_range)": f"SELECT count(*) FROM {RANGE}",
            "+ sort by row hash": f"SELECT count(*) FROM {BY_HASH}",
            "+ probe row_store in hash order": f"SELECT count(s.vals[1]) FROM {PROBED}",
            "+ sort by row number and write CSV (the whole part)": (
                f"COPY (SELECT {fields} FROM {PROBED} ORDER BY r.row_number) TO STDOUT (FORMAT csv)"
            ),
        }
        with psycopg.connect(stack.database_url, autocommit=True) as conn:
            _plain_table(conn, path)
            conn.execute("SET max_parallel_workers_per_gather = 0")  # one backend, as a part
            _timed(conn, stages["+ probe row_store in hash order"], (commit_id, to_row))  # warm
            seconds = {name: _timed(conn, q, (commit_id, to_row)) for name, q in stages.items()}
            baseline = _timed(
                conn,
                "COPY (SELECT * FROM bench_plain LIMIT %s) TO STDOUT (FORMAT csv)",
                (args.part_rows,),
            )
    print(f"commit of {imported['rows']:,} rows; one part of {args.part_rows:,} rows, one backend")
    before = 0.0
    for name, total in seconds.items():
        print(f"{name}: {total:.2f} s (this stage {total - before:.2f} s)")
        before = total
    part = seconds[list(stages)[-1]]
    print(f"COPY TO STDOUT of {args.part_rows:,} rows of a plain table: {baseline:.2f} s")
    print(f"RATIO part / plain COPY TO: {part / baseline:.1f}x")


if __name__ == "__main__":
    main()
