"""Stage 5, export: what a user asks for, the job that pins it, and where to fetch the result.

``POST /datasets/{name}/exports`` lands in :func:`start_export`: the request is checked against
the commit (columns, filter, part size), the commit (default: what ``main`` points to now) is
pinned in a new export job, and ``statemachines/export.asl.json`` is started on it. The state
machine's stages are their own modules, in the order data flows: ``export_plan`` (cut the
commit's rows into ranges), ``export_part`` (write one part, streamed into an S3 multipart
upload), ``export_finish`` (the manifest, or on failure abort every upload). This module
also answers the status (seed 004's shape) and the presigned download URLs.
"""

from __future__ import annotations

import json
import re
import uuid
from datetime import datetime
from typing import Annotated, Any, Literal

import boto3
import psycopg
from psycopg.types.json import Jsonb
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    FiniteFloat,
    StrictBool,
    StrictInt,
    model_validator,
)

from . import datasets, db, jobs, storage
from .errors import Conflict, InvalidRequest, NotFound, StorageUnavailable
from .settings import Settings, get_settings

Format = Literal["csv", "json", "jsonl", "parquet"]
Compression = Literal["none", "gzip"]
FORMATS: tuple[str, ...] = Format.__args__  # type: ignore[attr-defined]
EXTENSIONS = {"csv": "csv", "json": "json", "jsonl": "jsonl", "parquet": "parquet"}
CONTENT_TYPES = {
    "csv": "text/csv",
    "json": "application/json",
    "jsonl": "application/x-ndjson",
    "parquet": "application/vnd.apache.parquet",
}


def _not_boolean(value: Any) -> Any:
    # read as an int, true was the bound 1: kept every value numeric 1 or more
    if isinstance(value, bool):
        raise ValueError(
            "a range's bounds cannot be true or false; "
            'to match a boolean column\'s true values use "column": true'
        )
    return value


Bound = Annotated[str | int | FiniteFloat | None, BeforeValidator(_not_boolean)]


class FilterRange(BaseModel):
    """Bounds on one column: numbers compare as numbers, strings as text (byte order)."""

    model_config = ConfigDict(extra="forbid")
    eq: Bound = None
    gt: Bound = None
    gte: Bound = None
    lt: Bound = None
    lte: Bound = None

    @model_validator(mode="after")
    def _one_bound(self) -> FilterRange:
        if not self.model_fields_set:
            raise ValueError("a range needs at least one of eq, gt, gte, lt, lte")
        nulls = sorted(b for b in self.model_fields_set if getattr(self, b) is None)
        if nulls:  # dropped from the stored options, the filter would match every row
            raise ValueError(
                f"a range's bounds cannot be null ({', '.join(nulls)}); "
                'to match empty values use "column": null'
            )
        return self


# FiniteFloat: NaN, Infinity and 1e400 (read as inf) compare as nothing and cannot be stored
# in the job's JSON parameters; refused as the request's fault, naming the field. StrictBool
# first: otherwise int takes true as 1.
FilterValue = StrictBool | str | int | FiniteFloat | FilterRange | None


class ExportRequest(BaseModel):
    """What to export: a commit, in a format, optionally some columns and only matching rows."""

    model_config = ConfigDict(extra="forbid")
    format: Format = "csv"
    commit: str | None = Field(
        default=None, max_length=200, description="Commit id, ref, REF@TIME or a time (main)."
    )
    columns: list[str] | None = Field(
        default=None, min_length=1, max_length=10_000, description="Default: all, in order."
    )
    filter: dict[str, FilterValue] | None = Field(
        default=None,
        max_length=100,
        description="Column -> value (equality; null: empty; true or false: a boolean column) "
        'or {"gte": .., "lt": ..} (range).',
    )
    compression: Compression = "none"
    # StrictInt: "5" and true were read as 5 and 1; a client that sends them has a bug to see
    part_rows: StrictInt | None = Field(
        default=None, ge=1, description="Rows of the commit per part (default: sized for Lambda)."
    )
    faults: dict[str, StrictInt] | None = Field(
        default=None, description="Tests only: steps to fail on purpose (ignored unless enabled)."
    )


class ExportStarted(BaseModel):
    job_id: str
    status: str
    status_url: str
    download_url: str
    dataset: str
    commit_id: str
    format: Format


class ExportStatus(BaseModel):
    """Seed 004's shape: status, total and processed records, percent, error, times."""

    job_id: str
    status: str
    dataset: str | None
    commit_id: str | None
    format: str | None
    compression: str | None
    total_records: int | None
    processed_records: int
    exported_records: int | None
    percent: float
    parts_total: int | None
    parts_done: int
    bytes: int | None
    manifest_key: str | None
    error: str | None
    error_code: str | None = None  # what kind of failure (docs/architecture.md)
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None


def check_request(
    conn: db.Conn, commit: datasets.Commit, request: ExportRequest, settings: Settings
) -> None:
    """Refuse what the commit cannot answer: unknown columns, a boolean filter on a column that
    is not boolean, too many parts."""
    known = set(commit.columns)
    named = list(request.columns or []) + list(request.filter or {})
    unknown = [c for c in named if c not in known]
    if unknown:
        shown = ", ".join(map(repr, commit.columns[:30]))
        raise InvalidRequest(
            f"Unknown column(s) {', '.join(map(repr, dict.fromkeys(unknown)))} in "
            f"commit {commit.commit_id[:12]}; its columns are {shown}.",
            unknown_columns=list(dict.fromkeys(unknown)),
        )
    if request.columns and len(set(request.columns)) != len(request.columns):
        raise InvalidRequest("A column is named twice in 'columns'; name each once.")
    _check_boolean_filters(conn, commit, request)
    limits = settings.exports
    if request.part_rows is not None:
        if request.part_rows > limits.max_part_rows:
            raise InvalidRequest(
                f"part_rows {request.part_rows:,} is over the limit of {limits.max_part_rows:,}."
            )
        parts = -(-commit.row_count // request.part_rows)
        if parts > limits.max_parts:
            raise InvalidRequest(
                f"{commit.row_count:,} rows in parts of {request.part_rows:,} is {parts:,} "
                f"parts; at most {limits.max_parts:,}: use a larger part_rows."
            )


def _check_boolean_filters(conn: db.Conn, commit: datasets.Commit, request: ExportRequest) -> None:
    """true and false match the spellings of a boolean column (``schema.TRUE_WORDS``); on
    any other column there is no right answer (was it 1? "true"?), so the request is refused."""
    named = [c for c, v in (request.filter or {}).items() if isinstance(v, bool)]
    if not named:
        return
    row = conn.execute(
        "SELECT schema FROM dsa_core.commits WHERE commit_id = %s", (commit.commit_id,)
    ).fetchone()
    types = {c["name"]: c["type"] for c in (row["schema"] if row else None) or []}
    for column in named:
        if column in types and types[column] in ("boolean", None):  # None: no values at all
            continue
        kind = f"is {types[column]}" if column in types else "has no recorded type"
        raise InvalidRequest(
            f"filter.{column}: true and false filter a boolean column, and {column!r} {kind} "
            f"in commit {commit.commit_id[:12]}; filter it by a value as stored, "
            'e.g. "true" or 1.',
            column=column,
        )


_PREFIX = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._=-]*(/[A-Za-z0-9][A-Za-z0-9._=-]*)*$")


class CommitExports(BaseModel):
    """A dataset's setting: export every new commit, in these formats, under a stable prefix:
    ``exports/<owner>/<prefix>/<commit id>/<format>/`` (parts and ``manifest.json``)."""

    model_config = ConfigDict(extra="forbid")
    formats: list[Format] = Field(min_length=1, max_length=4)
    compression: Compression = "none"
    prefix: str | None = Field(
        default=None, max_length=200, description="Default: datasets/<name>/commits."
    )
    part_rows: StrictInt | None = Field(default=None, ge=1)  # as ExportRequest's

    @model_validator(mode="after")
    def _safe_prefix(self) -> CommitExports:
        if self.prefix is not None and not _PREFIX.fullmatch(self.prefix.strip("/")):
            raise ValueError(
                "prefix: use path segments of letters, digits, '.', '_', '=' or '-', "
                "e.g. warehouse/sales"
            )
        return self


def get_commit_exports(conn: db.Conn, owner: str, name: str) -> CommitExports | None:
    dataset = datasets.get(conn, owner, name)
    row = conn.execute(
        "SELECT commit_exports FROM dsa_core.datasets WHERE id = %s", (dataset.dataset_id,)
    ).fetchone()
    value = row["commit_exports"] if row else None
    return CommitExports.model_validate(value) if value else None


def set_commit_exports(conn: db.Conn, owner: str, name: str, value: CommitExports | None) -> None:
    """Set (or with None, clear) the dataset's commit exports; they apply to later commits."""
    dataset = datasets.get(conn, owner, name)
    conn.execute(
        "UPDATE dsa_core.datasets SET commit_exports = %s WHERE id = %s",
        (Jsonb(value.model_dump()) if value else None, dataset.dataset_id),
    )


def export_new_commit(
    conn: db.Conn, owner: str, name: str, commit_id: str, settings: Settings
) -> list[dict[str, Any]]:
    """Start the exports a dataset asks for of its new commit; what was started, or why not.

    Called by the import's commit once the commit is durable: a failure to start is reported,
    never a reason to fail the import.
    """
    setting = get_commit_exports(conn, owner, name)
    if setting is None:
        return []
    base = (setting.prefix or f"datasets/{name}/commits").strip("/")
    started: list[dict[str, Any]] = []
    for fmt in setting.formats:
        prefix = f"{settings.storage.exports_prefix}{owner}/{base}/{commit_id}/{fmt}/"
        request = ExportRequest(
            format=fmt,
            commit=commit_id,
            compression=setting.compression,
            part_rows=setting.part_rows,
        )
        try:
            job_id, _ = create_job(
                conn, owner, name, request, settings, prefix=prefix, origin={"on_commit": True}
            )
            start_execution(settings, job_id)
            started.append({"format": fmt, "job_id": str(job_id), "prefix": prefix})
        except Exception as exc:
            started.append({"format": fmt, "prefix": prefix, "error": str(exc)})
    return started


def key_prefix(settings: Settings, owner: str, job_id: uuid.UUID) -> str:
    """Where an on-demand export's parts and manifest go."""
    return f"{settings.storage.exports_prefix}{owner}/{job_id}/"


def create_job(
    conn: db.Conn,
    owner: str,
    name: str,
    request: ExportRequest,
    settings: Settings,
    *,
    prefix: str | None = None,
    origin: dict[str, Any] | None = None,
    idempotency_key: str | None = None,
) -> tuple[uuid.UUID, datasets.Commit]:
    """A pending export job that pins the commit the request resolves to right now."""
    dataset, commit = datasets.resolve_commit(conn, owner, name, request.commit)
    check_request(conn, commit, request, settings)
    job_id = uuid.uuid4()
    parameters = {
        "dataset": name,
        "dataset_id": dataset.dataset_id,
        "commit_id": commit.commit_id,
        "requested_commit": request.commit or "main",
        "format": request.format,
        "compression": request.compression,
        "columns": request.columns or commit.columns,
        "options": request.model_dump(mode="json", exclude_none=True),
        "prefix": prefix or key_prefix(settings, owner, job_id),
        **(origin or {}),
    }
    if idempotency_key is not None:
        parameters["idempotency_key"] = idempotency_key
    if settings.local_runtime_id is not None:  # as jobs.create: a dead stack's are found
        parameters["runtime"] = settings.local_runtime_id
    conn.execute(
        "INSERT INTO dsa_jobs.analysis_runs (id, run_type, owner, dataset_id, run_parameters) "
        "VALUES (%s, 'export', %s, %s, %s)",
        (job_id, owner, dataset.dataset_id, Jsonb(parameters)),
    )
    return job_id, commit


def stepfunctions_client(settings: Settings) -> Any:
    local = settings.stepfunctions_endpoint_url
    return boto3.client(
        "stepfunctions",
        endpoint_url=local,
        region_name=settings.storage.region,
        # the local stack's moto takes any key; on AWS the function's role signs
        aws_access_key_id="sluiceway-local" if local else None,
        aws_secret_access_key="sluiceway-local" if local else None,
    )


def start_execution(settings: Settings, job_id: uuid.UUID) -> str:
    """Start the export state machine on one job (named after it: a second start is refused)."""
    if not settings.export_state_machine_arn:
        raise StorageUnavailable(
            "No export state machine is configured (SLUICEWAY_EXPORT_STATE_MACHINE_ARN)."
        )
    started = stepfunctions_client(settings).start_execution(
        stateMachineArn=settings.export_state_machine_arn,
        name=f"export-{job_id}",
        input=json.dumps({"job_id": str(job_id)}),
    )
    return str(started["executionArn"])


def _job_of_key(
    conn: db.Conn, owner: str, key: str, name: str, request: ExportRequest
) -> ExportStarted | None:
    """The export an earlier request with this Idempotency-Key started, if any."""
    # The options compared as jsonb, as both were stored: read back into Python, 1e23 is the
    # integer 10**23 (jsonb keeps numeric), no longer equal to the float the retry sends
    row = conn.execute(
        "SELECT id, status::text AS status, run_parameters, "
        "run_parameters->'options' = %s AS same_options FROM dsa_jobs.analysis_runs "
        "WHERE owner = %s AND run_parameters->>'idempotency_key' = %s",
        (Jsonb(request.model_dump(mode="json", exclude_none=True)), owner, key),
    ).fetchone()
    if row is None:
        return None
    params = row["run_parameters"]
    if not (params.get("dataset") == name and row["same_options"]):
        raise Conflict(
            f"Idempotency-Key {key!r} was sent with another request (job {row['id']}); "
            "use a new key for a new export."
        )
    return ExportStarted(
        job_id=str(row["id"]),
        status=row["status"],
        status_url=f"/exports/{row['id']}",
        download_url=f"/exports/{row['id']}/download-url",
        dataset=name,
        commit_id=params["commit_id"],
        format=params["format"],
    )


def start_export(
    conn: db.Conn,
    owner: str,
    name: str,
    request: ExportRequest,
    settings: Settings | None = None,
    *,
    idempotency_key: str | None = None,
) -> ExportStarted:
    """Check the request, pin its commit in a job, and start the export state machine.

    With an ``idempotency_key``, the same request sent again (a client's retry) answers with
    the job the first one started; the key with a different request is a Conflict.
    """
    settings = settings or get_settings()
    if idempotency_key is not None:
        earlier = _job_of_key(conn, owner, idempotency_key, name, request)
        if earlier is not None:
            return earlier
    try:
        job_id, commit = create_job(
            conn, owner, name, request, settings, idempotency_key=idempotency_key
        )
    except psycopg.errors.UniqueViolation:  # the same key arrived at the same moment
        again = _job_of_key(conn, owner, str(idempotency_key), name, request)
        assert again is not None
        return again
    try:
        start_execution(settings, job_id)
    except Exception as exc:
        jobs.fail(conn, job_id, f"The export could not be started: {exc}", StorageUnavailable.code)
        raise StorageUnavailable(f"The export state machine could not be started: {exc}") from exc
    return ExportStarted(
        job_id=str(job_id),
        status="pending",
        status_url=f"/exports/{job_id}",
        download_url=f"/exports/{job_id}/download-url",
        dataset=name,
        commit_id=commit.commit_id,
        format=request.format,
    )


def _export_job(conn: db.Conn, owner: str, job_id: str) -> jobs.Job:
    job = jobs.get(conn, job_id, owner)
    if job.run_type != "export":
        raise NotFound(f"No export {job_id}.")
    return job


def status(conn: db.Conn, owner: str, job_id: str) -> ExportStatus:
    """Where an export is: parts done, rows read of the commit's total, the error if it failed."""
    job = _export_job(conn, owner, job_id)
    parts = conn.execute(
        "SELECT count(*) AS total, count(*) FILTER (WHERE status = 'written') AS done, "
        "coalesce(sum(rows_done), 0) AS rows_done FROM dsa_jobs.export_parts WHERE job_id = %s",
        (job.job_id,),
    ).fetchone()
    assert parts is not None
    params, summary = job.run_parameters, job.output_summary or {}
    total = job.progress.get("total_rows")
    processed = int(parts["rows_done"])
    if job.status == "completed":
        percent = 100.0
    elif total:
        percent = round(min(100.0, 100.0 * processed / total), 1)
    else:
        percent = 0.0
    return ExportStatus(
        job_id=str(job.job_id),
        status=job.status,
        dataset=job.dataset,
        commit_id=params.get("commit_id"),
        format=params.get("format"),
        compression=params.get("compression"),
        total_records=total,
        processed_records=processed,
        exported_records=summary.get("rows"),
        percent=percent,
        parts_total=int(parts["total"]) or None,
        parts_done=int(parts["done"]),
        bytes=summary.get("bytes"),
        manifest_key=summary.get("manifest_key"),
        error=job.error_message,
        error_code=job.error_code,
        created_at=job.created_at,
        started_at=job.started_at,
        finished_at=job.completed_at,
    )


def download_urls(
    conn: db.Conn, owner: str, job_id: str, settings: Settings | None = None
) -> dict[str, Any]:
    """Presigned GET URLs of every part and of the manifest; ``url`` when one file is all."""
    settings = settings or get_settings()
    job = _export_job(conn, owner, job_id)
    if job.status != "completed":
        raise Conflict(
            f"Export {job_id} is {job.status}"
            + (f" ({job.error_message})" if job.error_message else "")
            + "; download URLs exist once it has completed."
        )
    summary = job.output_summary or {}
    bucket = settings.storage.bucket

    def url(key: str) -> str:
        return storage.presign("get_object", {"Bucket": bucket, "Key": key}, settings)

    parts = [{**p, "url": url(p["key"])} for p in summary.get("parts", [])]
    return {
        "job_id": str(job.job_id),
        "commit_id": summary.get("commit_id"),
        "format": summary.get("format"),
        "compression": summary.get("compression"),
        "columns": summary.get("columns"),
        "rows": summary.get("rows"),
        "bytes": summary.get("bytes"),
        "url": parts[0]["url"] if len(parts) == 1 else None,
        "manifest_key": summary["manifest_key"],
        "manifest_url": url(summary["manifest_key"]),
        "parts": parts,
        "expires_in": settings.storage.presign_expiry_seconds,
    }
