"""Import 1M and then 10M rows on one stack: time against COPY, and memory that must not grow.

Usage: python bench/import_scale.py [--rows 1000000,10000000] [--chunk-size 64MiB]

Generates the CSVs (bench/import_vs_copy.py's shape: 8 mixed columns, quoted text with commas,
quotes and newlines), starts a fresh embedded stack, and for each size in turn, into a dataset
of its own: COPY of the file into an UNLOGGED unindexed table (the baseline, same database,
same moment), then the whole import (presigned upload -> event -> state machine -> commit).
During each import it samples peak RSS of every worker process (where ranges are loaded) and
counts the CPU seconds of the stack process, the workers and PostgreSQL's processes.
The last lines are the figures and ratios: each import against its COPY, and the largest
size's worker peak against the smallest's.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import tempfile
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).parent))

from import_vs_copy import PeakMemory, copy_baseline

from sluiceway.cli import parse_size, run_import
from sluiceway.client import Client
from sluiceway.local.stack import LocalStack
from sluiceway.sample import write_csv
from sluiceway.settings import Settings

DATA = Path(__file__).parent / "data"


def cpu_seconds(postmaster_pid: int) -> dict[str, float]:
    """CPU (user + system) seconds so far of the stack, its workers, and its PostgreSQL server
    (the postmaster, its live processes, and those it has reaped); never another server's."""
    me = psutil.Process()
    out = {"stack": 0.0, "workers": 0.0, "postgres": 0.0}
    t = me.cpu_times()
    out["stack"] = t.user + t.system
    for child in me.children(recursive=True):
        with contextlib.suppress(psutil.Error):
            t = child.cpu_times()
            out["workers"] += t.user + t.system
    postmaster = psutil.Process(postmaster_pid)
    t = postmaster.cpu_times()
    out["postgres"] = t.user + t.system + t.children_user + t.children_system
    for child in postmaster.children():
        with contextlib.suppress(psutil.Error):
            t = child.cpu_times()
            out["postgres"] += t.user + t.system
    return out


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", default="1000000,10000000")
    parser.add_argument("--chunk-size", default="64MiB")
    args = parser.parse_args()
    sizes = [int(n) for n in args.rows.split(",")]
    paths = {}
    for rows in sizes:
        paths[rows] = DATA / f"bench_{rows}.csv"
        if not paths[rows].exists():
            write_csv(paths[rows], rows)

    results = []
    with (
        tempfile.TemporaryDirectory() as home,
        LocalStack(Settings(home=Path(home)), stop_database=True) as stack,
    ):
        client = Client(stack.api_url, token=stack.local_token)
        # the embedded server's postmaster (first line of postmaster.pid)
        pg_pid = int((Path(home) / "pg" / "postmaster.pid").read_text().split()[0])
        for rows in sizes:
            path = paths[rows]
            copy_seconds = copy_baseline(stack.database_url, path)
            before = cpu_seconds(pg_pid)
            with PeakMemory() as memory:
                result = run_import(
                    client,
                    path,
                    f"scale_{rows}",
                    parse_size(args.chunk_size),
                    None,
                    show_progress=False,
                )
            after = cpu_seconds(pg_pid)
            if result["status"] != "completed":
                raise SystemExit(f"{rows:,} rows: import failed: {result['error']}")
            cpu = {k: after[k] - before[k] for k in after}
            results.append((rows, copy_seconds, result, memory.peaks, cpu))
            print(
                f"{rows:,} rows ({path.stat().st_size / 1e6:,.0f} MB): COPY {copy_seconds:.2f} s, "
                f"import {result['seconds']:.2f} s ({result['rows']:,} rows), worker peak RSS "
                f"{memory.peaks.get('worker', 0) / 2**20:.0f} MiB; CPU s: "
                + ", ".join(f"{k} {v:.1f}" for k, v in cpu.items()),
                flush=True,
            )

    first_rss = results[0][3].get("worker", 0)
    for rows, copy_seconds, result, peaks, cpu in results:
        seconds = result["seconds"]
        work = sum(cpu.values())
        print(
            f"RESULT {rows:,} rows: import {seconds:.2f} s, COPY {copy_seconds:.2f} s, "
            f"RATIO import / COPY {seconds / copy_seconds:.1f}x; rows/s {rows / seconds:,.0f}; "
            f"CPU s {work:.1f}; "
            f"worker peak RSS {peaks.get('worker', 0) / 2**20:.0f} MiB "
            f"= {peaks.get('worker', 0) / first_rss:.2f}x the {results[0][0]:,}-row import's"
        )


if __name__ == "__main__":
    main()
