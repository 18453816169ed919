"""The embedded S3's cost for an import's object: moto as it ships against moto as the stack runs it.

Usage: python bench/local_s3.py [--mib 830] [--range-mib 64] [--runs 1]

An import's object meets S3 three times: the upload (presigned part PUTs, then the complete),
the quote scan (every range GET'd) and the load (every range GET'd again); a last phase
downloads it whole with one plain GET, as a browser downloads a document. This script does
the same on moto's HTTP server, in a child process per variant so the stack's patches
(sluiceway.local.s3objects) stay out of the baseline: ``as shipped`` is moto 5.2.5 alone,
``stack`` is moto with the patches the embedded stack installs. Both upload the same bytes in
8 MiB parts and read them back in ``--range-mib`` ranges twice; each checks what it read.

Each phase is timed in wall seconds and in the server's CPU seconds (the child's CPU less
its client thread's), and its peak memory is the child's kernel peak RSS during the phase
above its RSS at the phase's start (Linux; 0 elsewhere). ``--mib 830`` is the 10M-row
benchmark file's size. The last lines give each phase's ratio, stack over as shipped, for
the server's CPU and wall time, and both peaks.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
import time
from typing import Any

import boto3
import urllib3

from sluiceway.local.stack import free_port

PART = 8 * 1024 * 1024
BUCKET = "bench-local-s3"


def _status_kib(field: str) -> int:
    """A field of this process's /proc status (VmRSS, VmHWM), in KiB; 0 where there is none."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(f"{field}:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def _mark() -> tuple[float, float, float, int]:
    """Now: wall, process CPU, this thread's CPU, and the RSS, with the kernel's peak reset to
    it (``clear_refs`` 5), so the phase's peak is its own."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass
    cpu = os.times()
    return time.perf_counter(), cpu.user + cpu.system, time.thread_time(), _status_kib("VmRSS")


def _since(start: tuple[float, float, float, int]) -> dict[str, float]:
    wall, cpu, thread = time.perf_counter(), os.times(), time.thread_time()
    return {
        "wall": wall - start[0],
        "server_cpu": (cpu.user + cpu.system - start[1]) - (thread - start[2]),
        # the process's peak during the phase above its RSS at the start (the client's copy of
        # the object is held throughout, so what grows is the server's)
        "peak_mib": max(_status_kib("VmHWM") - start[3], 0) / 1024,
    }


def _check(body: Any, data: bytes, begin: int, end: int, what: str) -> None:
    """The response body is data[begin:end], compared a piece at a time: the client holds no
    more than a piece, so a phase's peak is the server's."""
    offset = begin
    view = memoryview(data)
    for piece in body.iter_chunks(1024 * 1024):
        if view[offset : offset + len(piece)] != piece:
            raise SystemExit(f"{what}: bytes from {offset} differ")
        offset += len(piece)
    if offset != end:
        raise SystemExit(f"{what}: {offset - begin} bytes, not {end - begin}")


def child(mib: int, range_mib: int, patched: bool) -> dict[str, Any]:
    """One variant, in this process: a moto server, the upload and two ranged reads."""
    from moto.server import ThreadedMotoServer

    for noisy in ("werkzeug", "moto"):
        logging.getLogger(noisy).setLevel(logging.CRITICAL)
    if patched:
        from sluiceway.local import s3objects

        s3objects.install()
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        s3 = boto3.client(
            "s3",
            endpoint_url=f"http://127.0.0.1:{port}",
            region_name="us-east-1",
            aws_access_key_id="x",
            aws_secret_access_key="x",
        )
        s3.create_bucket(Bucket=BUCKET)
        block = os.urandom(1024 * 1024)
        data = block * mib
        http = urllib3.PoolManager()
        phases: dict[str, Any] = {}

        start = _mark()
        upload = s3.create_multipart_upload(Bucket=BUCKET, Key="object")["UploadId"]
        parts = []
        for offset in range(0, len(data), PART):
            number = offset // PART + 1
            url = s3.generate_presigned_url(
                "upload_part",
                Params={
                    "Bucket": BUCKET,
                    "Key": "object",
                    "UploadId": upload,
                    "PartNumber": number,
                },
            )
            piece = data[offset : offset + PART]
            answer = http.request(
                "PUT", url, body=piece, headers={"content-length": str(len(piece))}
            )
            parts.append({"PartNumber": number, "ETag": answer.headers["ETag"]})
        phases["part PUTs"] = _since(start)

        start = _mark()
        s3.complete_multipart_upload(
            Bucket=BUCKET, Key="object", UploadId=upload, MultipartUpload={"Parts": parts}
        )
        phases["complete"] = _since(start)

        size = range_mib * 1024 * 1024
        for name in ("ranged GETs (scan)", "ranged GETs (load)"):
            start = _mark()
            for begin in range(0, len(data), size):
                end = min(begin + size, len(data)) - 1
                body = s3.get_object(Bucket=BUCKET, Key="object", Range=f"bytes={begin}-{end}")
                _check(body["Body"], data, begin, end + 1, f"{name}: bytes {begin}-{end}")
            phases[name] = _since(start)

        start = _mark()  # a plain download (a browser's of a document, an export part's)
        _check(s3.get_object(Bucket=BUCKET, Key="object")["Body"], data, 0, len(data), "whole GET")
        phases["whole GET"] = _since(start)
        return phases
    finally:
        server.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mib", type=int, default=830, help="object size, MiB")
    parser.add_argument("--range-mib", type=int, default=64, help="ranged GET size, MiB")
    parser.add_argument("--runs", type=int, default=1, help="runs of each variant, alternated")
    parser.add_argument("--child", choices=["shipped", "stack"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        result = child(args.mib, args.range_mib, patched=args.child == "stack")
        print(json.dumps(result))
        return

    print(
        f"object {args.mib:,} MiB in {PART // 2**20} MiB parts; ranges of {args.range_mib} MiB, "
        f"read twice; {args.runs} run(s) of each variant, alternated"
    )
    results: dict[str, list[dict[str, Any]]] = {"shipped": [], "stack": []}
    for run in range(args.runs):
        for variant in ("shipped", "stack"):
            out = subprocess.run(
                [
                    *(sys.executable, __file__, "--child", variant),
                    *("--mib", str(args.mib), "--range-mib", str(args.range_mib)),
                ],
                check=True,
                capture_output=True,
                text=True,
            ).stdout
            phases = json.loads(out.strip().splitlines()[-1])
            results[variant].append(phases)
            shown = "; ".join(
                f"{name} {p['wall']:.2f} s wall / {p['server_cpu']:.2f} CPU-s / "
                f"+{p['peak_mib']:,.0f} MiB peak"
                for name, p in phases.items()
            )
            print(f"run {run + 1}, moto {variant:<7}: {shown}")

    def best(variant: str, phase: str, what: str) -> float:
        return min(r[phase][what] for r in results[variant])

    names = list(results["shipped"][0])
    for variant in ("shipped", "stack"):
        total = sum(best(variant, name, "server_cpu") for name in names)
        print(f"RESULT moto {variant}: server {total:.2f} CPU-s in all (best of each phase)")
    for name in names:
        shipped, ours = best("shipped", name, "server_cpu"), best("stack", name, "server_cpu")
        wall = best("stack", name, "wall") / max(best("shipped", name, "wall"), 1e-9)
        peaks = (best("shipped", name, "peak_mib"), best("stack", name, "peak_mib"))
        print(
            f"RATIO {name}, stack / as shipped: {ours / max(shipped, 1e-9):.2f}x CPU, "
            f"{wall:.2f}x wall; peak above the phase's start {peaks[1]:,.0f} MiB against "
            f"{peaks[0]:,.0f} MiB"
        )


if __name__ == "__main__":
    main()
