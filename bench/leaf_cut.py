"""tree.cut's two numberings of a range's rows, on the same rows: positions with gaps, or 1..N.

Usage: python bench/leaf_cut.py [--rows 500000] [--runs 5]

tree.cut finds each row's leaf from its index in its run (the rows since the last natural cut).
For positions of any kind it numbers the rows first (row_number) and finds the run's last cut
by that number in a second window; when the caller knows pos is 1..N (``dense``: a range's
rows as COPY numbered them, none taken out) one window over the rows before each finds both.

On an embedded PostgreSQL of its own, migrated (no S3, no state machine), one backend: COPYs
``--rows`` rows of the benchmark CSV into a range's raw table, hashes them (load.hash_rows, as
a re-import does: no profile codes), then runs tree.cut both ways, alternated, ``--runs``
times each, and checks that both cut the same leaves. The last lines give each way's best and
median seconds and their ratio.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import psycopg
from profile_paths import HASHED, RAW, copy_range  # a script beside this one
from psycopg import sql
from psycopg.rows import dict_row

from sluiceway import db, load, tree
from sluiceway.local.stack import start_embedded_postgres
from sluiceway.sample import COLUMNS, write_csv
from sluiceway.settings import Settings

DIGEST = (
    "SELECT count(*) AS leaves, md5(string_agg(leaf_hash || int8send(leaf_no) || "
    "int8send(last_pos) || int4send(n), ''::bytea ORDER BY leaf_no)) AS digest FROM {}"
)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=500_000)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as home:
        server, url = start_embedded_postgres(Path(home))
        try:
            db.migrate(Settings(home=Path(home), database_url=url))
            path = write_csv(Path(home) / "range.csv", args.rows)
            with psycopg.connect(url, row_factory=dict_row) as conn, conn.transaction():
                conn.execute("SET max_parallel_workers_per_gather = 0")  # one backend
                copy_range(conn, path)  # the range's hashed table, as load.py has it
                conn.execute(load.hash_rows(RAW, HASHED, COLUMNS, key=sql.SQL("NULL")))
                seconds: dict[bool, list[float]] = {False: [], True: []}
                digests: dict[bool, dict[str, Any]] = {}
                for run in range(args.runs):
                    for dense in (run % 2 == 0, run % 2 != 0):
                        started = time.perf_counter()
                        tree.cut(conn, HASHED, keyed=False, dense=dense)
                        seconds[dense].append(time.perf_counter() - started)
                        found = conn.execute(sql.SQL(DIGEST).format(tree.LEAVES)).fetchone()
                        assert found is not None
                        digests.setdefault(dense, found)
                        if found != digests[dense]:
                            raise SystemExit(f"run {run}: the leaves differ from run 0's")
                if digests[True] != digests[False]:
                    raise SystemExit(f"the two ways cut other leaves: {digests}")
        finally:
            server.cleanup()
    print(f"{args.rows:,} rows, {digests[True]['leaves']:,} leaves, the same both ways")
    for dense, name in ((False, "numbered (any positions)"), (True, "dense (pos 1..N)")):
        times = seconds[dense]
        print(
            f"RESULT {name}: best {min(times):.3f} s, median {statistics.median(times):.3f} s "
            f"of {len(times)} runs"
        )
    ratio = min(seconds[True]) / min(seconds[False])
    print(f"RATIO dense / numbered, best of each: {ratio:.2f}x")


if __name__ == "__main__":
    main()
