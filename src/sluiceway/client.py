"""A client of the HTTP API, used by the CLI exactly as a browser or API caller would use it."""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, BinaryIO

import urllib3

from .errors import SluicewayError

SIGN_BATCH = 100


class ApiError(SluicewayError):
    """The API answered with an error."""

    def __init__(self, status: int, body: dict[str, Any]) -> None:
        super().__init__(str(body.get("message") or body), **body.get("details", {}))
        self.http_status = status
        self.code = str(body.get("error") or "error")


class Client:
    """Calls the sluiceway API at ``base_url``."""

    def __init__(self, base_url: str, token: str | None = None, timeout: float = 600) -> None:
        self.base_url = base_url.rstrip("/")
        self.http = urllib3.PoolManager(
            maxsize=8,
            timeout=urllib3.Timeout(connect=10, read=timeout),
            retries=urllib3.Retry(
                total=3,
                backoff_factor=0.5,
                allowed_methods=["GET", "PUT"],
                status_forcelist=[502, 503, 504],
            ),
        )
        self.headers = {"content-type": "application/json"}
        if token:
            self.headers["authorization"] = f"Bearer {token}"

    def call(self, method: str, path: str, body: Any = None) -> Any:
        response = self.http.request(
            method,
            self.base_url + path,
            headers=self.headers,
            body=json.dumps(body) if body is not None else None,
        )
        try:
            data = json.loads(response.data or b"{}")
        except ValueError:
            data = {
                "error": "bad_response",
                "message": response.data[:500].decode(errors="replace"),
            }
        if response.status >= 400:
            raise ApiError(
                response.status, data if isinstance(data, dict) else {"message": str(data)}
            )
        return data

    # -- uploads -----------------------------------------------------------------------------
    def upload_file(
        self,
        path: Path,
        dataset: str,
        options: dict[str, Any],
        on_bytes: Callable[[int], None] = lambda n: None,
        parallel: int = 4,
    ) -> dict[str, Any]:
        """Upload ``path`` straight to object storage through presigned part URLs."""
        size = path.stat().st_size
        created = self.call(
            "POST",
            "/uploads",
            {"dataset": dataset, "filename": path.name, "size": size, "options": options},
        )
        upload_id, part_bytes, count = (
            created["upload_id"],
            created["part_bytes"],
            created["part_count"],
        )
        parts: list[dict[str, Any]] = []
        try:
            if size:
                with ThreadPoolExecutor(max_workers=parallel) as pool:
                    for first in range(1, count + 1, SIGN_BATCH):
                        numbers = list(range(first, min(first + SIGN_BATCH, count + 1)))
                        signed = self.call(
                            "POST", f"/uploads/{upload_id}/parts", {"part_numbers": numbers}
                        )
                        jobs = [
                            pool.submit(
                                self._put_part,
                                path,
                                p["part_number"],
                                part_bytes,
                                p["url"],
                                on_bytes,
                            )
                            for p in signed["parts"]
                        ]
                        parts.extend(j.result() for j in jobs)
            done = self.call("POST", f"/uploads/{upload_id}/complete", {"parts": parts})
        except BaseException:
            with contextlib.suppress(Exception):  # best effort; the original error matters
                self.call("DELETE", f"/uploads/{upload_id}")
            raise
        return {**created, **done}

    def _put_part(
        self, path: Path, number: int, part_bytes: int, url: str, on_bytes: Callable[[int], None]
    ) -> dict[str, Any]:
        with path.open("rb") as f:
            f.seek((number - 1) * part_bytes)
            data = f.read(part_bytes)
        response = self.http.request(
            "PUT", url, body=data, headers={"content-length": str(len(data))}
        )
        if response.status >= 300:
            raise ApiError(
                response.status,
                {
                    "error": "upload_failed",
                    "message": f"Object storage refused part {number}: {response.data[:300]!r}",
                },
            )
        on_bytes(len(data))
        return {"part_number": number, "etag": response.headers["ETag"]}

    # -- jobs --------------------------------------------------------------------------------
    def wait_for_job(
        self,
        job_id: str,
        on_progress: Callable[[dict[str, Any]], None] = lambda j: None,
        poll_seconds: float = 0.25,
        timeout: float = 24 * 3600,
    ) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            job: dict[str, Any] = self.call("GET", f"/jobs/{job_id}")
            on_progress(job)
            if job["status"] in ("completed", "failed", "cancelled"):
                return job
            if time.monotonic() > deadline:
                raise SluicewayError(f"Job {job_id} did not finish in {timeout:.0f} s.")
            time.sleep(poll_seconds)

    # -- downloads ---------------------------------------------------------------------------
    def download(
        self, url: str, out: BinaryIO, on_bytes: Callable[[int], None] = lambda n: None
    ) -> int:
        response = self.http.request("GET", url, preload_content=False)
        if response.status >= 300:
            raise ApiError(
                response.status,
                {"error": "download_failed", "message": response.data[:300].decode()},
            )
        total = 0
        for block in response.stream(1 << 20):
            out.write(block)
            total += len(block)
            on_bytes(len(block))
        response.release_conn()
        return total


def write_atomically(path: Path, writer: Callable[[BinaryIO], int]) -> int:
    """Write to ``path`` through a temporary file, so a failed download leaves nothing half-written."""
    tmp = path.with_name(f".{path.name}.part-{os.getpid()}")
    try:
        with tmp.open("wb") as f:
            n = writer(f)
        tmp.replace(path)
        return n
    finally:
        tmp.unlink(missing_ok=True)
