"""Object storage: the S3 client and presigned URLs. S3 or anything that speaks its API."""

from __future__ import annotations

from functools import lru_cache
from typing import TYPE_CHECKING, Any

import boto3
from botocore.config import Config

from .settings import Settings, get_settings

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client


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


def open_object(bucket: str, key: str, settings: Settings | None = None) -> Any:
    """An object as a seekable binary file (ranged GETs), never decompressed by its name."""
    from smart_open import open as smart_open

    return smart_open(
        f"s3://{bucket}/{key}",
        "rb",
        compression="disable",
        transport_params={**smart_open_params(settings), "buffer_size": 1024 * 1024},
    )


def work_client(settings: Settings | None = None) -> S3Client:
    """Where the state machine's work files (range lists for ItemReader) go."""
    settings = settings or get_settings()
    if settings.local_work_endpoint:
        return _client(settings.local_work_endpoint, settings.storage.region, "local", "local")
    return s3_client(settings)
