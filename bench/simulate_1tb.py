"""A 1 TB CSV import planned for real, with no bytes: does it fit AWS's limits?

Usage: python bench/simulate_1tb.py [--size 1TB] [--chunk-size 256MiB] [--map-concurrency 64]
                                    [--load-mib-s 5] [--scan-mib-s 80]

On a fresh embedded stack, with bench/synthetic.py's arithmetic CSV standing in for the object:
  1. the real planner (``plan.plan_import``) cuts it into raw ranges and writes ranges.json;
  2. every range's quote/newline scan is what csvsplit.scan_range would find in those bytes
     (computed, not read) and is stored as the "Count quotes" Map's task stores it;
  3. the real fold (``plan.resolve_chunks``) turns them into load ranges and writes loads.json.
Then it measures what the state machine would carry: every state's JSON (the planner's and the
fold's outputs, the largest Map item), the Map results each Distributed Map would gather if
they were kept (the ASL discards them: ResultPath null), the item counts, and the per-range
Lambda duration at the given per-range rates (load: one database core's, measured in
bench/README.md; scan: one S3 GET stream's, an assumption: the scan itself runs at 971 MB/s),
and checks each against the limit in docs/scale.md. The last lines are the figures and a
``within limits: True/False`` verdict; it exits 1 when a limit is broken.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
import uuid
from pathlib import Path

import psycopg

sys.path.insert(0, str(Path(__file__).parent))

from plan_big_object import plan_synthetic
from synthetic import SyntheticCsv

from sluiceway import plan, storage
from sluiceway.cli import parse_size
from sluiceway.local.stack import LocalStack
from sluiceway.names import STATEMACHINES_DIR
from sluiceway.settings import ImportSettings, Settings

KiB = 1024
STATE_PAYLOAD_LIMIT = 256 * KiB  # Step Functions: input/output of a state or execution
DISTRIBUTED_MAP_CHILDREN = 10_000  # Distributed Map: child executions running at once
LAMBDA_SECONDS = 15 * 60  # Lambda: a function's timeout, at most
PLANNER_RANGE_LIMIT = 100_000  # plan.plan_import refuses more ranges


def _asl_map_states() -> dict[str, dict[str, object]]:
    asl = json.loads((STATEMACHINES_DIR / "import.asl.json").read_text())
    return {n: s for n, s in asl["States"].items() if s.get("Type") == "Map"}


def _child_outputs(map_state: dict[str, object], returned: list[dict[str, int]]) -> list[object]:
    """The child executions' outputs a Map gathers: {} when its one task's OutputPath is null."""
    processor = map_state["ItemProcessor"]
    assert isinstance(processor, dict)
    (task,) = processor["States"].values()
    if "OutputPath" in task and task["OutputPath"] is None:
        return [{} for _ in returned]
    return list(returned)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--size", default="1TB")
    parser.add_argument("--chunk-size", default="256MiB")
    parser.add_argument("--map-concurrency", type=int, default=64)
    parser.add_argument("--load-mib-s", type=float, default=5.0, help="one range's load rate")
    parser.add_argument("--scan-mib-s", type=float, default=80.0, help="one range's scan rate")
    args = parser.parse_args()
    obj = SyntheticCsv(parse_size(args.size))
    chunk_bytes = parse_size(args.chunk_size)
    imports = ImportSettings(map_concurrency=args.map_concurrency)

    with tempfile.TemporaryDirectory() as home:
        settings = Settings(home=Path(home), imports=imports)
        with LocalStack(settings, stop_database=True) as stack:
            planned, fake, plan_seconds, _ = plan_synthetic(stack, obj, chunk_bytes)
            job_id = uuid.UUID(planned["job_id"])
            with psycopg.connect(stack.database_url) as conn:
                raw = conn.execute(
                    "SELECT chunk_no, raw_start, raw_end FROM dsa_jobs.import_chunks "
                    "WHERE job_id = %s ORDER BY chunk_no",
                    (job_id,),
                ).fetchall()
                started = time.perf_counter()
                scans = [(n, obj.scan(a, b)) for n, a, b in raw]
                with conn.cursor() as cur:
                    cur.executemany(
                        "UPDATE dsa_jobs.import_chunks SET quote_count = %s, first_nl_even = %s, "
                        "first_nl_odd = %s, lines_to_even = %s, lines_to_odd = %s, "
                        "newline_count = %s, status = 'scanned' "
                        "WHERE job_id = %s AND chunk_no = %s",
                        [
                            (
                                s.quote_count,
                                s.first_newline_even,
                                s.first_newline_odd,
                                s.lines_to_even,
                                s.lines_to_odd,
                                s.newline_count,
                                job_id,
                                n,
                            )
                            for n, s in scans
                        ],
                    )
                conn.commit()
                scan_store_seconds = time.perf_counter() - started
            started = time.perf_counter()
            resolved = plan.resolve_chunks(planned, stack.settings)
            resolve_seconds = time.perf_counter() - started
            work = storage.work_client(stack.settings)
            bucket = stack.settings.storage.bucket
            ranges_json = work.get_object(Bucket=bucket, Key=planned["ranges_key"])["Body"].read()
            loads_json = work.get_object(Bucket=bucket, Key=resolved["loads_key"])["Body"].read()
            with psycopg.connect(stack.database_url) as conn:
                loads = conn.execute(
                    "SELECT chunk_no, start_byte, end_byte FROM dsa_jobs.import_chunks "
                    "WHERE job_id = %s AND status = 'resolved' ORDER BY chunk_no",
                    (job_id,),
                ).fetchall()

    items = json.loads(loads_json)
    rows_per_load = [obj.newlines(a, b) for _, a, b in loads]
    covered = sum(b - a for _, a, b in loads)
    # What each Map would gather if its results were kept: what its child task outputs. The
    # ASL's child tasks have OutputPath null, so each child's output is {}; with "$.Payload"
    # it would be the task's return value.
    maps = _asl_map_states()
    scan_out = [{"chunk_no": n, "quotes": s.quote_count} for n, s in scans]
    load_out = [
        {"chunk_no": n, "rows": r} for (n, _, _), r in zip(loads, rows_per_load, strict=True)
    ]
    scan_results = json.dumps(_child_outputs(maps["Count quotes in each range"], scan_out)).encode()
    load_results = json.dumps(_child_outputs(maps["Load ranges in parallel"], load_out)).encode()
    biggest_item = max(len(json.dumps(i).encode()) for i in items)
    range_bytes = max(b - a for _, a, b in loads)
    load_minutes = range_bytes / 2**20 / args.load_mib_s / 60
    scan_minutes = range_bytes / 2**20 / args.scan_mib_s / 60
    modes = {n: s["ItemProcessor"]["ProcessorConfig"]["Mode"] for n, s in maps.items()}  # type: ignore[index]
    readers = {n: "ItemReader" in s for n, s in maps.items()}
    checks = {
        "planner's output < 256 KiB": len(json.dumps(planned).encode()) < STATE_PAYLOAD_LIMIT,
        "fold's output < 256 KiB": len(json.dumps(resolved).encode()) < STATE_PAYLOAD_LIMIT,
        "one Map item < 256 KiB": biggest_item < STATE_PAYLOAD_LIMIT,
        "both Maps are DISTRIBUTED with an ItemReader (items from S3, not the payload)": all(
            m == "DISTRIBUTED" for m in modes.values()
        )
        and all(readers.values()),
        "Map concurrency <= 10,000 children": args.map_concurrency <= DISTRIBUTED_MAP_CHILDREN,
        "scan results, if gathered, < 256 KiB": len(scan_results) < STATE_PAYLOAD_LIMIT,
        "load results, if gathered, < 256 KiB": len(load_results) < STATE_PAYLOAD_LIMIT,
        "ranges <= the planner's 100,000": len(raw) <= PLANNER_RANGE_LIMIT,
        "one load range < 15 min of Lambda": load_minutes * 60 < LAMBDA_SECONDS,
        "load ranges tile the data exactly": covered == obj.size - planned_data_start(),
        "every record is in one load range": sum(rows_per_load) == obj.records,
    }
    print(f"object: {obj.size:,} bytes, {obj.records:,} records; chunk size {chunk_bytes:,}")
    print(
        f"planner: {len(raw):,} raw ranges in {plan_seconds:.2f} s, {fake.gets} GETs, "
        f"{fake.bytes_read:,} bytes read ({fake.bytes_read / obj.size:.8%})"
    )
    print(
        f"scans stored in {scan_store_seconds:.2f} s; fold: {len(loads):,} load ranges in "
        f"{resolve_seconds:.2f} s"
    )
    print(
        f"payloads: planner {len(json.dumps(planned))} B, fold {len(json.dumps(resolved))} B, "
        f"largest item {biggest_item} B; ranges.json {len(ranges_json):,} B, loads.json "
        f"{len(loads_json):,} B; gathered results: scan {len(scan_results):,} B, load "
        f"{len(load_results):,} B"
    )
    print(
        f"largest range {range_bytes / 2**20:.1f} MiB: load {load_minutes:.1f} min at "
        f"{args.load_mib_s} MiB/s, scan {scan_minutes:.1f} min at {args.scan_mib_s} MiB/s; "
        f"Map concurrency {args.map_concurrency}: {-(-len(loads) // args.map_concurrency)} rounds"
    )
    for name, ok in checks.items():
        print(f"check: {name}: {'ok' if ok else 'BROKEN'}")
    verdict = all(checks.values())
    print(f"RESULT within limits: {verdict}")
    if not verdict:
        raise SystemExit(1)


def planned_data_start() -> int:
    from synthetic import HEADER

    return len(HEADER)


if __name__ == "__main__":
    main()
