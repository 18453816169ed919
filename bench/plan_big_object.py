"""Plan a 10 GB CSV import (ranges only) and count the bytes the planner reads.

Usage: python bench/plan_big_object.py [--size 10GB] [--chunk-size 64MiB]

Starts a fresh embedded stack and creates an upload through the API (a real upload row and
job), but no bytes are uploaded: the object is bench/synthetic.py's arithmetic CSV of the
given size, served to the planner's S3 client by a fake that counts every ranged GET. Then it
runs the real planner (``plan.plan_import``: header, dialect, trailing blank lines, the raw
ranges written to import_chunks and work/ranges.json) and prints its time and the bytes it
read against the object's size. The last lines are the figures.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))

from synthetic import FakeS3, SyntheticCsv

from sluiceway import plan, storage
from sluiceway.cli import parse_size
from sluiceway.client import Client
from sluiceway.local.stack import LocalStack
from sluiceway.settings import Settings


def plan_synthetic(
    stack: LocalStack, obj: SyntheticCsv, chunk_bytes: int, dataset: str = "big"
) -> tuple[dict[str, Any], FakeS3, float, dict[str, Any]]:
    """Create an upload of ``obj`` (no bytes) and run the real planner on it.

    Returns (the planner's state output, the fake S3 with its counters, seconds, upload)."""
    client = Client(stack.api_url, token=stack.local_token)
    created = client.call(
        "POST",
        "/uploads",
        {
            "dataset": dataset,
            "filename": "big.csv",
            "size": obj.size,
            "options": {"chunk_bytes": chunk_bytes},
        },
    )
    import psycopg

    with psycopg.connect(stack.database_url) as conn:
        row = conn.execute(
            "SELECT bucket, object_key FROM dsa_jobs.uploads WHERE upload_id = %s",
            (created["upload_id"],),
        ).fetchone()
    assert row is not None
    bucket, key = row
    real = storage.s3_client
    fake = FakeS3(real(stack.settings), key, obj)
    storage.s3_client = lambda settings=None: fake  # type: ignore[assignment]
    try:
        event = {"detail": {"bucket": {"name": bucket}, "object": {"key": key, "size": obj.size}}}
        started = time.perf_counter()
        out = plan.plan_import({"event": event, "execution": "arn:bench"}, stack.settings)
        seconds = time.perf_counter() - started
    finally:
        storage.s3_client = real  # type: ignore[assignment]
    return out, fake, seconds, {**created, "bucket": bucket, "key": key}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--size", default="10GB")
    parser.add_argument("--chunk-size", default="64MiB")
    args = parser.parse_args()
    obj = SyntheticCsv(parse_size(args.size))
    chunk_bytes = parse_size(args.chunk_size)
    with (
        tempfile.TemporaryDirectory() as home,
        LocalStack(Settings(home=Path(home)), stop_database=True) as stack,
    ):
        out, fake, seconds, _ = plan_synthetic(stack, obj, chunk_bytes)
        ranges = _count_ranges(stack.database_url, out["job_id"])
    share = fake.bytes_read / obj.size
    print(f"object: {obj.size:,} bytes ({obj.records:,} records), chunk size {chunk_bytes:,}")
    print(f"planner: {ranges:,} raw ranges, {fake.gets} ranged GETs")
    print(f"RESULT plan seconds: {seconds:.3f}")
    print(f"RESULT bytes read: {fake.bytes_read:,} = {share:.6%} of the object")


def _count_ranges(url: str, job_id: str) -> int:
    import psycopg

    with psycopg.connect(url) as conn:
        row = conn.execute(
            "SELECT count(*) FROM dsa_jobs.import_chunks WHERE job_id = %s", (job_id,)
        ).fetchone()
    return int(row[0]) if row else 0


if __name__ == "__main__":
    main()
