"""What each part of a first import costs in PostgreSQL: load.py's own statements, step by step.

Usage: python bench/import_ladder.py [--rows 1000000] [--runs 2] [--set NAME=VALUE ...] [--waits]

Starts an embedded PostgreSQL of its own (no stack: no S3, no state machine, no API), migrated,
with the stack's settings, and splits the benchmark CSV into two halves at a record boundary,
as the planner cuts two ranges. Measured in the same run:

- baseline: ``COPY`` of the whole file into an UNLOGGED, unindexed table, one stream (the
  baseline of bench/import_vs_copy.py and bench/import_scale.py);
- the ladder: both halves at once, on two backends (one per core, as the load Map runs them),
  each in one transaction, through the steps load.py runs for a range, in its order:
    copy     COPY into the range's temp table
    hash     load.hash_rows: sha256 over each row's canonical text, and each row's type
             profile codes (schema.row_codes, after the sample pass that picks their tests)
    leaves   tree.cut, load.leaves_profile, tree.store: the leaves (each with the AND of
             its rows' codes), the range's profile folded from them, and the lists
    store    load.insert_new_rows: the rows into row_store, sorted by hash, probing its key
  A step's time is the slower backend's; every run uses a fresh database.

``--set NAME=VALUE`` changes a server setting (one a reload applies) from the stack's, to
compare the two in runs of the same session; ``--waits`` samples the two backends' wait events
every 5 ms and prints each step's share of them (``CPU`` when a backend waits on nothing).

The last lines print each step against the baseline, and sums: ``copy + hash + store``, what any
row store addressed by a sha256 of the row and deduplicated by it must do per row, whatever
else it keeps; every step but ``store`` against all four, what a re-import that finds almost
every row stored still runs against what a first import runs; and all four against COPY.
(Before 3 Dec 2026's third session the profile was a step of its own, between copy and hash.)
"""

from __future__ import annotations

import argparse
import csv
import io
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psutil
import psycopg
from import_scale import cpu_seconds  # a script beside this one: bench/ is on sys.path
from psycopg import sql
from psycopg.rows import dict_row

from sluiceway import db, load, schema, tree
from sluiceway.local.stack import start_embedded_postgres
from sluiceway.sample import write_csv
from sluiceway.settings import Settings

DATA = Path(__file__).parent / "data"
STEPS = ("copy", "hash", "leaves", "store")
RAW, HASHED = sql.Identifier("ladder_raw"), sql.Identifier("ladder_hashed")


def _halves(path: Path, rows: int) -> tuple[list[str], list[bytes]]:
    with path.open(newline="") as f:
        reader = csv.reader(f)
        header = next(reader)
        bufs = [io.StringIO(), io.StringIO()]
        writers = [csv.writer(b) for b in bufs]
        for n, row in enumerate(reader):
            if n >= rows:
                break
            writers[0 if n < rows // 2 else 1].writerow(row)
    return header, [b.getvalue().encode() for b in bufs]


APP = "sluiceway-ladder"  # the ladder's backends, as pg_stat_activity names them


def _range(
    url: str,
    columns: list[str],
    data: bytes,
    times: dict[str, float],
    ready: Any,
    current: dict[str, str],
) -> None:
    """One backend's range, step by step; ``ready`` (a barrier) starts each step together,
    and ``current`` says which step runs."""
    with (
        psycopg.connect(url, row_factory=dict_row, application_name=APP) as conn,
        conn.transaction(),
    ):
        db.room_for_temp_tables(conn)
        idents = sql.SQL(", ").join(sql.Identifier(f"c{i}") for i in range(1, len(columns) + 1))
        conn.execute(load.create_raw_table(RAW, len(columns)))

        def copy() -> None:
            with conn.cursor().copy(
                sql.SQL("COPY {} ({}) FROM STDIN (FORMAT csv)").format(RAW, idents)
            ) as cp:
                cp.write(data)

        def hash_rows() -> None:  # as load does for a range not found stored
            sample = schema.sample_masks(conn, RAW, len(columns))
            order = load.sorted_order(columns)
            codes = schema.row_codes(
                [sql.Identifier(f"c{i + 1}") for i in order], [sample[i] for i in order]
            )
            conn.execute(load.hash_rows(RAW, HASHED, columns, key=sql.SQL("NULL"), codes=codes))

        def leaves() -> None:
            tree.cut(conn, HASHED, keyed=False, codes=schema.code_count(len(columns)), dense=True)
            load.leaves_profile(conn, sorted(columns))
            tree.store(conn)

        steps: dict[str, Callable[[], Any]] = {
            "copy": copy,
            "hash": hash_rows,
            "leaves": leaves,
            "store": lambda: load.insert_new_rows(conn, HASHED, 1),
        }
        for name in STEPS:
            ready.wait()
            current["step"] = name
            started = time.perf_counter()
            steps[name]()
            times[name] = time.perf_counter() - started
        ready.wait()


def _sample_waits(
    url: str, current: dict[str, str], stop: threading.Event, counts: Counter[str]
) -> None:
    """Count the ladder's backends' wait events into ``counts``, as ``step wait_event``, every
    5 ms until ``stop`` is set."""
    with psycopg.connect(url, autocommit=True) as conn:
        while not stop.is_set():
            for (event,) in conn.execute(
                "SELECT coalesce(wait_event_type || ':' || wait_event, 'CPU') FROM "
                "pg_stat_activity WHERE application_name = %s AND state = 'active'",
                (APP,),
            ).fetchall():
                counts[f"{current['step']} {event}"] += 1
            time.sleep(0.005)


def _apply(url: str, settings: dict[str, str]) -> None:
    """Change server settings that a reload applies (a restart-only one is refused), and wait
    until the server has them (a reload is a signal: it takes a moment)."""
    with psycopg.connect(url, autocommit=True) as conn:
        before = {}
        for name, value in settings.items():
            row = conn.execute(
                "SELECT context FROM pg_settings WHERE name = %s", (name,)
            ).fetchone()
            if row is None or row[0] == "postmaster":
                raise SystemExit(f"--set {name}: no such setting, or one that needs a restart")
            before[name] = conn.execute("SELECT current_setting(%s)", (name,)).fetchone()
            conn.execute(
                sql.SQL("ALTER SYSTEM SET {} = {}").format(sql.Identifier(name), sql.Literal(value))
            )
        conn.execute("SELECT pg_reload_conf()")
        deadline = time.monotonic() + 5
        for name in settings:  # (a value the server already had never changes: 5 s, then on)
            while time.monotonic() < deadline:
                now = conn.execute("SELECT current_setting(%s)", (name,)).fetchone()
                if now != before[name]:
                    break
                time.sleep(0.05)


def _run(
    home: Path,
    header: list[str],
    halves: list[bytes],
    whole: bytes,
    settings: dict[str, str],
    waits: Counter[str] | None,
) -> dict[str, float]:
    server, url = start_embedded_postgres(home)
    try:
        db.migrate(Settings(home=home, database_url=url))
        _apply(url, settings)
        with psycopg.connect(url, autocommit=True) as conn:
            backend = conn.execute("SELECT pg_backend_pid()").fetchone()[0]  # type: ignore[index]
            pid = psutil.Process(backend).parent().pid
            cols = ", ".join(f"c{i} text" for i in range(1, len(header) + 1))
            conn.execute(f"CREATE UNLOGGED TABLE baseline ({cols})")
            started = time.perf_counter()
            with conn.cursor().copy("COPY baseline FROM STDIN (FORMAT csv)") as cp:
                cp.write(whole)
            result = {"baseline": time.perf_counter() - started}
            conn.execute("DROP TABLE baseline")
            conn.execute("CHECKPOINT")
            lsn = conn.execute("SELECT pg_current_wal_insert_lsn()").fetchone()[0]  # type: ignore[index]
        times: list[dict[str, float]] = [{}, {}]
        ready = threading.Barrier(2)
        current = {"step": "start"}
        stop = threading.Event()
        sampler = None
        if waits is not None:
            sampler = threading.Thread(target=_sample_waits, args=(url, current, stop, waits))
            sampler.start()
        cpu = cpu_seconds(pid)["postgres"]
        started = time.perf_counter()
        threads = [
            threading.Thread(target=_range, args=(url, header, halves[n], times[n], ready, current))
            for n in range(2)
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        result["ladder"] = time.perf_counter() - started
        if sampler is not None:
            stop.set()
            sampler.join()
        with psycopg.connect(url, autocommit=True) as conn:
            result["wal"] = conn.execute(  # type: ignore[index]
                "SELECT (pg_current_wal_insert_lsn() - %s::pg_lsn)::float8", (lsn,)
            ).fetchone()[0]
        result["cpu"] = cpu_seconds(pid)["postgres"] - cpu
        for name in STEPS:
            result[name] = max(t[name] for t in times)
        return result
    finally:
        server.cleanup()


def _print_waits(waits: Counter[str]) -> None:
    """Each step's five commonest wait events, as shares of its samples."""
    for step in STEPS:
        mine = {k.split(" ", 1)[1]: v for k, v in waits.items() if k.startswith(step + " ")}
        total = sum(mine.values())
        top = sorted(mine.items(), key=lambda kv: -kv[1])[:5]
        shares = ", ".join(f"{event} {count / total:.0%}" for event, count in top)
        print(f"  waits {step:<8} ({total} samples): {shares}")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=2)
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a server setting changed from the stack's (one a reload applies)",
    )
    parser.add_argument("--waits", action="store_true", help="sample each step's wait events")
    args = parser.parse_args()
    settings = dict(item.split("=", 1) for item in args.set)
    if settings:
        print("server settings changed from the stack's: " + ", ".join(args.set))
    path = DATA / f"bench_{args.rows}.csv"
    if not path.exists():
        DATA.mkdir(exist_ok=True)
        write_csv(path, args.rows)
    header, halves = _halves(path, args.rows)
    whole = halves[0] + halves[1]
    print(f"{args.rows:,} rows x {len(header)} columns, {len(whole):,} bytes, two halves")
    runs = []
    for n in range(args.runs):
        waits: Counter[str] | None = Counter() if args.waits else None
        with tempfile.TemporaryDirectory() as home:
            r = _run(Path(home), header, halves, whole, settings, waits)
        runs.append(r)
        steps = "  ".join(f"{s} {r[s]:.2f}" for s in STEPS)
        print(
            f"run {n + 1}: baseline COPY {r['baseline']:.2f} s; ladder {r['ladder']:.2f} s "
            f"({r['cpu']:.1f} PostgreSQL CPU-s, {r['wal'] / 1e6:,.0f} MB of WAL): {steps}",
            flush=True,
        )
        if waits is not None:
            _print_waits(waits)
    best = {k: min(r[k] for r in runs) for k in runs[0]}
    base = best["baseline"]
    for s in STEPS:
        print(f"RESULT step {s:<8} {best[s]:6.2f} s  {best[s] / base:5.2f}x the baseline")
    floor = best["copy"] + best["hash"] + best["store"]
    total = sum(best[s] for s in STEPS)
    print(f"RESULT baseline COPY into an unlogged, unindexed table: {base:.2f} s")
    print(
        f"RATIO copy + hash + store (a sha256-addressed, deduplicated store) / COPY: {floor / base:.1f}x"
    )
    print(
        "RESULT every step but store (what a re-import that stores almost nothing still runs) "
        f"/ all four: {(total - best['store']) / total:.2f}x"
    )
    print(f"RATIO all four steps (what a range's load runs) / COPY: {total / base:.1f}x")


if __name__ == "__main__":
    main()
