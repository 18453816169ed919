"""Import 1,000,000 CSV rows through the whole pipeline vs plain COPY on the same database.

Usage: python bench/import_vs_copy.py [--rows N] [--chunk-size 16MiB]

Generates a CSV (8 mixed columns, quoted text with commas, quotes and newlines), starts a
fresh embedded stack, then in the same run:
  1. baseline: COPY ... FROM STDIN (FORMAT csv) into an UNLOGGED table with no index;
  2. sluiceway: upload through presigned URLs -> object-created event -> state machine ->
     plan, scan, Map of COPY loads -> commit (timed from the first upload byte to the job's end);
  3. the export of the commit to CSV vs COPY ... TO STDOUT;
  4. a re-import into the same dataset of the file with 1% of its rows changed (every 100th
     row's amount; --changed-every), timed the same way, against the first import.
Peak resident memory is measured for every process (the kernel's peak, and samples for those
that start meanwhile): the stack (API, moto, interpreter), each worker process, and each
PostgreSQL backend. The last lines are the figures and ratios.
"""

from __future__ import annotations

import argparse
import tempfile
import threading
import time
from pathlib import Path

import psutil
import psycopg

from sluiceway.cli import parse_size, run_import
from sluiceway.client import Client
from sluiceway.local.stack import LocalStack
from sluiceway.sample import COLUMNS, write_csv
from sluiceway.settings import Settings

DATA = Path(__file__).parent / "data"


class PeakMemory:
    """Peak RSS of this process, its children, and PostgreSQL's processes, by kind.

    The kernel keeps each process's peak RSS (``VmHWM`` in /proc/<pid>/status). It is reset
    for every process found when the measurement starts (``5`` into /proc/<pid>/clear_refs)
    and read for every process still alive when it ends, so a peak between two samples is
    not missed (a worker's scan holds its 64 MiB range for ~70 ms). Between those, the RSS of
    the processes known is sampled every 50 ms, and the process table is scanned for new ones
    once a second: walking every process each 50 ms cost this process 9 CPU-s of a 10M
    import, on the same two cores as what it measures. A process without a reset peak (not
    Linux, no permission, or started during the measurement) counts by its samples only.
    """

    SAMPLE_SECONDS = 0.05
    SCAN_SECONDS = 1.0

    def __init__(self) -> None:
        self.peaks: dict[str, int] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._known: dict[int, tuple[str, psutil.Process]] = {}
        self._reset: set[int] = set()
        self._me = psutil.Process()

    def _scan(self) -> None:
        found = [("stack", self._me)]
        found += [("worker", c) for c in self._me.children(recursive=True)]
        found += [
            ("postgres", p) for p in psutil.process_iter(["name"]) if p.info["name"] == "postgres"
        ]
        for kind, process in found:
            self._known.setdefault(process.pid, (kind, process))

    def _sample(self) -> None:
        for pid, (kind, process) in list(self._known.items()):
            try:
                rss = process.memory_info().rss
            except psutil.Error:
                self._known.pop(pid, None)
                continue
            self.peaks[kind] = max(self.peaks.get(kind, 0), rss)

    def _run(self) -> None:
        next_scan = time.monotonic() + self.SCAN_SECONDS
        while not self._stop.wait(self.SAMPLE_SECONDS):
            if time.monotonic() >= next_scan:
                self._scan()
                next_scan = time.monotonic() + self.SCAN_SECONDS
            self._sample()

    def __enter__(self) -> PeakMemory:
        self._scan()
        for pid in self._known:
            try:
                Path(f"/proc/{pid}/clear_refs").write_text("5")
            except OSError:
                continue
            self._reset.add(pid)
        self._sample()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self._sample()
        for pid in self._reset:
            kind, _ = self._known.get(pid, ("", None))
            if not kind:
                continue
            try:
                status = Path(f"/proc/{pid}/status").read_text()
            except OSError:
                continue
            for line in status.splitlines():
                if line.startswith("VmHWM:"):
                    peak = int(line.split()[1]) * 1024
                    self.peaks[kind] = max(self.peaks.get(kind, 0), peak)


def copy_baseline(url: str, path: Path) -> float:
    cols = ", ".join(f'"{c}" text' for c in COLUMNS)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("DROP TABLE IF EXISTS bench_raw")
        conn.execute(f"CREATE UNLOGGED TABLE bench_raw ({cols})")
        started = time.perf_counter()
        with (
            conn.cursor().copy("COPY bench_raw FROM STDIN (FORMAT csv, HEADER)") as copy,
            path.open("rb") as f,
        ):
            while block := f.read(1 << 20):
                copy.write(block)
        elapsed = time.perf_counter() - started
        conn.execute("DROP TABLE bench_raw")
    return elapsed


def copy_out_baseline(url: str, path: Path, out: Path) -> float:
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
        started = time.perf_counter()
        with (
            conn.cursor().copy("COPY bench_raw TO STDOUT (FORMAT csv, HEADER)") as copy,
            out.open("wb") as f,
        ):
            for block in copy:
                f.write(block)
        elapsed = time.perf_counter() - started
        conn.execute("DROP TABLE bench_raw")
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--chunk-size", default="16MiB")
    parser.add_argument("--changed-every", type=int, default=100, help="0: no re-import")
    args = parser.parse_args()

    path = DATA / f"bench_{args.rows}.csv"
    if not path.exists():
        write_csv(path, args.rows)
    size = path.stat().st_size
    print(f"file: {path} ({size:,} bytes, {args.rows:,} rows x {len(COLUMNS)} columns)")
    changed = DATA / f"bench_{args.rows}_every{args.changed_every}.csv"
    if args.changed_every and not changed.exists():
        write_csv(changed, args.rows, changed_every=args.changed_every)

    with (
        tempfile.TemporaryDirectory() as home,
        LocalStack(Settings(home=Path(home)), stop_database=True) as stack,
    ):
        client = Client(stack.api_url, token=stack.local_token)
        copy_seconds = copy_baseline(stack.database_url, path)
        print(f"baseline COPY into an unlogged, unindexed table: {copy_seconds:.2f} s")
        with PeakMemory() as memory:
            result = run_import(
                client, path, "bench", parse_size(args.chunk_size), None, show_progress=False
            )
        if result["status"] != "completed":
            raise SystemExit(f"import failed: {result['error']}")
        job = client.call("GET", f"/jobs/{result['job_id']}")
        export_started = time.perf_counter()
        _, urls = client.run_export("bench", {"format": "csv"})
        if urls is None:
            raise SystemExit("export failed")
        with (Path(home) / "export.csv").open("wb") as f:
            client.download_export(urls, f)
        export_seconds = time.perf_counter() - export_started
        copy_out_seconds = copy_out_baseline(stack.database_url, path, Path(home) / "copy_out.csv")
        again, again_job = None, {}
        if args.changed_every:
            again = run_import(
                client, changed, "bench", parse_size(args.chunk_size), None, show_progress=False
            )
            if again["status"] != "completed":
                raise SystemExit(f"re-import failed: {again['error']}")
            again_job = client.call("GET", f"/jobs/{again['job_id']}")
        with psycopg.connect(stack.database_url) as conn:
            sizes = conn.execute(
                "SELECT pg_total_relation_size('dsa_core.row_store'), "
                "pg_total_relation_size('dsa_core.row_leaves') "
                "+ pg_total_relation_size('dsa_core.leaf_lists') "
                "+ pg_total_relation_size('dsa_core.commit_chunks')"
            ).fetchone()

    import_seconds = result["seconds"]
    print(
        f"sluiceway import (upload + state machine + commit): {import_seconds:.2f} s "
        f"(job itself {job['progress'].get('seconds', 0):.2f} s), {result['rows']:,} rows"
    )
    print(
        f"storage: rows {sizes[0] / 1e6:.0f} MB, commit_rows (leaves + lists + chunks) "
        f"{sizes[1] / 1e6:.1f} MB"
    )
    print(
        f"export to CSV (export state machine + download): {export_seconds:.2f} s; COPY TO STDOUT: {copy_out_seconds:.2f} s"
    )
    for kind in ("stack", "worker", "postgres"):
        print(f"peak RSS of one {kind} process: {memory.peaks.get(kind, 0) / 2**20:.0f} MiB")
    print(f"import rows/s: {result['rows'] / import_seconds:,.0f}")
    print(f"RATIO import / COPY: {import_seconds / copy_seconds:.1f}x")
    print(f"RATIO export / COPY TO: {export_seconds / copy_out_seconds:.1f}x")
    if again is not None:
        share = 1 / args.changed_every
        print(
            f"re-import with {share:.0%} of rows changed: {again['seconds']:.2f} s "
            f"({again['changes']})"
        )
        # without the uploads into moto's in-memory S3, whose time varies the most here (a
        # later 83 MB upload took 0.9 to 8 s) and which on AWS is the client's PUTs to S3
        first_job = job["progress"].get("seconds", 0)
        again_seconds = again_job["progress"].get("seconds", 0)
        print(
            f"RESULT the jobs alone (from the planner's start to the commit's end): re-import "
            f"{again_seconds:.2f} s, first import {first_job:.2f} s: "
            f"{again_seconds / first_job if first_job else 0:.2f}x"
        )
        print(
            f"RATIO re-import ({share:.0%} changed) / first import: "
            f"{again['seconds'] / import_seconds:.2f}x"
        )


if __name__ == "__main__":
    main()
