"""A bounded load run against `sluiceway up`: concurrent clients create uploads, sign parts
and poll jobs for a fixed time, on loopback only.

Usage: python bench/load.py [--clients 50] [--seconds 60] [--client-rate 0]
                            [--arrivals poisson|even|lockstep]

Starts `sluiceway up` in a process of its own (a fresh SLUICEWAY_HOME, so the API is not
sharing this process's interpreter), gives every client a token of its own (the local
throttle counts per caller, as a usage plan per key would on AWS), then runs the clients as
threads for the fixed time. Each client loops: POST /uploads (a 64 MiB file, 8 parts), POST
/uploads/{id}/parts (presign all 8), GET /jobs/{job_id}. No bytes go to S3: this measures the
API, its database work and the presigning. The baseline in the same run is the same loop
from one client alone, with a token of its own and paced at --baseline-rate requests/s (under
the throttle's 50/s, so none is a 429): what one request costs when nothing else runs.
The last lines are requests per second, p50/p99 latency per operation, the ratio of the loaded
p99 to the baseline's, and error counts.

With --client-rate each client paces its requests, spaced as --arrivals says (independent
uploaders by default). With N clients that each send their next request the moment the last
is answered (a closed loop, the default rate 0), Little's law fixes the mean latency at
N / throughput: 50 clients and a p99 under 200 ms need well over 250 requests/s.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import defaultdict
from pathlib import Path

import psutil
import psycopg
import urllib3
from psycopg.rows import dict_row

from sluiceway import auth
from sluiceway.local.stack import free_port

MiB = 1024 * 1024


def start_stack(home: Path, port: int) -> tuple[subprocess.Popen[str], str]:
    """`sluiceway up` on ``port``; returns the process and its database URL."""
    env = {k: v for k, v in os.environ.items() if k not in ("SLUICEWAY_API", "DATABASE_URL")}
    env["SLUICEWAY_HOME"] = str(home)
    proc = subprocess.Popen(
        [sys.executable, "-m", "sluiceway", "up", "--port", str(port)],
        env=env,
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        text=True,
        start_new_session=True,
    )
    assert proc.stderr is not None
    database_url = ""
    while True:
        line = proc.stderr.readline()
        if not line:
            raise SystemExit("sluiceway up exited before it was ready")
        if line.startswith("PostgreSQL"):
            database_url = line.split()[1]
        if line.startswith("Token"):
            return proc, database_url


def own_cpu(p: psutil.Process) -> float:
    """User + system CPU seconds of one process itself (not its children)."""
    with contextlib.suppress(psutil.Error):
        times = p.cpu_times()
        return times.user + times.system
    return 0.0


class CpuMeter:
    """CPU seconds spent by the stack (its process and the API workers), its PostgreSQL
    (postmaster and backends) and this process (the client threads), each process counted
    once: PostgreSQL runs as a child of the stack, and the stack as a child of this process.
    """

    def __init__(self, stack_pid: int, home: Path) -> None:
        postmaster = int((home / "pg" / "postmaster.pid").read_text().split()[0])
        self.stack, self.postgres = psutil.Process(stack_pid), psutil.Process(postmaster)

    @staticmethod
    def _tree(root: psutil.Process) -> list[psutil.Process]:
        with contextlib.suppress(psutil.Error):
            return [root, *root.children(recursive=True)]
        return [root]

    def read(self) -> dict[str, float]:
        postgres = {p.pid: p for p in self._tree(self.postgres)}
        stack = [p for p in self._tree(self.stack) if p.pid not in postgres]
        return {
            "stack": sum(own_cpu(p) for p in stack),
            "postgres": sum(own_cpu(p) for p in postgres.values()),
            "clients": own_cpu(psutil.Process()),
        }


class Recorder:
    def __init__(self) -> None:
        self.latency: dict[str, list[float]] = defaultdict(list)
        self.status: dict[str, dict[int, int]] = defaultdict(lambda: defaultdict(int))
        self.lock = threading.Lock()
        self.first_error: dict[str, str] = {}  # op -> the first 5xx body, to say what failed

    def call(
        self, http: urllib3.PoolManager, op: str, method: str, url: str, **kw: object
    ) -> urllib3.BaseHTTPResponse | None:
        started = time.perf_counter()
        try:
            response = http.request(method, url, retries=False, **kw)  # type: ignore[arg-type]
        except urllib3.exceptions.HTTPError as exc:  # counted as status 0: no answer at all
            with self.lock:
                self.status[op][0] += 1
                self.first_error.setdefault(op, f"no answer: {exc}")
            return None
        elapsed = time.perf_counter() - started
        with self.lock:
            self.latency[op].append(elapsed)
            self.status[op][response.status] += 1
            if response.status >= 500:
                self.first_error.setdefault(op, response.data[:300].decode(errors="replace"))
        return response


ARRIVALS = ("poisson", "even", "lockstep")


def client_loop(
    api: str,
    token: str,
    stop: threading.Event,
    rec: Recorder,
    n: int,
    pace: float = 0.0,
    arrivals: str = "lockstep",
    clients: int = 1,
) -> None:
    """Create an upload, sign its 8 parts, poll its job; again until ``stop``.

    ``pace``: the mean seconds from the start of one request to the next (0: the next the
    moment the last is answered). How client ``n`` of ``clients`` spaces its requests
    (``arrivals``, with a pace): ``poisson``, independent uploaders: intervals drawn from an
    exponential distribution, seeded by ``n`` so a run repeats, from a first request at a
    random point of the first interval; ``even``, fixed intervals, client n's first request
    at n/clients of one; ``lockstep``, fixed intervals, every client at the same instants
    (bursts of one request from each client at once: the worst case for the queue).
    """
    http = urllib3.PoolManager(maxsize=1)
    headers = {"authorization": f"Bearer {token}", "content-type": "application/json"}
    i = 0
    draw = random.Random(n)

    def gap() -> float:
        return draw.expovariate(1.0 / pace) if arrivals == "poisson" else pace

    first = {"poisson": draw.uniform(0, pace), "even": pace * n / max(clients, 1)}
    due = time.perf_counter() + (first.get(arrivals, 0.0) if pace else 0.0)

    def call(op: str, method: str, url: str, **kw: object) -> urllib3.BaseHTTPResponse | None:
        nonlocal due
        if pace:
            time.sleep(max(0.0, due - time.perf_counter()))
            due += gap()
        return rec.call(http, op, method, url, headers=headers, **kw)

    while not stop.is_set():
        i += 1
        body = {"dataset": f"load-{n}", "filename": f"f{i}.csv", "size": 64 * MiB}
        created = call("create upload", "POST", f"{api}/uploads", json=body)
        if created is None or created.status != 201:
            continue
        upload = created.json()
        call(
            "sign 8 parts",
            "POST",
            f"{api}/uploads/{upload['upload_id']}/parts",
            json={"part_numbers": list(range(1, 9))},
        )
        call("poll job", "GET", f"{api}/jobs/{upload['job_id']}")


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument(
        "--client-rate",
        type=float,
        default=0.0,
        help="requests/s each client sends (paced, as an uploader between batches of parts); "
        "0: the next request the moment the last is answered (saturation)",
    )
    parser.add_argument(
        "--arrivals",
        choices=ARRIVALS,
        default="poisson",
        help="with --client-rate, how each client spaces its requests (see client_loop): "
        "poisson (default), even, or lockstep (all clients at once)",
    )
    parser.add_argument(
        "--baseline-seconds", type=float, default=None, help="default: 10, or --seconds if less"
    )
    parser.add_argument(
        "--baseline-rate", type=float, default=20.0, help="requests/s of the baseline client"
    )
    args = parser.parse_args()
    port = free_port()
    api = f"http://127.0.0.1:{port}"
    with tempfile.TemporaryDirectory() as home:
        proc, database_url = start_stack(Path(home), port)
        try:
            with psycopg.connect(database_url, autocommit=True, row_factory=dict_row) as conn:
                tokens = [auth.create_token(conn, f"load{n}") for n in range(args.clients)]
                alone = auth.create_token(conn, "baseline")
            base = Recorder()
            stop = threading.Event()
            timer = threading.Timer(args.baseline_seconds or min(10.0, args.seconds), stop.set)
            timer.start()
            client_loop(api, alone, stop, base, -1, pace=1.0 / args.baseline_rate)

            rec = Recorder()
            stop = threading.Event()
            pace = 1.0 / args.client_rate if args.client_rate else 0.0
            threads = [
                threading.Thread(
                    target=client_loop,
                    args=(api, t, stop, rec, n, pace, args.arrivals, len(tokens)),
                    daemon=True,
                )
                for n, t in enumerate(tokens)
            ]
            meter = CpuMeter(proc.pid, Path(home))
            cpu_before = meter.read()
            started = time.perf_counter()
            for t in threads:
                t.start()
            time.sleep(args.seconds)
            stop.set()
            for t in threads:
                t.join(timeout=60)
            elapsed = time.perf_counter() - started
            cpu = {k: v - cpu_before[k] for k, v in meter.read().items()}
        finally:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=60)

    total = sum(len(v) for v in rec.latency.values())
    errors_5xx = sum(n for s in rec.status.values() for code, n in s.items() if code >= 500)
    unanswered = sum(s.get(0, 0) for s in rec.status.values())
    throttled = sum(s.get(429, 0) for s in rec.status.values())
    pacing = (
        f"{args.client_rate:g} requests/s each, {args.arrivals} arrivals"
        if args.client_rate
        else "closed loop"
    )
    print(f"clients: {args.clients} ({pacing}); seconds: {elapsed:.1f}; requests: {total:,}")
    for name, r in (("baseline", base), ("load", rec)):
        for op, values in r.latency.items():
            codes = ", ".join(f"{c}: {n}" for c, n in sorted(r.status[op].items()))
            print(
                f"{name:8s} {op:18s} n={len(values):6d} p50={statistics.median(values) * 1e3:7.1f} ms "
                f"p99={pct(values, 0.99) * 1e3:7.1f} ms  ({codes})"
            )
    for op, body in rec.first_error.items():
        print(f"first 5xx of {op}: {body}")
    sign = rec.latency.get("sign 8 parts") or [0.0]
    sign_alone = base.latency.get("sign 8 parts") or [0.0]
    print(f"RATE requests/s: {total / elapsed:.1f}")
    print(
        f"sign p99 under load / alone: {pct(sign, 0.99) / max(pct(sign_alone, 0.99), 1e-9):.1f}x "
        f"({pct(sign, 0.99) * 1e3:.1f} ms / {pct(sign_alone, 0.99) * 1e3:.1f} ms)"
    )
    print(f"5xx: {errors_5xx}; 429: {throttled}; no answer (connection errors): {unanswered}")
    # What a request costs in CPU, and so the most requests/s the cores could serve at all;
    # with the clients waiting for each answer, the mean latency is clients / throughput.
    per_request = {k: 1e3 * v / max(total, 1) for k, v in cpu.items()}
    cores = os.cpu_count() or 1
    print(
        "CPU ms per request: "
        + ", ".join(f"{k} {v:.1f}" for k, v in per_request.items())
        + f"; total {sum(per_request.values()):.1f} -> at most "
        f"{1e3 * cores / max(sum(per_request.values()), 1e-9):.0f} requests/s on {cores} cores"
    )
    print(
        f"busy cores: {sum(cpu.values()) / elapsed:.2f} of {cores}; load average "
        + " ".join(f"{x:.2f}" for x in os.getloadavg())
        + (
            ""
            if args.client_rate
            else f"; Little's law: {args.clients} clients / {total / elapsed:.1f} requests/s = "
            f"{1e3 * args.clients / max(total / elapsed, 1e-9):.0f} ms mean latency"
        )
    )
    print(
        f"RESULT sign p99 {pct(sign, 0.99) * 1e3:.1f} ms (target < 200 ms); 5xx {errors_5xx} (target 0)"
    )


if __name__ == "__main__":
    main()
