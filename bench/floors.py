"""The least a durable row store addressed by each row's sha256 and deduplicated by it costs,
in and out, whoever writes it: plain SQL, none of sluiceway's statements, against the
baselines of issue 8 (COPY in, COPY TO out), measured in the same run.

Usage: python bench/floors.py [--rows 1000000] [--runs 3]

Starts an embedded PostgreSQL of its own with the stack's settings (as bench/import_ladder.py
does) and splits the benchmark CSV into two halves at a record boundary. Each rung runs on a
fresh table, both halves at once on two backends (one per core, as the Maps run two ranges or
two parts), its time from the start of both to the end of the slower.

In:
- baseline: ``COPY`` of the whole file into an UNLOGGED, unindexed table, one stream (the
  baseline of bench/import_vs_copy.py, import_scale.py and import_ladder.py);
- ``logged``: the halves COPYed into one table that is logged (WAL, so that a crash loses
  nothing committed), still no index: what durability costs alone;
- ``keyed``: the same, with each row's sha256 (of the record's bytes, hashed by the client
  before the clock starts and sent as a column) as the table's primary key: durability and a
  unique B-tree of random 32-byte keys, the key every deduplicating store must check;
- ``minimal``: the least a content-addressed store does in the database: COPY each half into
  a temporary table, then one ``INSERT INTO store SELECT sha256(row text), ARRAY[values] ...
  ORDER BY 1 ON CONFLICT DO NOTHING``: parse, hash, sort, look up, write a logged heap and its
  unique key. No leaves, no type profile, no canonical form (sluiceway hashes the sorted column
  names and the values, so that the same row is the same row in any column order or format);
- ``again``: ``minimal`` once more, into the store it filled, with the file that has every
  100th row changed (bench/import_vs_copy.py's re-import): every row parsed, hashed and looked
  up, 1% stored. Its ratio to ``minimal`` is what a re-import costs against a first import in
  a store that finds changed rows by their hashes alone (sluiceway's leaves skip most lookups).

Out (the rows of ``logged``, in its order, read by the client into a file):
- baseline: ``COPY (SELECT ...) TO STDOUT (FORMAT csv)`` of the plain table, one stream (the
  baseline of bench/export_vs_copy.py);
- ``read``: a version's rows out of the content-addressed store: a table of (position,
  row_hash) in the plain table's order joined to ``minimal`` by hash, each half of the
  positions on its own backend, in position order, the planner's choice of join. The output
  must be the baseline's bytes (the script stops otherwise).

The last lines print each rung against its baseline. ``minimal`` is the floor under issue 8's
"import within 3x of COPY" on this machine, and ``read`` the floor under "export within 1.5x
of COPY TO": what any sha256-addressed, deduplicated, durable row store pays per row, before
anything sluiceway adds.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import io
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import psycopg
from import_ladder import _halves  # a script beside this one: bench/ is on sys.path
from psycopg import sql

from sluiceway import db
from sluiceway.local.stack import start_embedded_postgres
from sluiceway.sample import write_csv
from sluiceway.settings import Settings

DATA = Path(__file__).parent / "data"
RUNGS = ("logged", "keyed", "minimal", "again")


def _names(width: int) -> sql.Composed:
    return sql.SQL(", ").join(sql.Identifier(f"c{i}") for i in range(1, width + 1))


def _with_hashes(half: bytes) -> bytes:
    """The half's records, each after its sha256 (hex, as a bytea literal) as a first field."""
    out = io.StringIO()
    writer = csv.writer(out)
    for row in csv.reader(io.StringIO(half.decode(), newline="")):
        record = io.StringIO()
        csv.writer(record).writerow(row)
        writer.writerow(["\\x" + hashlib.sha256(record.getvalue().encode()).hexdigest(), *row])
    return out.getvalue().encode()


def _both(url: str, work: Any, inputs: list[Any]) -> float:
    """Run ``work(conn, input)`` for both halves at once, one backend each, each in one
    transaction; seconds from the start of both to the end of the slower."""
    ready = threading.Barrier(3)
    errors: list[BaseException] = []

    def one(data: Any) -> None:
        try:
            with psycopg.connect(url) as conn, conn.transaction():
                db.room_for_temp_tables(conn)
                ready.wait()
                work(conn, data)
        except BaseException as exc:  # shown after the join
            errors.append(exc)
            ready.abort()

    threads = [threading.Thread(target=one, args=(d,)) for d in inputs]
    for t in threads:
        t.start()
    ready.wait()
    started = time.perf_counter()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
    return time.perf_counter() - started


def _copy_to(conn: psycopg.Connection[Any], query: sql.Composable, out: Path) -> None:
    with conn.cursor().copy(query) as cp, out.open("wb") as f:
        for block in cp:
            f.write(block)


def _out(url: str, home: Path, width: int) -> dict[str, float]:
    """The out rungs: the plain table's COPY TO, then the same rows read from the store."""
    values = sql.SQL(", ").join(sql.SQL("s.vals[{}]").format(i) for i in range(1, width + 1))
    names = _names(width)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("VACUUM ANALYZE logged")
        conn.execute(
            sql.SQL(
                "CREATE TABLE positions AS SELECT row_number() OVER () AS pos, "
                "sha256(convert_to(ARRAY[{}]::text, 'UTF8')) AS row_hash FROM logged"
            ).format(names)
        )
        conn.execute("ALTER TABLE positions ADD PRIMARY KEY (pos)")
        conn.execute("VACUUM ANALYZE positions")
        conn.execute("VACUUM ANALYZE minimal")
        total = conn.execute("SELECT count(*) FROM positions").fetchone()[0]  # type: ignore[index]
        conn.execute("SET max_parallel_workers_per_gather = 0")  # one backend, as a part has
        plain = home / "plain.csv"
        started = time.perf_counter()
        _copy_to(
            conn,
            sql.SQL("COPY (SELECT {} FROM logged) TO STDOUT (FORMAT csv)").format(names),
            plain,
        )
        result = {"out baseline": time.perf_counter() - started}
    bounds = [(1, total // 2), (total // 2 + 1, total)]
    parts = [home / "part1.csv", home / "part2.csv"]

    def read(conn: psycopg.Connection[Any], n: int) -> None:
        conn.execute("SET max_parallel_workers_per_gather = 0")
        _copy_to(
            conn,
            sql.SQL(
                "COPY (SELECT {} FROM positions p JOIN minimal s USING (row_hash) "
                "WHERE p.pos BETWEEN {} AND {} ORDER BY p.pos) TO STDOUT (FORMAT csv)"
            ).format(values, sql.Literal(bounds[n][0]), sql.Literal(bounds[n][1])),
            parts[n],
        )

    result["read"] = _both(url, read, [0, 1])
    if parts[0].read_bytes() + parts[1].read_bytes() != plain.read_bytes():
        raise SystemExit("the rows read from the store are not the plain table's bytes")
    return result


def _run(
    home: Path, width: int, halves: list[bytes], hashed: list[bytes], changed: list[bytes]
) -> dict[str, float]:
    server, url = start_embedded_postgres(home)
    try:
        db.migrate(Settings(home=home, database_url=url))
        cols = sql.SQL(", ").join(
            sql.SQL("{} text").format(sql.Identifier(f"c{i}")) for i in range(1, width + 1)
        )
        names = _names(width)
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(sql.SQL("CREATE UNLOGGED TABLE baseline ({})").format(cols))
            started = time.perf_counter()
            with conn.cursor().copy("COPY baseline FROM STDIN (FORMAT csv)") as cp:
                cp.write(halves[0] + halves[1])
            result = {"baseline": time.perf_counter() - started}
            conn.execute("DROP TABLE baseline")
            conn.execute(sql.SQL("CREATE TABLE logged ({})").format(cols))
            conn.execute(
                sql.SQL("CREATE TABLE keyed (row_hash bytea PRIMARY KEY, {})").format(cols)
            )
            conn.execute("CREATE TABLE minimal (row_hash bytea PRIMARY KEY, vals text[])")
            conn.execute("CHECKPOINT")

        def copy_into(table: str) -> Any:
            def copy(conn: psycopg.Connection[Any], data: bytes) -> None:
                with conn.cursor().copy(
                    sql.SQL("COPY {} FROM STDIN (FORMAT csv)").format(sql.Identifier(table))
                ) as cp:
                    cp.write(data)

            return copy

        def minimal(conn: psycopg.Connection[Any], data: bytes) -> None:
            conn.execute(sql.SQL("CREATE TEMP TABLE raw ({}) ON COMMIT DROP").format(cols))
            with conn.cursor().copy("COPY raw FROM STDIN (FORMAT csv)") as cp:
                cp.write(data)
            conn.execute(
                sql.SQL(
                    "INSERT INTO minimal SELECT sha256(convert_to(v::text, 'UTF8')), v "
                    "FROM (SELECT ARRAY[{}] AS v FROM raw) r ORDER BY 1 "
                    "ON CONFLICT DO NOTHING"
                ).format(names)
            )

        result["logged"] = _both(url, copy_into("logged"), halves)
        result["keyed"] = _both(url, copy_into("keyed"), hashed)
        result["minimal"] = _both(url, minimal, halves)
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("VACUUM ANALYZE minimal")  # as autovacuum would have, between imports
            first = conn.execute("SELECT count(*) FROM minimal").fetchone()[0]  # type: ignore[index]
        result["again"] = _both(url, minimal, changed)
        result.update(_out(url, home, width))
        with psycopg.connect(url, autocommit=True) as conn:
            counts = conn.execute(
                "SELECT (SELECT count(*) FROM logged), (SELECT count(*) FROM keyed)"
            ).fetchone()
            stored = conn.execute("SELECT count(*) FROM minimal").fetchone()[0]  # type: ignore[index]
        result["rows"] = float(first)
        if counts is None or len({*counts, first}) != 1:
            raise SystemExit(f"the rungs stored different row counts: {counts}, {first}")
        result["new"] = float(stored - first)
        return result
    finally:
        server.cleanup()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    path = DATA / f"bench_{args.rows}.csv"
    if not path.exists():
        DATA.mkdir(exist_ok=True)
        write_csv(path, args.rows)
    header, halves = _halves(path, args.rows)
    hashed = [_with_hashes(h) for h in halves]
    changed_path = DATA / f"bench_{args.rows}_every100.csv"
    if not changed_path.exists():
        write_csv(changed_path, args.rows, changed_every=100)
    changed = _halves(changed_path, args.rows)[1]
    size = len(halves[0]) + len(halves[1])
    print(f"{args.rows:,} rows x {len(header)} columns, {size:,} bytes, two halves")
    runs = []
    for n in range(args.runs):
        with tempfile.TemporaryDirectory() as home:
            r = _run(Path(home), len(header), halves, hashed, changed)
        runs.append(r)
        rungs = "  ".join(f"{s} {r[s]:.2f}" for s in RUNGS)
        print(
            f"run {n + 1}: in: baseline COPY {r['baseline']:.2f} s; {rungs} "
            f"({r['rows']:,.0f} rows, {r['new']:,.0f} new again); "
            f"out: baseline COPY TO {r['out baseline']:.2f} s; "
            f"read {r['read']:.2f} s",
            flush=True,
        )
    best = {k: min(r[k] for r in runs) for k in runs[0]}
    base = best["baseline"]
    print(
        f"RESULT baseline COPY into an unlogged, unindexed table: {base:.2f} s (best of {args.runs})"
    )
    for s in RUNGS:
        print(f"RESULT rung {s:<8} {best[s]:6.2f} s  {best[s] / base:5.2f}x the baseline")
    print(
        "RESULT again (the 1%-changed file into the filled store) / minimal (the first): "
        f"{best['again'] / best['minimal']:.2f}x"
    )
    out = best["out baseline"]
    print(f"RESULT baseline COPY TO of the plain table: {out:.2f} s (best of {args.runs})")
    print(f"RESULT rung read     {best['read']:6.2f} s  {best['read'] / out:5.2f}x the baseline")
    print(
        "RATIO read (a version's rows out of that store, two backends) / COPY TO: "
        f"{best['read'] / out:.1f}x"
    )
    print(
        "RATIO minimal (a durable, sha256-addressed, deduplicated row store in plain SQL) / "
        f"COPY: {best['minimal'] / base:.1f}x"
    )


if __name__ == "__main__":
    main()
