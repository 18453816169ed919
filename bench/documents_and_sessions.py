"""Documents and record sessions on the embedded stack: throughput and the API's memory.

Usage: python bench/documents_and_sessions.py [--document-mib 256] [--chunks 20]

1. a random document of N MiB: presigned multipart upload (4 parallel PUTs), then a download
   through the presigned URL, stopped half-way and resumed with a Range request;
2. a record session of C chunks x 10,000 JSON records (5 columns): sending the chunks, then the
   commit (chunks streamed into one CSV object) and the import it starts.
The stack process's peak RSS is sampled throughout; with the session's assembly streamed, it
should not grow with the session's size.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import tempfile
import threading
import time
import uuid
from pathlib import Path

import psutil

from sluiceway.client import Client
from sluiceway.local.stack import LocalStack
from sluiceway.settings import Settings

MiB = 1024 * 1024


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--document-mib", type=int, default=256)
    parser.add_argument("--chunks", type=int, default=20)
    args = parser.parse_args()
    peak = [0]
    stop = threading.Event()

    def sample() -> None:
        me = psutil.Process()
        while not stop.is_set():
            peak[0] = max(peak[0], me.memory_info().rss)
            stop.wait(0.05)

    threading.Thread(target=sample, daemon=True).start()
    with (
        tempfile.TemporaryDirectory() as tmp,
        LocalStack(Settings(home=Path(tmp) / "home"), stop_database=True) as stack,
    ):
        client = Client(stack.api_url, token=stack.local_token)
        src = Path(tmp) / "doc.bin"
        with src.open("wb") as f:
            for _ in range(args.document_mib):
                f.write(os.urandom(MiB))
        started = time.perf_counter()
        doc = client.upload_document(src)
        up = time.perf_counter() - started
        out = Path(tmp) / "copy.bin"
        half = args.document_mib * MiB // 2
        partial = out.with_name(f".{out.name}.{doc['document_id']}.part")
        with src.open("rb") as f:
            partial.write_bytes(f.read(half))  # a download interrupted half-way
        started = time.perf_counter()
        got = client.download_document(doc["document_id"], out)
        down = time.perf_counter() - started
        same = (
            hashlib.sha256(src.read_bytes()).digest() == hashlib.sha256(out.read_bytes()).digest()
        )
        rss_after_documents = peak[0]

        sid = str(uuid.uuid4())
        records = 10_000
        started = time.perf_counter()
        answer: dict[str, object] = {}
        for n in range(1, args.chunks + 1):
            first = (n - 1) * records
            batch = [
                {"id": i, "name": f"name {i}", "amount": i * 0.5, "flag": i % 2 == 0, "note": None}
                for i in range(first, first + records)
            ]
            body = {"chunk_number": n, "total_chunks": args.chunks, "records": batch}
            if n == 1:
                body["dataset"] = "bench-session"
            answer = client.call("POST", f"/sessions/{sid}/chunks", body)
        sent = time.perf_counter() - started
        job = client.wait_for_job(str(answer["job_id"]), poll_seconds=0.1)
        total = time.perf_counter() - started
        upload = client.call(
            "GET", f"/uploads/{client.call('GET', f'/sessions/{sid}')['upload_id']}"
        )
        stop.set()

    mib = args.document_mib
    print(f"document: {mib} MiB up in {up:.2f} s ({mib / up:.0f} MiB/s, {doc['etag']})")
    print(
        f"document: second half ({(mib * MiB - got['resumed_from']) / MiB:.0f} MiB) down in "
        f"{down:.2f} s after a resume at byte {got['resumed_from']:,}; identical: {same}"
    )
    rows = args.chunks * records
    print(
        f"session: {args.chunks} chunks x {records:,} records sent in {sent:.2f} s "
        f"({rows / sent:,.0f} records/s); assembled CSV {upload['size_bytes']:,} bytes"
    )
    print(
        f"session: first chunk to committed import of {job['output_summary']['rows']:,} rows: "
        f"{total:.2f} s ({job['status']})"
    )
    print(
        f"stack process peak RSS: {rss_after_documents / MiB:.0f} MiB after the document "
        f"(moto keeps objects in memory), {peak[0] / MiB:.0f} MiB at the end"
    )


if __name__ == "__main__":
    main()
