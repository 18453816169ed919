"""The HTTP API: API Gateway + this resolver on AWS, the same resolver on localhost locally.

Routes stay thin: parse, call one domain function, return its model. Errors are JSON:
``{"error": code, "message": ...}``.
"""

from __future__ import annotations

import json
from typing import Any

from aws_lambda_powertools.event_handler import APIGatewayRestResolver, Response, content_types
from aws_lambda_powertools.event_handler.openapi.exceptions import RequestValidationError
from pydantic import BaseModel, Field

from . import __version__, auth, datasets, db, export, jobs, storage, upload
from .errors import SluicewayError

app = APIGatewayRestResolver(enable_validation=True)


PUBLIC_ROUTES = frozenset({"/health"})


def handle(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """The API's entry point: authenticate, then route.

    An API Gateway authorizer (on AWS) puts the caller in the request context. Without one,
    the Bearer token is checked here, before routing and body validation, and its owner is put
    in the same place: the routes read the caller from one field either way.
    """
    context_ = event.setdefault("requestContext", {})
    authorizer = context_.get("authorizer") or {}
    principal = authorizer.get("principalId") or (authorizer.get("claims") or {}).get("sub")
    if not principal and event.get("path") not in PUBLIC_ROUTES:
        headers = {k.lower(): v for k, v in (event.get("headers") or {}).items()}
        try:
            principal = auth.owner_of(db.shared_connection(), headers.get("authorization"))
        except SluicewayError as exc:
            return {
                "statusCode": exc.http_status,
                "headers": {"Content-Type": content_types.APPLICATION_JSON},
                "body": json.dumps(exc.to_dict()),
                "isBase64Encoded": False,
            }
        context_["authorizer"] = {**authorizer, "principalId": principal}
    return app.resolve(event, context)


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


@app.exception_handler(RequestValidationError)  # type: ignore[untyped-decorator]
def handle_validation_error(exc: RequestValidationError) -> Response[Any]:
    problems = [
        f"{'.'.join(str(p) for p in e.get('loc', ()) if p != 'body')}: {e.get('msg')}"
        for e in exc.errors()
    ]
    return _error(
        422, {"error": "invalid_request", "message": "; ".join(problems) or "Invalid request."}
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
        from .settings import get_settings

        storage.s3_client().head_bucket(Bucket=get_settings().storage.bucket)
        checks["storage"] = "ok"
    except Exception as exc:
        checks["storage"] = f"unreachable: {exc}"
    checks["status"] = "ok" if checks["database"] == checks["storage"] == "ok" else "degraded"
    return checks


@app.post("/uploads")
def create_upload(body: upload.CreateUpload) -> Response[Any]:
    created = upload.create_upload(db.shared_connection(), owner(), body)
    return Response(201, content_types.APPLICATION_JSON, created.model_dump())


class SignParts(BaseModel):
    part_numbers: list[int] = Field(min_length=1, max_length=1000)


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
def list_jobs() -> dict[str, Any]:
    return {
        "jobs": [j.model_dump(mode="json") for j in jobs.list_jobs(db.shared_connection(), owner())]
    }


@app.get("/jobs/<job_id>")
def get_job(job_id: str) -> dict[str, Any]:
    return jobs.get(db.shared_connection(), job_id, owner()).model_dump(mode="json")


@app.get("/datasets")
def list_datasets() -> dict[str, Any]:
    found = datasets.list_datasets(db.shared_connection(), owner())
    return {"datasets": [d.model_dump(mode="json") for d in found]}


@app.get("/datasets/<name>/commits")
def list_commits(name: str) -> dict[str, Any]:
    commits = datasets.log(db.shared_connection(), owner(), name)
    return {"dataset": name, "commits": [c.model_dump(mode="json") for c in commits]}


@app.post("/datasets/<name>/exports")
def create_export(name: str, body: export.ExportRequest) -> Response[Any]:
    result = export.export_commit(db.shared_connection(), owner(), name, body)
    return Response(201, content_types.APPLICATION_JSON, result.model_dump())
