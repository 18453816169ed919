"""Where one import's seconds go: the state machine's states, and PostgreSQL's statements.

Usage: python bench/profile_import.py [--rows N] [--chunk-size 16MiB] [--reimport-changed-every 100]

Starts a fresh embedded stack with pg_stat_statements loaded (the server is started once
with ``shared_preload_libraries`` set, then joined by the stack), imports the generated CSV,
and prints:
  - the client's phases: upload (presigned PUTs and complete) and waiting for the job;
  - every state of the execution (moto's execution history, Distributed Map children
    included), entered -> exited, so the gaps between them are the interpreter's own time;
  - PostgreSQL's statements by total time (pg_stat_statements, top level and nested);
  - the WAL it wrote (pg_stat_wal: bytes, records, full-page images, times the WAL buffers
    were full) and its I/O by process kind, object and context (pg_stat_io: what a backend
    wrote or read itself, temp tables and sorts' files included);
  - the versioned tables' sizes after it (rows, heap and indexes), ``block_leaves`` included;
  - the CPU seconds of the profiled upload and job, by PostgreSQL, the workers and the stack
    (import_scale.cpu_seconds): on AWS the workers are Lambdas of their own, so PostgreSQL's
    share is what the database's capacity must pay.
Run it under ``py-spy record --subprocesses`` for the Python side (see bench/README.md).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections import defaultdict
from datetime import datetime
from pathlib import Path
from typing import Any

import boto3
import psycopg
from import_scale import cpu_seconds

from sluiceway.cli import parse_size
from sluiceway.client import Client
from sluiceway.local.stack import LOCAL_KEY, REGION, LocalStack, start_embedded_postgres
from sluiceway.sample import COLUMNS, write_csv
from sluiceway.settings import Settings

DATA = Path(__file__).parent / "data"


def _preload_pg_stat_statements(home: Path) -> None:
    server, url = start_embedded_postgres(home)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("ALTER SYSTEM SET shared_preload_libraries = 'pg_stat_statements'")
        conn.execute("ALTER SYSTEM SET pg_stat_statements.track = 'all'")
        conn.execute("ALTER SYSTEM SET track_io_timing = on")
    server._cleanup()  # stops it; the stack starts it again with the library loaded


def _reset_stats(conn: psycopg.Connection[Any]) -> None:
    conn.execute("SELECT pg_stat_statements_reset()")
    conn.execute("SELECT pg_stat_reset_shared('wal'), pg_stat_reset_shared('io')")


WAL = "SELECT wal_bytes, wal_records, wal_fpi, wal_buffers_full FROM pg_stat_wal"
# PostgreSQL 18's pg_stat_io counts bytes per operation; rows with no I/O are left out
IO = (
    "SELECT backend_type, object, context, reads, read_bytes, writes, write_bytes, extends, "
    "extend_bytes FROM pg_stat_io WHERE coalesce(reads, 0) + coalesce(writes, 0) "
    "+ coalesce(extends, 0) > 0 ORDER BY coalesce(write_bytes, 0) + coalesce(extend_bytes, 0) "
    "+ coalesce(read_bytes, 0) DESC"
)


def _mb(value: Any) -> str:
    return f"{float(value or 0) / 1e6:,.0f} MB"


def _history(sfn: Any, arn: str) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = []
    token = None
    while True:
        kw = {"executionArn": arn, "maxResults": 1000}
        if token:
            kw["nextToken"] = token
        page = sfn.get_execution_history(**kw)
        events += page["events"]
        token = page.get("nextToken")
        if not token:
            return events


def _state_spans(events: list[dict[str, Any]]) -> list[tuple[str, datetime, datetime]]:
    spans, open_ = [], {}
    for e in events:
        kind = e["type"]
        for key in ("stateEnteredEventDetails", "stateExitedEventDetails"):
            if key in e:
                name = e[key]["name"]
                if kind.endswith("Entered"):
                    open_[name] = e["timestamp"]
                elif name in open_:
                    spans.append((name, open_.pop(name), e["timestamp"]))
    return spans


STORED = ("row_store", "row_leaves", "leaf_lists", "block_leaves")
SIZE = (
    "SELECT count(*), pg_relation_size('dsa_core.{t}'), pg_indexes_size('dsa_core.{t}') "
    "FROM dsa_core.{t}"
)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--chunk-size", default="16MiB")
    parser.add_argument("--top", type=int, default=15)
    parser.add_argument(
        "--reimport-changed-every",
        type=int,
        default=0,
        help="profile instead a re-import of the file with every n-th row changed",
    )
    args = parser.parse_args()

    path = DATA / f"bench_{args.rows}.csv"
    if not path.exists():
        write_csv(path, args.rows)
    size = path.stat().st_size
    print(f"file: {path} ({size:,} bytes, {args.rows:,} rows x {len(COLUMNS)} columns)")

    with tempfile.TemporaryDirectory() as home:
        _preload_pg_stat_statements(Path(home))
        with LocalStack(Settings(home=Path(home)), stop_database=True) as stack:
            with psycopg.connect(stack.database_url, autocommit=True) as conn:
                conn.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
                _reset_stats(conn)
            client = Client(stack.api_url, token=stack.local_token)
            options = {"chunk_bytes": parse_size(args.chunk_size)}
            if args.reimport_changed_every:
                first = client.upload_file(path, "profile", options)
                client.wait_for_job(first["job_id"], poll_seconds=0.05)
                path = DATA / f"bench_{args.rows}_every{args.reimport_changed_every}.csv"
                if not path.exists():
                    write_csv(path, args.rows, changed_every=args.reimport_changed_every)
                print(f"profiling the re-import of {path}")
                with psycopg.connect(stack.database_url, autocommit=True) as conn:
                    _reset_stats(conn)
            # the embedded server's postmaster (first line of postmaster.pid)
            pg_pid = int((Path(home) / "pg" / "postmaster.pid").read_text().split()[0])
            cpu_before = cpu_seconds(pg_pid)
            t0 = time.perf_counter()
            created = client.upload_file(path, "profile", options)
            t_up = time.perf_counter()
            job = client.wait_for_job(created["job_id"], poll_seconds=0.05)
            t_done = time.perf_counter()
            cpu_after = cpu_seconds(pg_pid)
            if job["status"] != "completed":
                raise SystemExit(f"import failed: {job.get('error_message')}")
            sfn = boto3.client(
                "stepfunctions",
                endpoint_url=stack.moto_url,
                region_name=REGION,
                aws_access_key_id=LOCAL_KEY,
                aws_secret_access_key=LOCAL_KEY,
            )
            executions = sfn.list_executions(stateMachineArn=stack.state_machine_arn)["executions"]
            if args.reimport_changed_every:  # newest first: only the re-import's
                executions = [max(executions, key=lambda e: e["startDate"])]
            spans: list[tuple[str, datetime, datetime]] = []
            starts = []
            for ex in executions:
                spans += _state_spans(_history(sfn, ex["executionArn"]))
                starts.append(ex["startDate"])
            with psycopg.connect(stack.database_url, autocommit=True) as conn:
                stmts = conn.execute(
                    "SELECT calls, total_exec_time, rows, left(regexp_replace(query, '\\s+', ' ', "
                    "'g'), 110) AS q FROM pg_stat_statements ORDER BY total_exec_time DESC "
                    "LIMIT %s",
                    (args.top,),
                ).fetchall()
                wal = conn.execute(WAL).fetchone()
                io = conn.execute(IO).fetchall()
                sizes = [(t, *conn.execute(SIZE.format(t=t)).fetchone()) for t in STORED]

    print(f"client: upload {t_up - t0:.2f} s, then the job {t_done - t_up:.2f} s")
    if spans:
        origin = min(starts + [s for _, s, _ in spans])
        agg: dict[str, list[float]] = defaultdict(list)
        for name, a, b in spans:
            agg[name].append((b - a).total_seconds())
        print("states (first entered at +s from execution start, count, total s, max s):")
        first = {n: min(a for m, a, _ in spans if m == n) for n in agg}
        for name in sorted(agg, key=lambda n: first[n]):
            xs = agg[name]
            at = (first[name] - origin).total_seconds()
            print(
                f"  +{at:6.2f}  {name:32s} n={len(xs):3d} total={sum(xs):7.2f} max={max(xs):6.2f}"
            )
        end = max(b for _, _, b in spans)
        print(f"execution span: {(end - origin).total_seconds():.2f} s")
    print("PostgreSQL statements by total time (calls, ms, rows, query):")
    for s in stmts:
        print(f"  {s[0]:6d} {s[1]:10.0f} ms {s[2]:10d}  {s[3]}")
    print(
        f"WAL: {_mb(wal[0])} in {wal[1]:,} records, {wal[2]:,} full-page images, "
        f"WAL buffers full {wal[3]:,} times"
    )
    print("I/O by process kind, object, context (reads, writes, extends):")
    for r in io:
        print(
            f"  {r[0]:20s} {r[1]:13s} {r[2]:9s} read {r[3] or 0:9,d} ({_mb(r[4])}), "
            f"written {r[5] or 0:9,d} ({_mb(r[6])}), extended {r[7] or 0:9,d} ({_mb(r[8])})"
        )
    print("stored after it (rows, heap, indexes):")
    for table, count, heap, indexes in sizes:
        print(f"  {table:13s} {count:>12,} rows {heap / 1e6:9.1f} MB {indexes / 1e6:9.1f} MB")
    cpu = {k: cpu_after[k] - cpu_before[k] for k in cpu_after}
    print("CPU s of the upload and the job: " + ", ".join(f"{k} {v:.2f}" for k, v in cpu.items()))
    print(f"RESULT upload {t_up - t0:.2f} s; job {t_done - t_up:.2f} s; total {t_done - t0:.2f} s")


if __name__ == "__main__":
    main()
