"""The HTTP API: API Gateway + this resolver on AWS, the same resolver on localhost locally.

Routes stay thin: parse, call one domain function, return its model. Errors are JSON:
``{"error": code, "message": ...}``.
"""

from __future__ import annotations

import base64
import contextlib
import json
import re
from datetime import datetime
from http.cookies import SimpleCookie
from typing import Annotated, Any

import psycopg
from aws_lambda_powertools.event_handler import APIGatewayRestResolver, Response, content_types
from aws_lambda_powertools.event_handler.openapi.exceptions import (
    RequestUnsupportedContentType,
    RequestValidationError,
)
from aws_lambda_powertools.event_handler.openapi.models import HTTPBearer
from aws_lambda_powertools.event_handler.openapi.params import Query
from pydantic import BaseModel, Field, StrictInt, ValidationError

from . import (
    __version__,
    auth,
    datasets,
    db,
    documents,
    export,
    jobs,
    rejects,
    rules,
    schedules,
    sessions,
    staging,
    storage,
    upload,
    versioning,
)
from .errors import InvalidRequest, RangeNotSatisfiable, SluicewayError
from .handlers import logger
from .names import MAIN_REF
from .settings import get_settings


def _json_body(text: str) -> Any:
    """The body as JSON; a number too long for Python to read (over 4,300 digits) is a
    malformed body (a 400), not the ValueError json.loads raises (a 500)."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        raise
    except ValueError as exc:
        long = re.search(r"\d{4301,}", text)
        raise json.JSONDecodeError(
            "a number of more than 4,300 digits", text, long.start() if long else 0
        ) from exc


app = APIGatewayRestResolver(enable_validation=True, json_body_deserializer=_json_body)


PUBLIC_ROUTES = frozenset({"/health", "/openapi.json", "/docs"})
OPENAPI = {
    "title": "sluiceway",
    "version": __version__,
    "description": "Move massive datasets in and out of PostgreSQL through object storage.",
    "security_schemes": {"bearer": HTTPBearer(bearerFormat="slw_...")},
    "security": [{"bearer": []}],
}


def handle(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """The API's entry point: authenticate, then route.

    An API Gateway authorizer (on AWS) puts the caller in the request context. Without one,
    the Bearer token is checked here, before routing and body validation, and its owner is put
    in the same place: the routes read the caller from one field either way.
    """
    context_ = event.setdefault("requestContext", {})
    authorizer = context_.get("authorizer") or {}
    principal = authorizer.get("principalId") or (authorizer.get("claims") or {}).get("sub")
    headers = {k.lower(): v for k, v in (event.get("headers") or {}).items()}
    if not principal and event.get("path") not in PUBLIC_ROUTES:
        credentials = headers.get("authorization") or _cookie_token(headers.get("cookie"))
        try:
            principal = auth.owner_of(db.shared_connection(), credentials)
        except SluicewayError as exc:
            return _raw_error(exc.http_status, exc.code, exc.message)
        context_["authorizer"] = {**authorizer, "principalId": principal}
    content_type = headers.get("content-type", "").strip().lower()
    if event.get("body") and content_type and not content_type.startswith("application/json"):
        return _raw_error(415, "unsupported_media_type", "Send the body as application/json.")
    return app.resolve(event, context)


def _raw_error(status: int, code: str, message: str) -> dict[str, Any]:
    """An error response written before the resolver runs (it has not parsed the request)."""
    return {
        "statusCode": status,
        "headers": {"Content-Type": content_types.APPLICATION_JSON},
        "body": json.dumps({"error": code, "message": message}),
        "isBase64Encoded": False,
    }


COOKIE = "sluiceway_token"


def _cookie_token(cookie_header: str | None) -> str | None:
    """A browser page's token: Uppy's companion mode sends no headers of ours, only cookies."""
    if not cookie_header:
        return None
    jar = SimpleCookie()
    jar.load(cookie_header)
    morsel = jar.get(COOKIE)
    return f"Bearer {morsel.value}" if morsel else None


def owner() -> str:
    """The caller of the current request."""
    authorizer = app.current_event.request_context.authorizer
    principal = authorizer.get("principalId") or (authorizer.get("claims") or {}).get("sub")
    return str(principal)


def _error(status: int, body: dict[str, Any]) -> Response[Any]:
    return Response(status_code=status, content_type=content_types.APPLICATION_JSON, body=body)


@app.exception_handler(SluicewayError)  # type: ignore[untyped-decorator]
def handle_sluiceway_error(exc: SluicewayError) -> Response[Any]:
    return _error(exc.http_status, exc.to_dict())


@app.exception_handler(RequestUnsupportedContentType)  # type: ignore[untyped-decorator]
def handle_content_type(exc: RequestUnsupportedContentType) -> Response[Any]:
    return _error(
        415, {"error": "unsupported_media_type", "message": "Send the body as application/json."}
    )


@app.exception_handler(RequestValidationError)  # type: ignore[untyped-decorator]
def handle_validation_error(exc: RequestValidationError) -> Response[Any]:
    bad_json = [e for e in exc.errors() if e.get("type") == "json_invalid"]
    if bad_json:  # the body is not JSON at all: a 400, saying where it broke
        where = bad_json[0].get("loc", ("body", "?"))[-1]
        reason = (bad_json[0].get("ctx") or {}).get("error", "malformed")
        return _error(
            400,
            {
                "error": "invalid_request",
                "message": f"The request body is not valid JSON: {reason} at character {where}.",
            },
        )
    problems = [
        f"{'.'.join(str(p) for p in e.get('loc', ()) if p != 'body')}: {e.get('msg')}"
        for e in exc.errors()
    ]
    return _error(
        422, {"error": "invalid_request", "message": "; ".join(problems) or "Invalid request."}
    )


@app.exception_handler([json.JSONDecodeError, UnicodeDecodeError])  # type: ignore[untyped-decorator]
def handle_bad_body(exc: ValueError) -> Response[Any]:
    # malformed JSON, or a body that is not UTF-8 at all
    return _error(
        400, {"error": "invalid_request", "message": f"The request body is not valid JSON: {exc}"}
    )


@app.exception_handler(ValidationError)  # type: ignore[untyped-decorator]
def handle_invalid_value(exc: ValidationError) -> Response[Any]:
    problems = [f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()]
    return _error(422, {"error": "invalid_request", "message": "; ".join(problems)})


@app.exception_handler(psycopg.DataError)  # type: ignore[untyped-decorator]
def handle_unstorable_value(exc: psycopg.DataError) -> Response[Any]:
    # a value PostgreSQL cannot hold, e.g. a NUL character in a name or a message
    detail = exc.diag.message_primary or str(exc)
    return _error(
        400, {"error": "invalid_request", "message": f"A value cannot be stored: {detail}"}
    )


@app.exception_handler(psycopg.OperationalError)  # type: ignore[untyped-decorator]
def handle_lost_database(exc: psycopg.OperationalError) -> Response[Any]:
    # the connection broke mid-request (a restart, a failover): the caller may try again
    logger.warning("database connection lost", extra={"error": str(exc)})
    return Response(
        503,
        content_types.APPLICATION_JSON,
        {"error": "database_unavailable", "message": "The database connection was lost; retry."},
        headers={"Retry-After": "1"},
    )


@app.exception_handler(Exception)  # type: ignore[untyped-decorator]
def handle_unexpected(exc: Exception) -> Response[Any]:
    logger.exception("unexpected error")
    return _error(
        500, {"error": "internal_error", "message": "The API failed unexpectedly; see its logs."}
    )


@app.not_found
def handle_not_found(_: Exception) -> Response[Any]:
    return _error(404, {"error": "not_found", "message": f"No route {app.current_event.path}."})


@app.get("/health")
def health() -> dict[str, Any]:
    checks: dict[str, Any] = {"version": __version__}
    try:
        db.shared_connection().execute("SELECT 1")
        checks["database"] = "ok"
    except Exception as exc:
        checks["database"] = f"unreachable: {exc}"
    try:
        storage.s3_client().head_bucket(Bucket=get_settings().storage.bucket)
        checks["storage"] = "ok"
    except Exception as exc:
        checks["storage"] = f"unreachable: {exc}"
    if checks["database"] == "ok":
        checks["uploads"] = staging.counts(db.shared_connection())
    checks["status"] = "ok" if checks["database"] == checks["storage"] == "ok" else "degraded"
    return checks


@app.post("/uploads")
def create_upload(body: upload.CreateUpload) -> Response[Any]:
    created = upload.create_upload(db.shared_connection(), owner(), body)
    return Response(201, content_types.APPLICATION_JSON, created.model_dump())


class SignParts(BaseModel):
    part_numbers: list[StrictInt] = Field(min_length=1, max_length=1000)


@app.post("/uploads/<upload_id>/parts")
def sign_parts(upload_id: str, body: SignParts) -> dict[str, Any]:
    urls = upload.sign_parts(db.shared_connection(), owner(), upload_id, body.part_numbers)
    return {"parts": [u.model_dump() for u in urls]}


class CompleteUpload(BaseModel):
    parts: list[upload.CompletedPart] = Field(max_length=upload.MAX_PARTS)


@app.post("/uploads/<upload_id>/complete")
def complete_upload(upload_id: str, body: CompleteUpload) -> dict[str, Any]:
    return upload.complete_upload(db.shared_connection(), owner(), upload_id, body.parts)


@app.delete("/uploads/<upload_id>")
def abort_upload(upload_id: str) -> dict[str, Any]:
    upload.abort_upload(db.shared_connection(), owner(), upload_id)
    return {}


@app.get("/jobs")
def list_jobs(
    key: Annotated[
        str | None, Query(description="Only the import of this uploaded object.")
    ] = None,
    dataset: Annotated[str | None, Query(description="Only this dataset's jobs.")] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
) -> dict[str, Any]:
    found = jobs.list_jobs(db.shared_connection(), owner(), limit, key=key, dataset=dataset)
    return {"jobs": [j.model_dump(mode="json") for j in found]}


@app.get("/jobs/<job_id>")
def get_job(job_id: str) -> dict[str, Any]:
    """A job; an import that rejected rows links its report (``report_url``, presigned)."""
    job = jobs.get(db.shared_connection(), job_id, owner())
    if job.progress.get("report_key"):
        job.report_url = rejects.presigned_url(job.progress["report_key"], get_settings())
    return job.model_dump(mode="json")


@app.get("/datasets")
def list_datasets() -> dict[str, Any]:
    found = datasets.list_datasets(db.shared_connection(), owner())
    return {"datasets": [d.model_dump(mode="json") for d in found]}


@app.get("/datasets/<name>")
def get_dataset(name: str) -> dict[str, Any]:
    return datasets.get(db.shared_connection(), owner(), name).model_dump(mode="json")


@app.get("/datasets/<name>/rules")
def get_rules(name: str) -> dict[str, Any]:
    """The validation rules every import into the dataset is checked against."""
    found = rules.get_dataset_rules(db.shared_connection(), owner(), name)
    return {"dataset": name, "rules": found.model_dump(exclude_none=True)}


@app.put("/datasets/<name>/rules")
def set_rules(name: str, body: rules.Rules) -> dict[str, Any]:
    """Set the dataset's validation rules (a dataset not imported yet is created empty); an
    import's own ``options.rules`` win over them field by field."""
    rules.set_dataset_rules(db.shared_connection(), owner(), name, body)
    return {"dataset": name, "rules": body.model_dump(exclude_none=True)}


@app.delete("/datasets/<name>/rules")
def delete_rules(name: str) -> dict[str, Any]:
    conn = db.shared_connection()
    rules.get_dataset_rules(conn, owner(), name)  # 404 for a dataset that does not exist
    rules.set_dataset_rules(conn, owner(), name, None)
    return {"dataset": name, "rules": {}}


@app.get("/datasets/<name>/commits")
def list_commits(
    name: str,
    ref: Annotated[str, Query(max_length=128)] = MAIN_REF,
    all_commits: Annotated[bool, Query(alias="all")] = False,
    limit: Annotated[int, Query(ge=1, le=10_000)] = 100,
) -> dict[str, Any]:
    commits = datasets.log(
        db.shared_connection(), owner(), name, ref, limit, all_commits=all_commits
    )
    return {"dataset": name, "commits": [c.model_dump(mode="json") for c in commits]}


# -- versioning: diff, rows at any commit, refs, reset, revert, merge, gc ----------------


@app.get("/datasets/<name>/diff")
def diff_commits(
    name: str,
    to: Annotated[str, Query(max_length=200)] = MAIN_REF,
    from_: Annotated[str | None, Query(alias="from", max_length=200)] = None,
    limit: Annotated[int, Query(ge=0, le=100_000)] = 1000,
) -> dict[str, Any]:
    """Rows added, removed and changed from one commit (id, ref or time) to another.

    ``from`` defaults to the parent of ``to``.
    """
    conn = db.shared_connection()
    _, b = datasets.resolve_commit(conn, owner(), name, to)
    a = datasets.resolve_commit(conn, owner(), name, from_)[1].commit_id if from_ else None
    if from_ is None:
        a = b.parent_commit_id
    return versioning.diff(conn, name, a, b.commit_id, limit=limit).model_dump(mode="json")


@app.get("/datasets/<name>/rows")
def list_rows(
    name: str,
    commit: Annotated[str | None, Query(max_length=200)] = None,
    offset: Annotated[int, Query(ge=0)] = 0,
    limit: Annotated[int, Query(ge=0, le=10_000)] = 100,
) -> dict[str, Any]:
    """Rows of a commit (id, ref, ``REF@TIME`` or a time), in logical order."""
    page = versioning.list_rows(db.shared_connection(), owner(), name, commit, offset, limit)
    return page.model_dump(mode="json")


@app.get("/datasets/<name>/refs")
def list_refs(name: str) -> dict[str, Any]:
    refs = versioning.list_refs(db.shared_connection(), owner(), name)
    return {"dataset": name, "refs": [r.model_dump(mode="json") for r in refs]}


class CreateRef(BaseModel):
    name: str = Field(min_length=1, max_length=128)
    start: str | None = Field(default=None, max_length=200, description="Commit, ref or time.")


@app.post("/datasets/<name>/refs")
def create_ref(name: str, body: CreateRef) -> Response[Any]:
    ref = versioning.create_branch(db.shared_connection(), owner(), name, body.name, body.start)
    return Response(
        status_code=201,
        content_type=content_types.APPLICATION_JSON,
        body=ref.model_dump(mode="json"),
    )


class ResetRef(BaseModel):
    to: str = Field(min_length=1, max_length=200, description="Commit, ref or time.")
    expected: str | None = Field(
        default=None, max_length=64, description="Only move if the ref is still here."
    )


@app.put("/datasets/<name>/refs/<ref>")
def reset_ref(name: str, ref: str, body: ResetRef) -> dict[str, Any]:
    moved = versioning.reset(db.shared_connection(), owner(), name, ref, body.to, body.expected)
    return moved.model_dump(mode="json")


@app.delete("/datasets/<name>/refs/<ref>")
def delete_ref(name: str, ref: str) -> dict[str, Any]:
    versioning.delete_ref(db.shared_connection(), owner(), name, ref)
    return {"deleted": ref}


class RevertRequest(BaseModel):
    commit: str = Field(min_length=1, max_length=200)
    ref: str = Field(default=MAIN_REF, max_length=128)


@app.post("/datasets/<name>/revert")
def revert_commit(name: str, body: RevertRequest) -> dict[str, Any]:
    return versioning.revert(db.shared_connection(), owner(), name, body.commit, body.ref)


class MergeRequest(BaseModel):
    source: str = Field(min_length=1, max_length=128, description="The ref to merge.")
    into: str = Field(default=MAIN_REF, max_length=128)


@app.post("/datasets/<name>/merge")
def merge_refs(name: str, body: MergeRequest) -> dict[str, Any]:
    return versioning.merge(db.shared_connection(), owner(), name, body.source, body.into)


class GcRequest(BaseModel):
    keep: StrictInt | None = Field(default=None, ge=1, description="Commits to keep per ref.")
    keep_since: datetime | None = Field(default=None, description="Keep commits since then.")


@app.post("/datasets/<name>/gc")
def collect_garbage(name: str, body: GcRequest) -> dict[str, Any]:
    return versioning.gc(
        db.shared_connection(), owner(), name, keep=body.keep, keep_since=body.keep_since
    )


@app.post("/datasets/<name>/exports")
def create_export(name: str, body: export.ExportRequest) -> Response[Any]:
    """Start an export of one commit (default: what main points to now, pinned); 202 with the
    job id and where to poll it. With an ``Idempotency-Key`` header, the same request sent
    again answers with the job the first one started."""
    key = app.current_event.headers.get("idempotency-key")
    if key is not None and not 1 <= len(key) <= 255:
        raise InvalidRequest("Idempotency-Key is 1 to 255 characters.")
    started = export.start_export(db.shared_connection(), owner(), name, body, idempotency_key=key)
    return Response(202, content_types.APPLICATION_JSON, started.model_dump())


@app.get("/datasets/<name>/export-schedules")
def list_export_schedules(name: str) -> dict[str, Any]:
    found = schedules.list_schedules(db.shared_connection(), owner(), name)
    return {"dataset": name, "schedules": [s.model_dump(mode="json") for s in found]}


@app.post("/datasets/<name>/export-schedules")
def create_export_schedule(name: str, body: schedules.CreateSchedule) -> Response[Any]:
    """Export the dataset on a schedule: ``cron(m h dom mon dow year)`` or ``rate(N unit)``."""
    created = schedules.create(db.shared_connection(), owner(), name, body)
    return Response(201, content_types.APPLICATION_JSON, created.model_dump(mode="json"))


@app.delete("/datasets/<name>/export-schedules/<schedule>")
def delete_export_schedule(name: str, schedule: str) -> dict[str, Any]:
    schedules.delete(db.shared_connection(), owner(), name, schedule)
    return {"deleted": schedule}


@app.get("/datasets/<name>/commit-exports")
def get_commit_exports(name: str) -> dict[str, Any]:
    """Whether every new commit of the dataset is exported, and how."""
    found = export.get_commit_exports(db.shared_connection(), owner(), name)
    return {"dataset": name, "commit_exports": found.model_dump() if found else None}


@app.put("/datasets/<name>/commit-exports")
def set_commit_exports(name: str, body: export.CommitExports) -> dict[str, Any]:
    """Export every new commit under a stable prefix, with a manifest, in these formats."""
    export.set_commit_exports(db.shared_connection(), owner(), name, body)
    return {"dataset": name, "commit_exports": body.model_dump()}


@app.delete("/datasets/<name>/commit-exports")
def delete_commit_exports(name: str) -> dict[str, Any]:
    export.set_commit_exports(db.shared_connection(), owner(), name, None)
    return {"dataset": name, "commit_exports": None}


@app.get("/exports/<job_id>")
def get_export(job_id: str) -> dict[str, Any]:
    """An export's status: total and processed records, percent, error, start and finish."""
    return export.status(db.shared_connection(), owner(), job_id).model_dump(mode="json")


@app.get("/exports/<job_id>/download-url")
def export_download_url(job_id: str) -> dict[str, Any]:
    """Presigned URLs of the parts and the manifest (``url``: the whole file, if one part)."""
    return export.download_urls(db.shared_connection(), owner(), job_id)


# -- Uppy's S3 multipart protocol (@uppy/aws-s3 with companionEndpoint: <api>/uploads) ----------


class UppyCreate(BaseModel):
    filename: str = Field(min_length=1, max_length=1024)
    type: str = "application/octet-stream"
    metadata: dict[str, Any] = Field(default_factory=dict)


def _uppy_request(filename: str, metadata: dict[str, Any]) -> upload.CreateUpload:
    """An upload request from Uppy's file metadata: dataset (required), size, chunk_bytes."""
    if not metadata.get("dataset"):
        raise InvalidRequest("metadata.dataset is required: which dataset should this file go to?")
    size = _whole_number(metadata, "size")
    options: dict[str, Any] = {}
    if metadata.get("description"):
        options["message"] = str(metadata["description"])
    if metadata.get("chunk_bytes"):
        options["chunk_bytes"] = _whole_number(metadata, "chunk_bytes")
    for name in ("format", "mode", "delimiter", "encoding"):
        if metadata.get(name):
            options[name] = str(metadata[name])
    if str(metadata.get("header", "")).lower() in ("false", "0", "no"):
        options["header"] = False
    if metadata.get("rules"):  # an object, or its JSON text (Uppy's metadata are strings)
        given = metadata["rules"]
        try:
            options["rules"] = json.loads(given) if isinstance(given, str) else given
        except ValueError as exc:
            raise InvalidRequest(f"metadata.rules is not JSON: {exc}") from exc
    if metadata.get("key"):
        key = metadata["key"]  # a list, or comma-separated column names
        options["key"] = key if isinstance(key, list) else str(key).split(",")
    return upload.CreateUpload(
        dataset=str(metadata["dataset"]),
        filename=filename,
        size=size,
        options=upload.ImportOptions(**options),
    )


def _whole_number(metadata: dict[str, Any], name: str) -> int | None:
    """A number of bytes from Uppy's metadata (its values are often strings)."""
    value = metadata.get(name)
    if value in (None, ""):
        return None
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str):
        with contextlib.suppress(ValueError):
            return int(value)
    raise InvalidRequest(f"metadata.{name} must be a whole number of bytes, not {value!r}.")


@app.post("/uploads/s3/multipart")
def uppy_create(body: UppyCreate) -> dict[str, Any]:
    created = upload.create_upload(
        db.shared_connection(), owner(), _uppy_request(body.filename, body.metadata)
    )
    return {"key": created.key, "uploadId": created.s3_upload_id, "bucket": created.bucket}


def _uppy_upload_id(upload_id: str) -> str:
    key = app.current_event.get_query_string_value("key")
    if not key:
        raise InvalidRequest("The query parameter 'key' is required.")
    return upload.find_multipart(db.shared_connection(), owner(), upload_id, key)


@app.get("/uploads/s3/multipart/<upload_id>/<part_number>")
def uppy_sign_part(upload_id: str, part_number: str) -> dict[str, Any]:
    if not part_number.isdigit():
        raise InvalidRequest(f"Part number {part_number!r} is not a number.")
    ours = _uppy_upload_id(upload_id)
    signed = upload.sign_parts(db.shared_connection(), owner(), ours, [int(part_number)])
    return {"url": signed[0].url, "expires": get_settings().storage.presign_expiry_seconds}


@app.get("/uploads/s3/multipart/<upload_id>")
def uppy_list_parts(upload_id: str) -> list[dict[str, Any]]:
    return upload.list_parts(db.shared_connection(), owner(), _uppy_upload_id(upload_id))


class UppyPart(BaseModel):
    PartNumber: StrictInt = Field(ge=1, le=upload.MAX_PARTS)  # Uppy's field names
    ETag: str = Field(pattern=upload.ETAG_PATTERN)


class UppyComplete(BaseModel):
    parts: list[UppyPart] = Field(max_length=upload.MAX_PARTS)


@app.post("/uploads/s3/multipart/<upload_id>/complete")
def uppy_complete(upload_id: str, body: UppyComplete) -> dict[str, Any]:
    ours = _uppy_upload_id(upload_id)
    parts = [upload.CompletedPart(part_number=p.PartNumber, etag=p.ETag) for p in body.parts]
    done = upload.complete_upload(db.shared_connection(), owner(), ours, parts)
    settings = get_settings()
    location = f"s3://{settings.storage.bucket}/{done['key']}"
    return {"location": location, "key": done["key"], "job_id": done["job_id"]}


@app.delete("/uploads/s3/multipart/<upload_id>")
def uppy_abort(upload_id: str) -> dict[str, Any]:
    upload.abort_upload(db.shared_connection(), owner(), _uppy_upload_id(upload_id))
    return {}


@app.get("/uploads/s3/params")
def uppy_params() -> dict[str, Any]:
    event = app.current_event
    filename = event.get_query_string_value("filename") or ""
    content_type = event.get_query_string_value("type") or "application/octet-stream"
    metadata = {
        k[len("metadata[") : -1]: v
        for k, v in (event.query_string_parameters or {}).items()
        if k.startswith("metadata[") and k.endswith("]")
    }
    if not filename:
        raise InvalidRequest("The query parameter 'filename' is required.")
    return upload.presigned_post(
        db.shared_connection(), owner(), _uppy_request(filename, metadata), content_type
    )


# -- The upload lifecycle (seed 003): uploading -> uploaded -> validating -> processing -> fresh|failed


@app.get("/uploads")
def list_uploads(
    status: Annotated[
        staging.State | None, Query(description="Only uploads in this state.")
    ] = None,
    dataset: Annotated[str | None, Query(description="Only uploads into this dataset.")] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> dict[str, Any]:
    found = staging.list_uploads(
        db.shared_connection(), owner(), status=status, dataset=dataset, limit=limit
    )
    return {"uploads": [u.model_dump(mode="json") for u in found]}


@app.get("/uploads/<upload_id>")
def get_upload(upload_id: str) -> dict[str, Any]:
    return staging.get(db.shared_connection(), owner(), upload_id).model_dump(mode="json")


@app.post("/uploads/<upload_id>/retry")
def retry_upload(upload_id: str) -> dict[str, Any]:
    """Run a failed import again on the same object, as a new job."""
    return staging.retry(db.shared_connection(), owner(), upload_id).model_dump(mode="json")


class Cleanup(BaseModel):
    older_than_hours: float = Field(default=24.0, ge=0, le=24 * 365)


@app.post("/uploads/cleanup")
def cleanup_uploads(body: Cleanup) -> dict[str, Any]:
    """Abort your multipart uploads (imports and documents) still open after N hours."""
    done = staging.cleanup(db.shared_connection(), owner(), body.older_than_hours)
    return done.model_dump(mode="json")


@app.get("/uploads/<upload_id>/download")
def upload_download_url(upload_id: str) -> dict[str, Any]:
    """A presigned GET URL of the uploaded file as it was received."""
    return staging.download_url(db.shared_connection(), owner(), upload_id)


# seed 003's route names, as aliases of the routes above
@app.get("/uploads/staged-files")
def staged_files(
    status: Annotated[staging.State | None, Query()] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> dict[str, Any]:
    found = staging.list_uploads(db.shared_connection(), owner(), status=status, limit=limit)
    return {"files": [u.model_dump(mode="json") for u in found]}


@app.get("/uploads/upload-progress/<upload_id>")
def upload_progress(upload_id: str) -> dict[str, Any]:
    return get_upload(upload_id)


@app.get("/uploads/file-info/<upload_id>")
def file_info(upload_id: str) -> dict[str, Any]:
    return get_upload(upload_id)


@app.post("/uploads/retry-failed-file/<upload_id>")
def retry_failed_file(upload_id: str) -> dict[str, Any]:
    return retry_upload(upload_id)


@app.post("/uploads/process-file/<upload_id>")
def process_file(upload_id: str) -> dict[str, Any]:
    """Seed 003's manual processing: imports start on their own, so this re-runs a failed one."""
    return retry_upload(upload_id)


@app.get("/uploads/download-file/<upload_id>")
def download_file(upload_id: str) -> dict[str, Any]:
    return upload_download_url(upload_id)


@app.delete("/uploads/cleanup-failed-uploads")
def cleanup_failed_uploads(
    hours_old: Annotated[float, Query(ge=0, le=24 * 365)] = 24.0,
) -> dict[str, Any]:
    done = staging.cleanup(db.shared_connection(), owner(), hours_old)
    return done.model_dump(mode="json")


# -- Documents: opaque files up to 1 TB, stored and downloaded (never imported) -----------------


@app.post("/documents")
def create_document(body: documents.CreateDocument) -> Response[Any]:
    created = documents.create(db.shared_connection(), owner(), body)
    return Response(201, content_types.APPLICATION_JSON, created.model_dump())


@app.get("/documents")
def list_documents(
    category: Annotated[str | None, Query(description="Only this category.")] = None,
    status: Annotated[documents.Status | None, Query()] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> dict[str, Any]:
    found = documents.list_documents(
        db.shared_connection(), owner(), category=category, status=status, limit=limit
    )
    return {"documents": [d.model_dump(mode="json") for d in found]}


@app.get("/documents/<document_id>")
def get_document(document_id: str) -> dict[str, Any]:
    return documents.get(db.shared_connection(), owner(), document_id).model_dump(mode="json")


@app.post("/documents/<document_id>/parts")
def sign_document_parts(document_id: str, body: SignParts) -> dict[str, Any]:
    urls = documents.sign_parts(db.shared_connection(), owner(), document_id, body.part_numbers)
    return {"parts": [u.model_dump() for u in urls]}


@app.get("/documents/<document_id>/parts")
def list_document_parts(document_id: str) -> dict[str, Any]:
    """The parts S3 already holds, so an interrupted upload resumes."""
    return {"parts": documents.list_parts(db.shared_connection(), owner(), document_id)}


@app.post("/documents/<document_id>/complete")
def complete_document(document_id: str, body: CompleteUpload) -> dict[str, Any]:
    done = documents.complete(db.shared_connection(), owner(), document_id, body.parts)
    return done.model_dump(mode="json")


@app.get("/documents/<document_id>/download")
def document_download_url(document_id: str) -> dict[str, Any]:
    """A presigned GET URL: S3 honours Range on it, so big downloads resume."""
    return documents.download_url(db.shared_connection(), owner(), document_id)


@app.get("/documents/<document_id>/content")
def document_content(document_id: str) -> Response[Any]:
    """The bytes, or one Range of them (206), up to the API's response limit; bigger answers
    redirect (302) to the presigned URL."""
    conn = db.shared_connection()
    wanted = app.current_event.headers.get("range")
    try:
        found = documents.content(conn, owner(), document_id, wanted)
    except RangeNotSatisfiable as exc:
        size = documents.get(conn, owner(), document_id).size_bytes
        return Response(
            416,
            content_types.APPLICATION_JSON,
            exc.to_dict(),
            headers={"Content-Range": f"bytes */{size}"},
        )
    content_type = found.headers.pop("Content-Type", "application/octet-stream")
    # base64 here, because the response validation would try to read bytes as UTF-8 text
    response: Response[Any] = Response(
        found.status, content_type, base64.b64encode(found.body).decode(), headers=found.headers
    )
    response.base64_encoded = True
    return response


@app.delete("/documents/<document_id>")
def delete_document(document_id: str) -> dict[str, Any]:
    documents.delete(db.shared_connection(), owner(), document_id)
    return {}


# -- Chunked record sessions (seed 002) ---------------------------------------------------------


@app.post("/sessions")
def open_session(body: sessions.OpenSession) -> Response[Any]:
    opened = sessions.open_session(db.shared_connection(), owner(), body)
    return Response(201, content_types.APPLICATION_JSON, opened.model_dump(mode="json"))


@app.get("/sessions/<session_id>")
def get_session(session_id: str) -> dict[str, Any]:
    """The session: which chunks arrived and which are missing, so a client can resume."""
    return sessions.get(db.shared_connection(), owner(), session_id).model_dump(mode="json")


@app.post("/sessions/<session_id>/chunks")
def put_session_chunk(session_id: str, body: sessions.ChunkRequest) -> Response[Any]:
    """202 while chunks are missing; 200 with the job when the last one commits the session."""
    committed, result = sessions.put_chunk(db.shared_connection(), owner(), session_id, body)
    return Response(200 if committed else 202, content_types.APPLICATION_JSON, result)


@app.post("/sessions/<session_id>/commit")
def commit_session(session_id: str) -> dict[str, Any]:
    """Assemble the chunks in order into one file; its import starts like any upload's."""
    done = sessions.commit(db.shared_connection(), owner(), session_id)
    return done.model_dump(mode="json")


@app.get("/openapi.json", include_in_schema=False)
def openapi_document() -> Response[str]:
    return Response(200, content_types.APPLICATION_JSON, openapi_json())


def openapi_json() -> str:
    """The API's OpenAPI document (docs/openapi.json is this, checked in)."""
    return app.get_openapi_json_schema(**OPENAPI)  # type: ignore[arg-type]


# Swagger UI at /docs (its assets ship inside Powertools: no CDN needed).
app.enable_swagger(path="/docs", **OPENAPI)  # type: ignore[arg-type]
