"""Object storage: the S3 client and presigned URLs. S3 or anything that speaks its API."""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator
from functools import lru_cache
from typing import IO, TYPE_CHECKING, Any

import boto3
from botocore.config import Config
from botocore.exceptions import ClientError

from .errors import Conflict
from .settings import Settings, get_settings

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

# The object an import task reads, and its ETag when the import was planned: (bucket, key, etag).
_PLANNED: contextvars.ContextVar[tuple[str, str, str] | None] = contextvars.ContextVar(
    "sluiceway_planned_object", default=None
)


@contextlib.contextmanager
def as_planned(bucket: str, key: str, etag: str | None) -> Iterator[None]:
    """Within: every GET of s3://bucket/key that sluiceway's readers send carries
    ``If-Match: etag``, so an import reads the object it planned, every range of it.

    An object overwritten while it is imported (a second upload to the same key) then fails
    the job with :func:`changed` instead of loading ranges of two different files into one
    commit. ``etag`` None (a job planned before the ETag was kept): no condition.
    """
    token = _PLANNED.set((bucket, key, etag) if etag else None)
    try:
        yield
    finally:
        _PLANNED.reset(token)


def if_match(bucket: str, key: str) -> dict[str, Any]:
    """get_object's ``IfMatch`` for the object being imported (nothing for any other)."""
    planned = _PLANNED.get()
    if planned is not None and planned[:2] == (bucket, key):
        return {"IfMatch": planned[2]}
    return {}


def precondition_failed(exc: BaseException | None) -> bool:
    """Whether S3 refused a GET because its If-Match no longer held (412), here or in a
    cause (smart_open wraps the client's error in an OSError)."""
    while exc is not None:
        if isinstance(exc, ClientError):
            error = exc.response.get("Error", {})
            status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            return error.get("Code") == "PreconditionFailed" or status == 412
        exc = exc.__cause__
    return False


def changed(bucket: str, key: str) -> Conflict:
    """The error of an import whose object was replaced after it was planned."""
    etag = if_match(bucket, key).get("IfMatch", "?")
    return Conflict(
        f"s3://{bucket}/{key} changed after this import planned it (its ETag was {etag}): "
        "another upload replaced it. The import stopped and committed nothing; retry the "
        "upload to import the object as it is now."
    )


@lru_cache(maxsize=8)
def _client(
    endpoint_url: str | None, region: str, access_key: str | None, secret_key: str | None
) -> S3Client:
    config = Config(
        signature_version="s3v4",
        retries={"max_attempts": 5, "mode": "standard"},
        max_pool_connections=32,
        s3={"addressing_style": "path"} if endpoint_url else {},
    )
    return boto3.client(
        "s3",
        endpoint_url=endpoint_url,
        region_name=region,
        aws_access_key_id=access_key,
        aws_secret_access_key=secret_key,
        config=config,
    )


def s3_client(settings: Settings | None = None) -> S3Client:
    settings = settings or get_settings()
    st = settings.storage
    return _client(settings.storage_endpoint(), st.region, st.access_key_id, st.secret_access_key)


def presign(method: str, params: dict[str, Any], settings: Settings | None = None) -> str:
    settings = settings or get_settings()
    return s3_client(settings).generate_presigned_url(
        ClientMethod=method, Params=params, ExpiresIn=settings.storage.presign_expiry_seconds
    )


def list_parts(
    bucket: str, key: str, upload_id: str, settings: Settings | None = None
) -> list[dict[str, Any]]:
    """Every part S3 holds of an open multipart upload, all pages: PartNumber, ETag, Size."""
    client = s3_client(settings)
    parts: list[dict[str, Any]] = []
    marker = 0
    while True:
        page = client.list_parts(
            Bucket=bucket, Key=key, UploadId=upload_id, PartNumberMarker=marker
        )
        parts += [
            {"PartNumber": p["PartNumber"], "ETag": p["ETag"], "Size": p["Size"]}
            for p in page.get("Parts", [])
        ]
        if not page.get("IsTruncated"):
            return parts
        marker = int(page["NextPartNumberMarker"])


def smart_open_params(settings: Settings | None = None) -> dict[str, Any]:
    """transport_params for smart_open.open so it uses our configured client."""
    return {"client": s3_client(settings)}


# A seekable reader's GETs ask for at most this much each: `bytes=N-` (what smart_open sends
# by default, at open and at every seek) has the store send on to the object's end until the
# reader hangs up, and the local S3 reads all of it first (a 1 GB upload staged from a gzip,
# or a workbook's every seek). 16 MiB: a GET of it takes ~0.15 s on S3, most of it transfer.
READ_RANGE_BYTES = 16 * 1024 * 1024


@contextlib.contextmanager
def open_object(bucket: str, key: str, settings: Settings | None = None) -> Iterator[IO[bytes]]:
    """An object as a seekable binary file (ranged GETs of at most ``READ_RANGE_BYTES``), never
    decompressed by its name; the object being imported as planned (:func:`as_planned`)."""
    from smart_open import open as smart_open

    try:
        with smart_open(
            f"s3://{bucket}/{key}",
            "rb",
            compression="disable",
            transport_params={
                **smart_open_params(settings),
                "buffer_size": 1024 * 1024,
                "range_chunk_size": READ_RANGE_BYTES,
                "client_kwargs": {"S3.Client.get_object": if_match(bucket, key)},
            },
        ) as f:
            yield f
    except Exception as exc:  # the reader's error, however its caller wrapped it
        if precondition_failed(exc):
            raise changed(bucket, key) from exc
        raise


def work_client(settings: Settings | None = None) -> S3Client:
    """Where the state machine's work files (range lists for ItemReader) go."""
    settings = settings or get_settings()
    if settings.local_work_endpoint:
        return _client(settings.local_work_endpoint, settings.storage.region, "local", "local")
    return s3_client(settings)
