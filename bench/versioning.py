"""Storage that grows with the change, and diffs that cost what the difference costs.

Usage: python bench/versioning.py [--rows 200000,1000000] [--block 1000] [--repeat 3]
                                  [--chunk-size BYTES]

Starts one fresh embedded stack. For each size N (a dataset of its own) it imports, in order:
  1. the base file (N rows x 8 columns, as bench/import_vs_copy.py); its diff against nothing
     (every row added) reads the whole commit: the FULL DIFF baseline of that size;
  2. localized changes, each a file of its own, each diffed against the base commit:
     - "edit block": rows N/2 .. N/2+B-1 with their amount changed (B = --block);
     - "append at end": the base file with B rows more at its end;
     - "delete block": the base file without rows N/2 .. N/2+B-1;
  3. random changes, diffed against the base commit: every 100th row changed (1%), every
     10th (10%), and the 10% file again (0%: no commit should be made).
After each import it measures the bytes the versioned tables gained (pg_total_relation_size
of row_store, row_leaves, leaf_lists, commit_chunks, commits, column_sets: rows, commit_rows
and their indexes). Each diff goes through the API (limit 100) --repeat times; the median is
printed, with what the diff read (lists and leaves expanded) when the API reports it.
The localized diffs should take about the same time at every N (the difference is the same
size); the random ones grow with N, as any diff must when every part of the data changed.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

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


@dataclass
class Step:
    size: int
    label: str
    kind: str  # "full", "localized", "random"
    bytes_added: int
    import_seconds: float
    unchanged: bool
    diff_seconds: float | None = None
    counts: dict[str, int] = field(default_factory=dict)
    work: dict[str, int] | None = None


def files_for(rows: int, block: int) -> list[tuple[str, str, Path, dict[str, Any]]]:
    """(label, kind, path, write_csv options) of every import of one size, in order."""
    mid = range(rows // 2, rows // 2 + block)
    name = f"bench_{rows}"
    return [
        ("first import", "full", DATA / f"{name}.csv", {}),
        (f"edit block ({block:,} rows)", "localized", DATA / f"{name}_edit{block}.csv",
         {"changed_rows": mid}),
        (f"append at end ({block:,} rows)", "localized", DATA / f"{name}_plus{block}.csv",
         {"rows": rows + block}),
        (f"delete block ({block:,} rows)", "localized", DATA / f"{name}_drop{block}.csv",
         {"dropped_rows": mid}),
        ("1% changed", "random", DATA / f"{name}_1pct.csv", {"changed_every": 100}),
        ("10% changed", "random", DATA / f"{name}_10pct.csv", {"changed_every": 10}),
        ("0% changed (10% file again)", "random", DATA / f"{name}_10pct.csv", {"changed_every": 10}),
    ]  # fmt: skip


def timed_diff(
    client: Client, dataset: str, a: str | None, b: str, repeat: int
) -> tuple[float, dict[str, Any]]:
    query = f"/datasets/{dataset}/diff?to={b}&limit=100" + (f"&from={a}" if a else "")
    seconds, answer = [], {}
    for _ in range(repeat):
        started = time.perf_counter()
        answer = client.call("GET", query)
        seconds.append(time.perf_counter() - started)
    return statistics.median(seconds), answer


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", default="200000,1000000", help="dataset sizes, comma-separated")
    parser.add_argument("--block", type=int, default=1000, help="rows a localized change touches")
    parser.add_argument("--repeat", type=int, default=3, help="times each diff is run")
    parser.add_argument("--chunk-size", type=int, default=None, help="bytes per import range")
    args = parser.parse_args()
    sizes = [int(x) for x in args.rows.split(",")]

    steps: list[Step] = []
    with tempfile.TemporaryDirectory() as home, LocalStack(Settings(home=Path(home))) as stack:
        client = Client(stack.api_url, token=stack.local_token)
        for size in sizes:
            dataset, base = f"bench{size}", None
            for label, kind, path, options in files_for(size, args.block):
                if not path.exists():
                    write_csv(path, **{"rows": size, **options})
                before = table_bytes(stack.database_url)
                result = run_import(client, path, dataset, args.chunk_size, None, False)
                if result["status"] != "completed":
                    raise SystemExit(f"{size:,} rows, {label}: import failed: {result['error']}")
                added = sum(table_bytes(stack.database_url)[t] - before[t] for t in TABLES)
                step = Step(size, label, kind, added, result["seconds"], result["unchanged"])
                if base is None:
                    base = result["commit_id"]
                    step.diff_seconds, answer = timed_diff(client, dataset, None, base, args.repeat)
                elif not result["unchanged"]:
                    step.diff_seconds, answer = timed_diff(
                        client, dataset, base, result["commit_id"], args.repeat
                    )
                if step.diff_seconds is not None:
                    step.counts = {k: answer[k] for k in ("added", "removed", "changed")}
                    step.work = answer.get("work")
                steps.append(step)
                print(
                    f"{size:,} rows, {label}: +{added / 1e6:.2f} MB in {result['seconds']:.2f} s; "
                    + (
                        "no commit (unchanged)"
                        if step.unchanged
                        else f"diff {step.counts} in {step.diff_seconds:.3f} s, read {step.work}"
                    ),
                    flush=True,
                )

    print()
    print(f"tables: {', '.join(TABLES)}; diff = median of {args.repeat} API calls (limit 100)")
    for size in sizes:
        mine = [s for s in steps if s.size == size]
        first = mine[0]
        assert first.diff_seconds is not None
        print(f"-- {size:,} rows")
        for s in mine:
            read = ""
            if s.work:
                read = f"; read {s.work.get('lists_read', '?')} lists, " + (
                    f"{s.work.get('leaves_read', '?')} leaves"
                )
            diff = (
                f"diff {s.diff_seconds:7.3f} s = {s.diff_seconds / first.diff_seconds:5.2f}x full"
                if s.diff_seconds is not None
                else "no commit"
            )
            print(
                f"{s.label:30s} bytes added {s.bytes_added / 1e6:8.2f} MB = "
                f"{s.bytes_added / first.bytes_added:6.1%} of the first; import "
                f"{s.import_seconds:6.2f} s; {diff}{read}"
            )
    if len(sizes) > 1:
        small, large = sizes[0], sizes[-1]
        print(f"-- diff time at {large:,} rows / at {small:,} rows (same change)")
        by = {(s.size, s.label): s for s in steps}
        for s in steps:
            if s.size != large or s.diff_seconds is None:
                continue
            other = by.get((small, s.label))
            if other is not None and other.diff_seconds:
                print(f"{s.label:30s} {s.diff_seconds / other.diff_seconds:5.2f}x")


if __name__ == "__main__":
    main()
