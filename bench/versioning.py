"""Storage that grows with the change, and diffs that cost what the difference costs.

Usage: python bench/versioning.py [--rows 200000,1000000] [--block 1000] [--repeat 3]
                                  [--chunk-size BYTES] [--scale-lists 5600,56000,560000]

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

Last, the list level at sizes this machine cannot import in a benchmark's time: for each L in
--scale-lists it makes (in a transaction it rolls back) two commits of L shared lists (stand-ins
of ~1,800 rows each: L=560,000 is a 1,000,000,000-row commit's count) plus the few real
lists in which the largest size's "edit block" commit differs from its base, and times
versioning.compute_diff between them, beside the same call on the two real commits. That is
what a diff of a localized change costs where the commit's own list of lists is long.
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
from psycopg.rows import dict_row

from sluiceway import tree, versioning
from sluiceway.cli import run_import
from sluiceway.client import Client
from sluiceway.local.stack import LocalStack
from sluiceway.sample import write_csv
from sluiceway.settings import Settings

DATA = Path(__file__).parent / "data"
LIST_ROWS = 7 << tree.LIST_BITS  # rows a list holds on average (7 a leaf)
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
    commit_id: str | None = None
    by_table: dict[str, int] = field(default_factory=dict)
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


def list_level(
    url: str, base: str | None, edited: str | None, scales: list[int], repeat: int
) -> list[tuple[int, float, versioning.DiffWork]]:
    """(lists a commit, median compute_diff seconds, what it read): 0 is the real commits."""
    assert base is not None
    assert edited is not None
    out: list[tuple[int, float, versioning.DiffWork]] = []
    with psycopg.connect(url, row_factory=dict_row) as conn:

        def timed(a: str, b: str) -> tuple[float, versioning.DiffWork]:
            seconds, work = [], None
            for _ in range(repeat):
                with conn.transaction():
                    started = time.perf_counter()
                    work = versioning.compute_diff(conn, a, b, "bench_diff").work
                    seconds.append(time.perf_counter() - started)
            assert work is not None
            return statistics.median(seconds), work

        out.append((0, *timed(base, edited)))
        la, lb = tree.commit_lists(conn, base), tree.commit_lists(conn, edited)
        only_a = [x for x in la if x not in lb]
        only_b = [x for x in lb if x not in la]
        for lists in scales:
            with conn.transaction(force_rollback=True):
                fake = [
                    tree.ListRef(bytes(r["h"]), LIST_ROWS)
                    for r in conn.execute(
                        "INSERT INTO dsa_core.leaf_lists "
                        "(list_hash, leaf_count, row_count, leaf_hashes, leaf_ends) "
                        "SELECT sha256(convert_to('bench stand-in list ' || g, 'UTF8')), 0, 0, "
                        "''::bytea, '{}' FROM generate_series(1, %s) g RETURNING list_hash AS h",
                        (lists,),
                    ).fetchall()
                ]
                ds = conn.execute(
                    "INSERT INTO dsa_core.datasets (owner, name, columns) "
                    "VALUES ('bench-scale', %s, '[]') RETURNING id",
                    (f"scale-{lists}",),
                ).fetchone()
                assert ds is not None
                ids = []
                for side, real in (("a", only_a), ("b", only_b)):
                    row = conn.execute(
                        "INSERT INTO dsa_core.commits (commit_id, dataset_id, message, author, "
                        "authored_at, row_count, columns) VALUES (%s, %s, 'scale', 'bench', now(), "
                        "0, '[]') RETURNING commit_key",
                        (f"scale-{lists}-{side}", ds["id"]),
                    ).fetchone()
                    assert row is not None
                    half = len(fake) // 2  # the changed list in the middle of the commit
                    tree.write_chunks(
                        conn, int(row["commit_key"]), fake[:half] + real + fake[half:]
                    )
                    ids.append(f"scale-{lists}-{side}")
                out.append((lists, *timed(ids[0], ids[1])))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", default="200000,1000000", help="dataset sizes, comma-separated")
    parser.add_argument("--block", type=int, default=1000, help="rows a localized change touches")
    parser.add_argument("--repeat", type=int, default=3, help="times each diff is run")
    parser.add_argument("--chunk-size", type=int, default=None, help="bytes per import range")
    parser.add_argument(
        "--scale-lists", default="5600,56000,560000", help="list counts for the list-level run"
    )
    args = parser.parse_args()
    sizes = [int(x) for x in args.rows.split(",")]

    steps: list[Step] = []
    with (
        tempfile.TemporaryDirectory() as home,
        LocalStack(Settings(home=Path(home)), stop_database=True) as stack,
    ):
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
                after = table_bytes(stack.database_url)
                by_table = {t: after[t] - before[t] for t in TABLES}
                step = Step(
                    size,
                    label,
                    kind,
                    sum(by_table.values()),
                    result["seconds"],
                    result["unchanged"],
                    commit_id=result["commit_id"],
                    by_table=by_table,
                )
                added = step.bytes_added
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
                print(
                    "   by table (kB): "
                    + ", ".join(f"{t} {b / 1e3:,.0f}" for t, b in by_table.items())
                )
        largest = [s for s in steps if s.size == sizes[-1]]
        scale = list_level(
            stack.database_url,
            largest[0].commit_id,
            largest[1].commit_id,
            [int(x) for x in args.scale_lists.split(",") if x],
            args.repeat,
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
    print(
        f"-- the list level: a localized diff (compute_diff, median of {args.repeat}) where each "
        "commit has L lists"
    )
    for lists, seconds, work in scale:
        what = (
            f"the real commits at {sizes[-1]:,} rows"
            if lists == 0
            else f"L = {lists:,} (~{lists * LIST_ROWS:,} rows)"
        )
        print(
            f"{what:40s} {seconds:7.3f} s; read {work.lists_read} lists, "
            f"{work.leaves_read} leaves, {work.rows_read} rows"
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
