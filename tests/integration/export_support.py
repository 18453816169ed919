"""What the export tests share: run an export to its end, and read its parts back."""

from __future__ import annotations

import csv
import gzip
import io
import json
import time
from typing import Any

import urllib3

from sluiceway.client import Client


def run_export(client: Client, dataset: str, timeout: float = 120, **body: Any) -> dict[str, Any]:
    """POST the export, poll its status until it ends; the final status (and URLs if done)."""
    started = client.call("POST", f"/datasets/{dataset}/exports", body)
    deadline = time.monotonic() + timeout
    while True:
        status: dict[str, Any] = client.call("GET", started["status_url"])
        if status["status"] in ("completed", "failed"):
            break
        assert time.monotonic() < deadline, f"export still {status['status']}: {status}"
        time.sleep(0.1)
    status["started"] = started
    if status["status"] == "completed":
        status["urls"] = client.call("GET", started["download_url"])
    return status


def wait_stalled(db: Any, job_id: str, stage: str, timeout: float = 120) -> None:
    """Wait until the job's ``stall_<stage>`` fault holds it (its checkpoint says so)."""
    deadline = time.monotonic() + timeout
    while True:
        row = db.execute(
            "SELECT checkpoint->>'stalled' AS stalled FROM dsa_jobs.analysis_runs WHERE id = %s",
            (job_id,),
        ).fetchone()
        if row and row["stalled"] == stage:
            return
        assert time.monotonic() < deadline, f"the {stage} never stalled"
        time.sleep(0.05)


def release(db: Any, job_id: str) -> None:
    """Let a stalled job go on."""
    db.execute(
        "UPDATE dsa_jobs.analysis_runs SET checkpoint = checkpoint || '{\"release\": true}' "
        "WHERE id = %s",
        (job_id,),
    )


def fetch(url: str) -> bytes:
    response = urllib3.request("GET", url)
    assert response.status == 200, response.data[:300]
    return bytes(response.data)


def read_part(data: bytes, fmt: str, compression: str = "none") -> list[dict[str, Any]]:
    """One part's records, parsed as a downstream reader would (csv module, json, pyarrow)."""
    if compression == "gzip" and fmt != "parquet":
        data = gzip.decompress(data)
    if fmt == "csv":
        return list(csv.DictReader(io.StringIO(data.decode(), newline="")))
    if fmt == "json":
        parsed: list[dict[str, Any]] = json.loads(data)
        return parsed
    if fmt == "jsonl":
        # split at LF only: a value may hold U+2028 or U+0085, which str.splitlines splits at too
        return [json.loads(line) for line in data.decode().split("\n") if line]
    import pyarrow.parquet as pq

    table = pq.read_table(io.BytesIO(data))
    return table.to_pylist()  # type: ignore[no-any-return]


def exported_records(status: dict[str, Any]) -> list[dict[str, Any]]:
    urls = status["urls"]
    records: list[dict[str, Any]] = []
    for part in urls["parts"]:
        records.extend(read_part(fetch(part["url"]), urls["format"], urls["compression"]))
    return records


def commit_records(client: Client, dataset: str, commit: str) -> list[dict[str, Any]]:
    """Every row of a commit, in logical order, through the rows API."""
    out: list[dict[str, Any]] = []
    while True:
        page = client.call(
            "GET", f"/datasets/{dataset}/rows?commit={commit}&offset={len(out)}&limit=10000"
        )
        out.extend(r["data"] for r in page["rows"])
        if len(page["rows"]) < 10000:
            return out


def typed(
    records: list[dict[str, Any]], schema: list[dict[str, Any]] | None
) -> list[dict[str, Any]]:
    """The records as a typed Parquet export gives them: each value of the type its column's
    schema says (an empty value None), independently of the export's own SQL casts."""
    from datetime import UTC, date, datetime

    def convert(value: Any, kind: str) -> Any:
        if value is None or value == "" or kind == "text":
            return None if value is None or (value == "" and kind != "text") else value
        text = str(value).strip()
        if kind == "integer":
            return int(text)
        if kind == "number":
            return float(text)
        if kind == "boolean":
            return text.lower() in ("true", "t", "yes", "y", "1")
        if kind == "date":
            return date.fromisoformat(text)
        stamp = datetime.fromisoformat(text.replace("Z", "+00:00"))
        return stamp.astimezone(UTC) if stamp.tzinfo else stamp.replace(tzinfo=UTC)

    kinds = {c["name"]: c["type"] for c in schema or []}
    return [{k: convert(v, kinds.get(k, "text")) for k, v in r.items()} for r in records]
