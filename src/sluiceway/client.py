"""A client of the HTTP API, used by the CLI exactly as a browser or API caller would use it."""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import tempfile
import time
import zlib
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, BinaryIO
from urllib.parse import urlencode

import urllib3

from .errors import SluicewayError

SIGN_BATCH = 100


class ApiError(SluicewayError):
    """The API answered with an error."""

    def __init__(self, status: int, body: dict[str, Any]) -> None:
        super().__init__(str(body.get("message") or body), **body.get("details", {}))
        self.http_status = status
        self.code = str(body.get("error") or "error")


class _Retry(urllib3.Retry):
    """Retry what failed on the way (502-504) for safe methods only, and a throttled request
    (429 with Retry-After) for any method: the API never saw it, so sending it again is safe."""

    def is_retry(self, method: str, status_code: int, has_retry_after: bool = False) -> bool:
        if status_code == 429 and has_retry_after:
            return bool(self.total)
        return super().is_retry(method, status_code, has_retry_after)


class Client:
    """Calls the sluiceway API at ``base_url``."""

    def __init__(self, base_url: str, token: str | None = None, timeout: float = 600) -> None:
        self.base_url = base_url.rstrip("/")
        self.http = urllib3.PoolManager(
            maxsize=8,
            timeout=urllib3.Timeout(connect=10, read=timeout),
            retries=_Retry(
                total=5,
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
        try:
            parts = self._send_parts(
                path,
                f"/uploads/{upload_id}/parts",
                count if size else 0,
                part_bytes,
                on_bytes,
                parallel,
            )
            done = self.call("POST", f"/uploads/{upload_id}/complete", {"parts": parts})
        except BaseException:
            with contextlib.suppress(Exception):  # best effort; the original error matters
                self.call("DELETE", f"/uploads/{upload_id}")
            raise
        return {**created, **done}

    # -- documents ---------------------------------------------------------------------------
    def upload_document(
        self,
        path: Path,
        *,
        name: str | None = None,
        category: str = "",
        description: str = "",
        content_type: str = "application/octet-stream",
        on_bytes: Callable[[int], None] = lambda n: None,
        parallel: int = 4,
    ) -> dict[str, Any]:
        """Upload ``path`` as a document through presigned part URLs; returns its metadata."""
        size = path.stat().st_size
        created = self.call(
            "POST",
            "/documents",
            {
                "name": name or path.name,
                "size": size,
                "content_type": content_type,
                "category": category,
                "description": description,
            },
        )
        document_id = created["document_id"]
        base = f"/documents/{document_id}"
        try:
            parts = self._send_parts(
                path,
                f"{base}/parts",
                created["part_count"] if size else 0,
                created["part_bytes"],
                on_bytes,
                parallel,
            )
            done: dict[str, Any] = self.call("POST", f"{base}/complete", {"parts": parts})
        except BaseException:
            with contextlib.suppress(Exception):  # best effort; the original error matters
                self.call("DELETE", base)
            raise
        return done

    def download_document(
        self, document_id: str, path: Path, on_bytes: Callable[[int], None] = lambda n: None
    ) -> dict[str, Any]:
        """Download a document to ``path``, resuming a partial download left by an earlier try.

        The bytes go to a partial file named after the document; each try asks S3 (through the
        presigned URL) for the range the partial file lacks, and the finished file is renamed.
        """
        info: dict[str, Any] = self.call("GET", f"/documents/{document_id}/download")
        size = int(info["size_bytes"])
        partial = path.with_name(f".{path.name}.{document_id}.part")
        have = partial.stat().st_size if partial.exists() else 0
        if have > size:
            partial.unlink()
            have = 0
        resumed_from = have
        if have < size or size == 0:
            headers = {"range": f"bytes={have}-"} if have else {}
            response = self.http.request("GET", info["url"], headers=headers, preload_content=False)
            try:
                if response.status == 206:
                    content_range = response.headers.get("content-range", "")
                    if not content_range.startswith(f"bytes {have}-"):
                        raise ApiError(
                            502,
                            {
                                "error": "download_failed",
                                "message": f"Storage answered range {content_range!r}, not from {have}.",
                            },
                        )
                    mode = "ab"
                elif response.status == 200:
                    mode, have, resumed_from = "wb", 0, 0  # no range support: start over
                else:
                    raise ApiError(
                        response.status,
                        {
                            "error": "download_failed",
                            "message": response.data[:300].decode(errors="replace"),
                        },
                    )
                with partial.open(mode) as out:
                    for block in response.stream(1 << 20):
                        out.write(block)
                        have += len(block)
                        on_bytes(len(block))
            finally:
                response.release_conn()
        if partial.exists() and partial.stat().st_size != size:
            raise ApiError(
                502,
                {
                    "error": "download_incomplete",
                    "message": f"Got {partial.stat().st_size:,} of {size:,} bytes; run it again to resume.",
                },
            )
        if size == 0 and not partial.exists():
            partial.touch()
        partial.replace(path)
        return {**info, "path": str(path), "resumed_from": resumed_from}

    def _send_parts(
        self,
        path: Path,
        sign_path: str,
        count: int,
        part_bytes: int,
        on_bytes: Callable[[int], None],
        parallel: int,
    ) -> list[dict[str, Any]]:
        """PUT parts 1..count of ``path`` to URLs signed by ``sign_path``, ``parallel`` at once."""
        parts: list[dict[str, Any]] = []
        if not count:
            return parts
        with ThreadPoolExecutor(max_workers=parallel) as pool:
            for first in range(1, count + 1, SIGN_BATCH):
                numbers = list(range(first, min(first + SIGN_BATCH, count + 1)))
                signed = self.call("POST", sign_path, {"part_numbers": numbers})
                futures = [
                    pool.submit(
                        self._put_part, path, p["part_number"], part_bytes, p["url"], on_bytes
                    )
                    for p in signed["parts"]
                ]
                parts.extend(f.result() for f in futures)
        return parts

    # -- the upload lifecycle and record sessions --------------------------------------------
    def list_uploads(self, status: str | None = None, dataset: str | None = None) -> list[Any]:
        query = urlencode({k: v for k, v in (("status", status), ("dataset", dataset)) if v})
        found: list[Any] = self.call("GET", "/uploads" + (f"?{query}" if query else ""))["uploads"]
        return found

    def retry_upload(self, upload_id: str) -> dict[str, Any]:
        result: dict[str, Any] = self.call("POST", f"/uploads/{upload_id}/retry", {})
        return result

    def cleanup_uploads(self, older_than_hours: float) -> dict[str, Any]:
        result: dict[str, Any] = self.call(
            "POST", "/uploads/cleanup", {"older_than_hours": older_than_hours}
        )
        return result

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

    # -- exports -----------------------------------------------------------------------------
    def run_export(
        self,
        dataset: str,
        request: dict[str, Any],
        on_status: Callable[[dict[str, Any]], None] = lambda s: None,
        poll_seconds: float = 0.25,
        timeout: float = 24 * 3600,
    ) -> tuple[dict[str, Any], dict[str, Any] | None]:
        """Start an export and wait for it: (final status, download URLs if it completed)."""
        started: dict[str, Any] = self.call("POST", f"/datasets/{dataset}/exports", request)
        deadline = time.monotonic() + timeout
        while True:
            status: dict[str, Any] = self.call("GET", started["status_url"])
            on_status(status)
            if status["status"] in ("completed", "failed", "cancelled"):
                break
            if time.monotonic() > deadline:
                raise SluicewayError(
                    f"Export {started['job_id']} did not finish in {timeout:.0f} s."
                )
            time.sleep(poll_seconds)
        if status["status"] != "completed":
            return status, None
        urls: dict[str, Any] = self.call("GET", started["download_url"])
        return status, urls

    def download_export(
        self, urls: dict[str, Any], out: BinaryIO, on_bytes: Callable[[int], None] = lambda n: None
    ) -> int:
        """Download an export's parts into one file (the format's own way of joining them).

        One part is copied as it is. Several: CSV keeps the first part's header only, JSON
        arrays become one array, JSON Lines are concatenated, Parquet parts' row groups go
        into one file; gzip parts are decompressed and the whole is compressed once.
        """
        parts, fmt = urls["parts"], urls["format"]
        if len(parts) == 1:
            return self.download(parts[0]["url"], out, on_bytes)
        counted = _Counting(out)
        if fmt == "parquet":
            self._merge_parquet(parts, counted, urls["compression"], on_bytes)
            return counted.count
        zipped = urls["compression"] == "gzip"
        sink: Any = gzip_writer(counted) if zipped else counted
        header = _csv_header(urls["columns"]) if fmt == "csv" else b""
        if fmt == "json":
            sink.write(b"[")
        wrote_rows = False
        for i, part in enumerate(parts):
            if fmt == "json":
                if not part["rows"]:
                    continue
                if wrote_rows:
                    sink.write(b",")
                self._stream_part(part["url"], sink, 1, 3, zipped, on_bytes)  # '[' ... '\n]\n'
                wrote_rows = True
            else:
                skip = len(header) if i else 0
                self._stream_part(part["url"], sink, skip, 0, zipped, on_bytes)
        if fmt == "json":
            sink.write(b"\n]\n" if wrote_rows else b"]\n")
        if zipped:
            sink.close()
        return counted.count

    def _stream_part(
        self,
        url: str,
        out: Any,
        skip_head: int,
        drop_tail: int,
        zipped: bool,
        on_bytes: Callable[[int], None],
    ) -> None:
        """Copy one part's (decompressed) bytes without its first and last few."""
        response = self.http.request("GET", url, preload_content=False)
        if response.status >= 300:
            raise ApiError(
                response.status,
                {"error": "download_failed", "message": response.data[:300].decode()},
            )
        inflate = zlib.decompressobj(wbits=31) if zipped else None
        held = b""
        try:
            for raw in response.stream(1 << 20):
                on_bytes(len(raw))
                block = held + (inflate.decompress(raw) if inflate else raw)
                if skip_head:
                    cut = min(skip_head, len(block))
                    block, skip_head = block[cut:], skip_head - cut
                keep = len(block) - drop_tail
                if keep > 0:
                    out.write(block[:keep])
                    held = block[keep:]
                else:
                    held = block
            if inflate:
                block = held + inflate.flush()
                out.write(block[skip_head : len(block) - drop_tail])
        finally:
            response.release_conn()

    def _merge_parquet(
        self,
        parts: list[dict[str, Any]],
        out: Any,
        compression: str,
        on_bytes: Callable[[int], None],
    ) -> None:
        import pyarrow.parquet as pq

        writer = None
        with tempfile.TemporaryDirectory() as tmp:
            for part in parts:
                path = Path(tmp) / "part.parquet"
                with path.open("wb") as f:
                    self.download(part["url"], f, on_bytes)
                source = pq.ParquetFile(path)
                if writer is None:
                    import pyarrow as pa

                    writer = pq.ParquetWriter(
                        pa.PythonFile(out, mode="w"),
                        source.schema_arrow,
                        compression="gzip" if compression == "gzip" else "none",
                    )
                for group in range(source.num_row_groups):
                    writer.write_table(source.read_row_group(group))
                source.close()
            if writer is not None:
                writer.close()

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


class _Counting:
    """A binary file wrapper that counts the bytes written through it."""

    def __init__(self, inner: BinaryIO) -> None:
        self.inner, self.count = inner, 0

    def write(self, data: bytes) -> int:
        self.count += len(data)
        self.inner.write(data)
        return len(data)

    def flush(self) -> None:
        self.inner.flush()

    def tell(self) -> int:
        return self.count

    def close(self) -> None:
        pass  # the file is the caller's to close

    @property
    def closed(self) -> bool:
        return False


def gzip_writer(out: Any) -> Any:
    import gzip

    return gzip.GzipFile(fileobj=out, mode="wb", compresslevel=6, mtime=0)


def _csv_header(columns: list[str]) -> bytes:
    text = io.StringIO()
    csv.writer(text, lineterminator="\n").writerow(columns)
    return text.getvalue().encode()


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
