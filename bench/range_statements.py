"""One range's load statements on one backend, and the row_store insert's two plans.

Usage: python bench/range_statements.py [--range-rows 166000] [--store-rows 3320000]

Starts the embedded PostgreSQL alone (no stack) in a temporary directory, migrates it, and
COPYs the first N records of the benchmark CSV as one range would (load.py's statements):
COPY into a temp table, the hashed table (sha256 over the canonical text), then the insert of
the range's rows into a row_store already holding M other rows, alternating the planner's own
choice (a hash anti join over row_store) with index probes in hash order (what load.py runs),
each rolled back. Prints each statement's seconds and the backend's CPU seconds; the last line
is the two plans' means.
"""

from __future__ import annotations

import argparse
import csv
import io
import random
import tempfile
import time
from pathlib import Path

import psutil
import psycopg

from sluiceway import db
from sluiceway.local.stack import start_embedded_postgres
from sluiceway.sample import write_csv
from sluiceway.settings import Settings

DATA = Path(__file__).parent / "data"
PLANNERS = (
    "INSERT INTO dsa_core.row_store (row_hash, column_set_id, vals) "
    "SELECT DISTINCT ON (h.row_hash) h.row_hash, 1, h.vals FROM hashed h "
    "WHERE NOT EXISTS (SELECT 1 FROM dsa_core.row_store r WHERE r.row_hash = h.row_hash) "
    "ORDER BY h.row_hash"
)
PROBES = (
    "INSERT INTO dsa_core.row_store (row_hash, column_set_id, vals) SELECT h.row_hash, 1, h.vals "
    "FROM (SELECT DISTINCT ON (row_hash) row_hash, vals FROM hashed ORDER BY row_hash) h "
    "WHERE NOT EXISTS (SELECT 1 FROM dsa_core.row_store r WHERE r.row_hash = h.row_hash)"
)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--range-rows", type=int, default=166_000)
    parser.add_argument("--store-rows", type=int, default=3_320_000)
    parser.add_argument("--pairs", type=int, default=3)
    args = parser.parse_args()
    path = DATA / "bench_1000000.csv"
    if not path.exists():
        write_csv(path, 1_000_000)
    with path.open(newline="") as f:
        reader = csv.reader(f)
        header = next(reader)
        buf = io.StringIO()
        writer = csv.writer(buf)
        for _, row in zip(range(args.range_rows), reader, strict=False):
            writer.writerow(row)
    data = buf.getvalue().encode()
    cols = [f"c{i}" for i in range(1, len(header) + 1)]
    order = sorted(range(len(header)), key=lambda i: header[i])
    vals = "ARRAY[" + ", ".join(f"c{i + 1}" for i in order) + "]"
    names = "'{" + ",".join(sorted(header)) + "}'"
    hashed = (
        "CREATE TEMP TABLE hashed AS SELECT ord AS pos, "
        f"sha256(convert_to({names}::text[]::text || vals::text, 'UTF8')) AS row_hash, vals "
        f"FROM (SELECT ord, {vals} AS vals FROM raw) s"
    )
    with tempfile.TemporaryDirectory() as home:
        server, url = start_embedded_postgres(Path(home))
        db.migrate(Settings(home=Path(home), database_url=url))
        with psycopg.connect(url, autocommit=True) as conn:
            backend = psutil.Process(conn.execute("SELECT pg_backend_pid()").fetchone()[0])  # type: ignore[index]

            def timed(label: str, statement: str) -> tuple[float, float]:
                cpu = sum(backend.cpu_times()[:2])
                started = time.perf_counter()
                conn.execute(statement)
                seconds = time.perf_counter() - started
                used = sum(backend.cpu_times()[:2]) - cpu
                print(f"{seconds:7.3f} s ({used:6.3f} CPU-s)  {label}", flush=True)
                return seconds, used

            db.room_for_temp_tables(conn)
            conn.execute(
                "CREATE TEMP TABLE raw (ord bigint GENERATED ALWAYS AS IDENTITY, "
                + ", ".join(f"{c} text" for c in cols)
                + ")"
            )
            cpu = sum(backend.cpu_times()[:2])
            started = time.perf_counter()
            with conn.cursor().copy(f"COPY raw ({', '.join(cols)}) FROM STDIN (FORMAT csv)") as cp:
                cp.write(data)
            print(
                f"{time.perf_counter() - started:7.3f} s "
                f"({sum(backend.cpu_times()[:2]) - cpu:6.3f} CPU-s)  COPY {args.range_rows:,} rows"
            )
            timed("hash into the temp table", hashed)
            conn.execute("ALTER TABLE hashed RENAME TO hashed0")
            # the store: copies of the range under other hashes
            copies = -(-args.store_rows // args.range_rows)
            for n in range(copies):
                conn.execute(
                    "INSERT INTO dsa_core.row_store SELECT sha256(row_hash || %s::bytea), 1, vals "
                    "FROM hashed0",
                    (n.to_bytes(4, "big"),),
                )
            conn.execute("VACUUM ANALYZE dsa_core.row_store")
            stored = conn.execute("SELECT count(*) FROM dsa_core.row_store").fetchone()[0]  # type: ignore[index]
            print(f"row_store holds {stored:,} rows")
            results: dict[str, list[tuple[float, float]]] = {"planner's": [], "probes": []}
            rng = random.Random(3)
            for pair in range(args.pairs):
                kinds = ("planner's", "probes") if pair % 2 == 0 else ("probes", "planner's")
                for kind in kinds:
                    conn.execute("VACUUM dsa_core.row_store")
                    conn.execute("DROP TABLE IF EXISTS hashed")
                    salt = rng.randbytes(8)
                    conn.execute(
                        "CREATE TEMP TABLE hashed AS SELECT pos, "
                        "sha256(row_hash || %s::bytea) AS row_hash, vals FROM hashed0",
                        (salt,),
                    )
                    with conn.transaction(force_rollback=True):
                        if kind == "probes":
                            conn.execute("SET LOCAL enable_hashjoin = off")
                            conn.execute("SET LOCAL enable_mergejoin = off")
                        results[kind].append(
                            timed(f"insert, {kind}", PLANNERS if kind == "planner's" else PROBES)
                        )
        server.cleanup()
    means = {
        k: (sum(s for s, _ in v) / len(v), sum(c for _, c in v) / len(v))
        for k, v in results.items()
    }
    print(
        "RESULT insert of one range into "
        f"{stored:,} rows: "
        + "; ".join(f"{k} {s:.3f} s ({c:.3f} CPU-s)" for k, (s, c) in means.items())
    )


if __name__ == "__main__":
    main()
