"""Export 1,000,000 rows to CSV parts on the local S3 vs plain COPY TO STDOUT of the same rows.

Usage: python bench/export_vs_copy.py [--rows N] [--memory-rows M] [--part-rows R]

Generates a CSV (8 mixed columns, quoted text with commas, quotes and newlines), starts a fresh
embedded stack, imports it through the pipeline (not timed here: bench/import_vs_copy.py does),
then in the same run:
  1. baseline: the same rows in a plain table, ``COPY (SELECT ...) TO STDOUT (FORMAT csv)`` into
     a local file (what a system without versions would do);
  2. for reference, one ``COPY (SELECT ... commit_row_range ...) TO STDOUT`` of the commit into a
     file: the versioned storage read by one backend, without the state machine or S3;
  3. sluiceway: POST /datasets/bench/exports (CSV) -> the export state machine -> parts in S3 ->
     the job completed with its manifest, timed from the POST to the job's end; then the
     download of the parts, timed on its own.
Then, with M rows (default 5,000,000) in a second dataset, the same export again with peak
resident memory sampled for every process: the stack (API, moto's S3 and interpreter; moto
keeps every object in memory), each worker process (where the parts are written) and each
PostgreSQL backend. The last lines are the figures and the ratio.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import Any

import psycopg
from import_vs_copy import DATA, PeakMemory

from sluiceway.cli import run_import
from sluiceway.client import Client
from sluiceway.local.stack import LocalStack
from sluiceway.sample import COLUMNS, write_csv
from sluiceway.settings import Settings


def _data(rows: int) -> Path:
    path = DATA / f"bench_{rows}.csv"
    if not path.exists():
        write_csv(path, rows)
    return path


def copy_out_raw(url: str, path: Path, out: Path) -> float:
    """COPY (SELECT ...) TO STDOUT from a plain table of the same rows, into a file (header
    first, as every export part has)."""
    cols = ", ".join(f'"{c}" text' for c in COLUMNS)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("DROP TABLE IF EXISTS bench_raw")
        conn.execute(f"CREATE UNLOGGED TABLE bench_raw ({cols})")
        with (
            conn.cursor().copy("COPY bench_raw FROM STDIN (FORMAT csv, HEADER)") as copy,
            path.open("rb") as f,
        ):
            while block := f.read(1 << 20):
                copy.write(block)
        conn.execute("VACUUM ANALYZE bench_raw")
        # one backend, as every part is: a parallel scan would also return rows out of order
        conn.execute("SET max_parallel_workers_per_gather = 0")
        select = ", ".join(f'"{c}"' for c in COLUMNS)
        started = time.perf_counter()
        with (
            conn.cursor().copy(
                f"COPY (SELECT {select} FROM bench_raw) TO STDOUT (FORMAT csv, HEADER)"
            ) as copy,
            out.open("wb") as f,
        ):
            for block in copy:
                f.write(block)
        elapsed = time.perf_counter() - started
        conn.execute("DROP TABLE bench_raw")
    return elapsed


def copy_out_commit(url: str, commit_id: str, out: Path) -> float:
    """One backend's COPY of the commit's rows, read the way the export's parts read them."""
    fields = ", ".join(f"s.vals[{i}]" for i in _positions())
    query = (
        f"COPY (SELECT {fields} FROM (SELECT row_number, row_hash "
        "FROM dsa_core.commit_row_range(%s, 1, NULL) ORDER BY row_hash OFFSET 0) r "
        "CROSS JOIN LATERAL (SELECT s.vals FROM dsa_core.row_store s "
        "WHERE s.row_hash = r.row_hash OFFSET 0) s ORDER BY r.row_number) TO STDOUT (FORMAT csv)"
    )
    with psycopg.connect(url, autocommit=True) as conn:
        started = time.perf_counter()
        with conn.cursor().copy(query, (commit_id,)) as copy, out.open("wb") as f:
            f.write((",".join(COLUMNS) + "\n").encode())
            for block in copy:
                f.write(block)
        return time.perf_counter() - started


def _first_difference(a: Path, b: Path) -> str:
    """'True', or where the two files first differ."""
    x, y = a.read_bytes(), b.read_bytes()
    if x == y:
        return "True"
    at = next(
        (i for i, (p, q) in enumerate(zip(x, y, strict=False)) if p != q), min(len(x), len(y))
    )
    return (
        f"False ({len(x):,} vs {len(y):,} bytes; first difference at byte {at:,}: "
        f"{x[max(at - 60, 0) : at + 60]!r} vs {y[max(at - 60, 0) : at + 60]!r})"
    )


def _positions() -> list[int]:
    ranks = {name: i + 1 for i, name in enumerate(sorted(COLUMNS))}
    return [ranks[c] for c in COLUMNS]


def export_parts(client: Client, dataset: str, part_rows: int | None) -> tuple[float, Any, Any]:
    """POST the export and wait for its job: (seconds, status, download URLs)."""
    request: dict[str, Any] = {"format": "csv"}
    if part_rows:
        request["part_rows"] = part_rows
    started = time.perf_counter()
    status, urls = client.run_export(dataset, request, poll_seconds=0.05)
    elapsed = time.perf_counter() - started
    if urls is None:
        raise SystemExit(f"export failed: {status.get('error')}")
    return elapsed, status, urls


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument(
        "--memory-rows", type=int, default=5_000_000, help="Second run for memory; 0: skip."
    )
    parser.add_argument("--part-rows", type=int, help="Rows per part (default: one per worker).")
    args = parser.parse_args()

    path = _data(args.rows)
    size = path.stat().st_size
    print(f"file: {path} ({size:,} bytes, {args.rows:,} rows x {len(COLUMNS)} columns)")

    with (
        tempfile.TemporaryDirectory() as home,
        LocalStack(Settings(home=Path(home)), stop_database=True) as stack,
    ):
        client = Client(stack.api_url, token=stack.local_token)
        imported = run_import(client, path, "bench", None, None, show_progress=False)
        if imported["status"] != "completed":
            raise SystemExit(f"import failed: {imported['error']}")
        print(f"imported {imported['rows']:,} rows in {imported['seconds']:.2f} s (not compared)")

        raw_seconds = copy_out_raw(stack.database_url, path, Path(home) / "raw.csv")
        commit_seconds = copy_out_commit(
            stack.database_url, imported["commit_id"], Path(home) / "commit.csv"
        )
        with PeakMemory() as memory:
            export_seconds, _, urls = export_parts(client, "bench", args.part_rows)
        download_started = time.perf_counter()
        with (Path(home) / "export.csv").open("wb") as f:
            client.download_export(urls, f)
        download_seconds = time.perf_counter() - download_started
        same = _first_difference(Path(home) / "export.csv", Path(home) / "commit.csv")
        # a plain table's heap order is not its load order, so the rows are compared as sets
        raw_lines = sorted((Path(home) / "raw.csv").read_bytes().splitlines())
        same_rows = sorted((Path(home) / "export.csv").read_bytes().splitlines()) == raw_lines
        print(
            f"export: {urls['rows']:,} rows, {urls['bytes']:,} bytes in {len(urls['parts'])} "
            f"part(s); joined download identical to the commit's COPY: {same}; "
            f"the same lines as the plain table's COPY: {same_rows}"
        )
        for kind in ("stack", "worker", "postgres"):
            print(
                f"peak RSS of one {kind} process, {args.rows:,} rows: "
                f"{memory.peaks.get(kind, 0) / 2**20:.0f} MiB"
            )

        if args.memory_rows:
            big = _data(args.memory_rows)
            more = run_import(client, big, "bench-big", None, None, show_progress=False)
            if more["status"] != "completed":
                raise SystemExit(f"import failed: {more['error']}")
            with PeakMemory() as big_memory:
                big_seconds, _, big_urls = export_parts(client, "bench-big", args.part_rows)
            print(
                f"export of {args.memory_rows:,} rows: {big_seconds:.2f} s, "
                f"{len(big_urls['parts'])} part(s), {big_urls['bytes']:,} bytes"
            )
            for kind in ("stack", "worker", "postgres"):
                print(
                    f"peak RSS of one {kind} process, {args.memory_rows:,} rows: "
                    f"{big_memory.peaks.get(kind, 0) / 2**20:.0f} MiB"
                )

    print(f"download of the parts, joined into one file: {download_seconds:.2f} s")
    print(f"one COPY of the commit (versioned storage, one backend, no S3): {commit_seconds:.2f} s")
    print(f"sluiceway export to CSV parts on S3 (POST to job completed): {export_seconds:.2f} s")
    print(f"COPY (SELECT ...) TO STDOUT of a plain table into a file: {raw_seconds:.2f} s")
    print(f"RATIO export / COPY TO: {export_seconds / raw_seconds:.1f}x")


if __name__ == "__main__":
    main()
