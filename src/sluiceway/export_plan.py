"""Export stage 1, plan: cut the pinned commit's rows into ranges, one part each.

State "Plan row ranges" of statemachines/export.asl.json. Ranges are by row number, the
commit's logical order, so part N holds rows that come before part N+1's, and reading a range
opens only the leaf lists and leaves that overlap it (``dsa_core.commit_row_range``). The list
of parts goes to ``work/<job>/parts.json`` for the Map's ItemReader; payloads carry ids only.
A scheduled export arrives with a schedule id instead of a job: its job is made here, pinning
what the schedule's ref points to at this moment.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

from pydantic import BaseModel

from . import csvsplit, db, export, jobs, schedules, storage
from .errors import NotFound
from .settings import Settings, get_settings


class ExportState(BaseModel):
    """What the export state machine carries between states."""

    job_id: str
    work_bucket: str | None = None
    parts_key: str | None = None
    max_concurrency: int = 1


def part_ranges(row_count: int, part_rows: int | None, settings: Settings) -> list[tuple[int, int]]:
    """[from_row, to_row) of every part: the request's size, else about one per worker, and
    as many parts as fill every round of the workers."""
    limits = settings.exports
    if part_rows is None:
        workers = max(settings.imports.map_concurrency, 1)
        per_worker = -(-row_count // workers)
        part_rows = min(limits.default_part_rows, max(per_worker, limits.min_auto_part_rows))
        # Parts run `workers` at a time, so 5 parts on 2 workers take 3 rounds, the last with
        # one worker idle. The same rounds cut into 6 equal parts end a sixth sooner: the
        # import's rule for its byte ranges (csvsplit.split_ranges), here over rows 1..N.
        parts = -(-row_count // part_rows)
        if parts > workers and -(-parts // workers) * workers <= limits.max_parts:
            cut = csvsplit.split_ranges(row_count, part_rows, workers)
            return [(start + 1, end + 1) for start, end in cut]
    if row_count == 0:
        return [(1, 1)]  # one empty part: a file with the header, so readers find a file
    return [(a, min(a + part_rows, row_count + 1)) for a in range(1, row_count + 1, part_rows)]


def plan_export(event: dict[str, Any], settings: Settings | None = None) -> dict[str, Any]:
    """Claim the export job (or make a schedule's), write its parts' rows and list."""
    settings = settings or get_settings()
    conn = db.shared_connection(settings)
    # The state machine passes {"input": <its input>, "execution": <its execution id>}.
    execution = event.get("execution")
    event = event.get("input", event)
    if event.get("schedule_id"):
        job_id = schedules.job_for_firing(conn, uuid.UUID(str(event["schedule_id"])), settings)
    else:
        job_id = uuid.UUID(str(event["job_id"]))
    row = conn.execute(
        "SELECT r.run_parameters, c.row_count FROM dsa_jobs.analysis_runs r "
        "JOIN dsa_core.commits c ON c.commit_id = r.run_parameters->>'commit_id' "
        "WHERE r.id = %s AND r.run_type = 'export'",
        (job_id,),
    ).fetchone()
    if row is None:
        raise NotFound(f"No export job {job_id}, or its commit is gone.")
    params, row_count = row["run_parameters"], int(row["row_count"])
    ranges = part_ranges(row_count, params["options"].get("part_rows"), settings)
    jobs.claim(
        conn,
        job_id,
        {"stage": "writing", "total_rows": row_count, "parts_total": len(ranges)},
        execution,
    )
    ext = export.EXTENSIONS[params["format"]]
    if params["compression"] == "gzip" and params["format"] != "parquet":
        ext += ".gz"  # Parquet compresses inside the file, by column
    prefix = params["prefix"]
    with conn.transaction():
        conn.execute("DELETE FROM dsa_jobs.export_parts WHERE job_id = %s", (job_id,))  # a retry
        with conn.cursor().copy(
            "COPY dsa_jobs.export_parts (job_id, part_no, from_row, to_row, object_key) FROM STDIN"
        ) as copy:
            for n, (a, b) in enumerate(ranges):
                copy.write_row((job_id, n, a, b, f"{prefix}part-{n:05d}.{ext}"))
    work_bucket = settings.storage.bucket
    parts_key = f"{settings.storage.work_prefix}{job_id}/parts.json"
    items = [{"job_id": str(job_id), "part_no": n} for n in range(len(ranges))]
    storage.work_client(settings).put_object(
        Bucket=work_bucket,
        Key=parts_key,
        Body=json.dumps(items).encode(),
        ContentType="application/json",
    )
    return ExportState(
        job_id=str(job_id),
        work_bucket=work_bucket,
        parts_key=parts_key,
        max_concurrency=settings.imports.map_concurrency,
    ).model_dump()
