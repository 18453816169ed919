"""Documents: opaque files up to 1 TB, stored and downloaded, never imported.

They go up through the same presigned multipart machinery as imports, but under the
documents prefix: the object-created rule starts imports only for keys under the uploads
prefix (``names.object_created_pattern``), so completing a document starts nothing.
Downloads are presigned GET URLs, which S3 serves with ``Range`` (so a client resumes); the
API also answers small ranges itself (206), because API Gateway limits a response's size.
"""

from __future__ import annotations

import math
import re
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from botocore.exceptions import BotoCoreError, ClientError
from pydantic import BaseModel, Field, StrictInt

from . import storage
from .db import Conn
from .errors import (
    Conflict,
    InvalidRequest,
    NotFound,
    PayloadTooLarge,
    RangeNotSatisfiable,
    StorageUnavailable,
)
from .settings import Settings, get_settings
from .upload import (
    MAX_PARTS,
    MIN_PART_BYTES,
    CompletedPart,
    PartUrl,
    check_parts,
    display_filename,
    part_size,
    safe_filename,
)

Status = Literal["uploading", "stored", "aborted"]


class CreateDocument(BaseModel):
    name: str = Field(min_length=1, max_length=1024, description="File name, for display only.")
    size: StrictInt = Field(
        ge=0, description="Bytes; checked against the limit before any is stored."
    )
    # sent to S3 and back as a header: printable ASCII only (a CR or LF would end the header)
    content_type: str = Field(
        default="application/octet-stream", max_length=255, pattern=r"^[!-~][ -~]*$"
    )
    category: str = Field(default="", max_length=255)
    description: str = Field(default="", max_length=10_000)


class DocumentCreated(BaseModel):
    document_id: str
    key: str
    part_bytes: int
    part_count: int


class Document(BaseModel):
    """A document as users see it (never its bucket or an upload id)."""

    document_id: uuid.UUID
    name: str
    category: str
    description: str
    size_bytes: int
    content_type: str
    etag: str | None
    sha256: str | None
    status: Status
    created_at: datetime
    completed_at: datetime | None


_SELECT = """
SELECT id AS document_id, name, category, description, size_bytes, content_type, etag, sha256,
       status, created_at, completed_at
FROM dsa_core.documents
"""


def create(
    conn: Conn, owner: str, request: CreateDocument, settings: Settings | None = None
) -> DocumentCreated:
    """Open a multipart upload of a document; over the size limit, nothing is opened (413)."""
    settings = settings or get_settings()
    limit = settings.storage.max_document_bytes
    if request.size > limit:
        raise PayloadTooLarge(f"The document is {request.size:,} bytes; the limit is {limit:,}.")
    name = display_filename(request.name)
    document_id = uuid.uuid4()
    key = f"{settings.storage.documents_prefix}{owner}/{document_id}/{safe_filename(name)}"
    bucket = settings.storage.bucket
    psize = part_size(request.size, settings)
    try:
        s3_upload_id = storage.s3_client(settings).create_multipart_upload(
            Bucket=bucket, Key=key, ContentType=request.content_type
        )["UploadId"]
    except (ClientError, BotoCoreError) as exc:
        raise StorageUnavailable(f"Object storage refused the upload: {exc}") from exc
    conn.execute(
        """
        INSERT INTO dsa_core.documents (id, owner, name, category, description, bucket,
            object_key, s3_upload_id, size_bytes, part_bytes, content_type)
        VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)
        """,
        (
            document_id,
            owner,
            name,
            display_filename(request.category),
            request.description.replace("\x00", ""),
            bucket,
            key,
            s3_upload_id,
            request.size,
            psize,
            display_filename(request.content_type),
        ),
    )
    return DocumentCreated(
        document_id=str(document_id),
        key=key,
        part_bytes=psize,
        part_count=max(1, math.ceil(request.size / psize)),
    )


def _row(conn: Conn, owner: str, document_id: str) -> dict[str, Any]:
    try:
        key = uuid.UUID(document_id)
    except ValueError as exc:
        raise NotFound(f"No document {document_id!r}.") from exc
    row = conn.execute(
        "SELECT * FROM dsa_core.documents WHERE id = %s AND owner = %s", (key, owner)
    ).fetchone()
    if row is None:
        raise NotFound(f"No document {document_id!r}.")
    return row


def _open(conn: Conn, owner: str, document_id: str) -> dict[str, Any]:
    row = _row(conn, owner, document_id)
    if row["status"] != "uploading":
        raise Conflict(f"Document {document_id} is {row['status']}; it takes no more parts.")
    return row


def sign_parts(
    conn: Conn,
    owner: str,
    document_id: str,
    part_numbers: list[int],
    settings: Settings | None = None,
) -> list[PartUrl]:
    """Presigned PUT URLs for parts of an open document upload."""
    settings = settings or get_settings()
    row = _open(conn, owner, document_id)
    limit = min(MAX_PARTS, max(1, math.ceil(row["size_bytes"] / MIN_PART_BYTES)))
    urls = []
    for n in part_numbers:
        if not 1 <= n <= limit:
            raise InvalidRequest(f"Part {n} is out of range: this document has parts 1 to {limit}.")
        params = {
            "Bucket": row["bucket"],
            "Key": row["object_key"],
            "UploadId": row["s3_upload_id"],
            "PartNumber": n,
        }
        urls.append(PartUrl(part_number=n, url=storage.presign("upload_part", params, settings)))
    return urls


def list_parts(
    conn: Conn, owner: str, document_id: str, settings: Settings | None = None
) -> list[dict[str, Any]]:
    """The parts S3 already holds, so an interrupted upload resumes."""
    settings = settings or get_settings()
    row = _open(conn, owner, document_id)
    held = storage.list_parts(row["bucket"], row["object_key"], row["s3_upload_id"], settings)
    return [{"part_number": p["PartNumber"], "etag": p["ETag"], "size": p["Size"]} for p in held]


def complete(
    conn: Conn,
    owner: str,
    document_id: str,
    parts: list[CompletedPart],
    settings: Settings | None = None,
) -> Document:
    """Complete the multipart upload and record the object's size, ETag and checksum."""
    settings = settings or get_settings()
    row = _row(conn, owner, document_id)
    if row["status"] == "stored":
        return get(conn, owner, document_id)
    if row["status"] != "uploading":
        raise Conflict(f"Document {document_id} was {row['status']}.")
    check_parts(parts)
    if not parts and row["size_bytes"]:
        raise InvalidRequest(
            f"No parts listed, but document {document_id} is {row['size_bytes']:,} bytes: list "
            "every part uploaded (part_number and etag) to complete it."
        )
    client = storage.s3_client(settings)
    bucket, key = row["bucket"], row["object_key"]
    try:
        if not parts:
            empty = client.upload_part(
                Bucket=bucket, Key=key, UploadId=row["s3_upload_id"], PartNumber=1, Body=b""
            )
            parts = [CompletedPart(part_number=1, etag=empty["ETag"])]
        client.complete_multipart_upload(
            Bucket=bucket,
            Key=key,
            UploadId=row["s3_upload_id"],
            MultipartUpload={
                "Parts": [
                    {"PartNumber": p.part_number, "ETag": p.etag}
                    for p in sorted(parts, key=lambda p: p.part_number)
                ]
            },
        )
        head = client.head_object(Bucket=bucket, Key=key, ChecksumMode="ENABLED")
    except ClientError as exc:
        code = exc.response.get("Error", {}).get("Code", "")
        if code in ("InvalidPart", "InvalidPartOrder", "EntityTooSmall", "NoSuchUpload"):
            raise InvalidRequest(f"S3 could not complete the upload ({code}): {exc}") from exc
        raise StorageUnavailable(f"Object storage refused to complete the upload: {exc}") from exc
    size = int(head["ContentLength"])
    if size != row["size_bytes"]:
        # the limit was checked against the declared size: never keep a different one
        client.delete_object(Bucket=bucket, Key=key)
        conn.execute("UPDATE dsa_core.documents SET status = 'aborted' WHERE id = %s", (row["id"],))
        raise InvalidRequest(
            f"The parts hold {size:,} bytes but the document was declared as "
            f"{row['size_bytes']:,}; it was discarded. Upload it again with its real size."
        )
    conn.execute(
        "UPDATE dsa_core.documents SET status = 'stored', completed_at = now(), etag = %s, "
        "sha256 = %s WHERE id = %s",
        (str(head["ETag"]).strip('"'), head.get("ChecksumSHA256"), row["id"]),
    )
    return get(conn, owner, document_id)


def get(conn: Conn, owner: str, document_id: str) -> Document:
    row = _row(conn, owner, document_id)
    found = conn.execute(_SELECT + " WHERE id = %s", (row["id"],)).fetchone()
    assert found is not None
    return Document.model_validate(found)


def list_documents(
    conn: Conn,
    owner: str,
    *,
    category: str | None = None,
    status: str | None = None,
    limit: int = 100,
) -> list[Document]:
    """The owner's documents, newest first."""
    rows = conn.execute(
        _SELECT + " WHERE owner = %(owner)s"
        " AND (%(category)s::text IS NULL OR category = %(category)s)"
        " AND (%(status)s::text IS NULL OR status = %(status)s)"
        " ORDER BY created_at DESC LIMIT %(limit)s",
        {"owner": owner, "category": category, "status": status, "limit": limit},
    ).fetchall()
    return [Document.model_validate(r) for r in rows]


def _stored(conn: Conn, owner: str, document_id: str) -> dict[str, Any]:
    row = _row(conn, owner, document_id)
    if row["status"] != "stored":
        raise Conflict(f"Document {document_id} is {row['status']}; there is nothing to download.")
    return row


def _disposition(name: str) -> str:
    ascii_name = re.sub(r'[^\x20-\x7e]|["\\]', "_", name)
    return f'attachment; filename="{ascii_name}"'


def download_url(
    conn: Conn, owner: str, document_id: str, settings: Settings | None = None
) -> dict[str, Any]:
    """A presigned GET URL; S3 honours ``Range`` on it, so downloads resume."""
    settings = settings or get_settings()
    row = _stored(conn, owner, document_id)
    url = storage.presign(
        "get_object",
        {
            "Bucket": row["bucket"],
            "Key": row["object_key"],
            "ResponseContentDisposition": _disposition(row["name"]),
        },
        settings,
    )
    return {
        "url": url,
        "expires_in": settings.storage.presign_expiry_seconds,
        "size_bytes": row["size_bytes"],
        "etag": row["etag"],
        "name": row["name"],
    }


@dataclass(frozen=True)
class Content:
    """What the API answers a content request with."""

    status: int  # 200, 206, or 302 (too big for the API: go to the presigned URL)
    body: bytes
    headers: dict[str, str]


_RANGE = re.compile(r"^\s*bytes\s*=\s*(\d*)\s*-\s*(\d*)\s*$", re.IGNORECASE)


def parse_range(header: str, size: int) -> tuple[int, int]:
    """One byte range of ``Range: bytes=...`` as [start, end) within ``size`` bytes."""
    m = _RANGE.match(header)
    if m is None or (not m.group(1) and not m.group(2)):
        raise RangeNotSatisfiable(
            f"Range {header!r} is not one byte range: use bytes=START-END, bytes=START- or "
            "bytes=-SUFFIX (one range per request)."
        )
    first, last = m.group(1), m.group(2)
    if not first:  # a suffix: the last N bytes
        n = int(last)
        if n == 0 or size == 0:
            raise RangeNotSatisfiable(f"Range {header!r} selects no bytes of a {size:,}-byte file.")
        return max(0, size - n), size
    start = int(first)
    end = size if not last else min(size, int(last) + 1)
    if start >= size or (last and int(last) < start):
        raise RangeNotSatisfiable(
            f"Range {header!r} is outside the document's {size:,} bytes (0 to {max(size - 1, 0)})."
        )
    return start, end


def content(
    conn: Conn,
    owner: str,
    document_id: str,
    range_header: str | None,
    settings: Settings | None = None,
) -> Content:
    """The document's bytes (or one range of them) from the API itself, when small enough.

    Bigger answers are a redirect to the presigned URL: API Gateway and Lambda cap a response
    at a few MB, S3 does not.
    """
    settings = settings or get_settings()
    row = _stored(conn, owner, document_id)
    size = int(row["size_bytes"])
    etag = f'"{row["etag"]}"'
    start, end = (0, size) if not range_header else parse_range(range_header, size)
    if end - start > settings.storage.max_api_download_bytes:
        url = download_url(conn, owner, document_id, settings)["url"]
        return Content(302, b"", {"Location": url, "ETag": etag})
    body = b""
    if end > start:
        try:
            body = (
                storage.s3_client(settings)
                .get_object(
                    Bucket=row["bucket"], Key=row["object_key"], Range=f"bytes={start}-{end - 1}"
                )["Body"]
                .read()
            )
        except (ClientError, BotoCoreError) as exc:
            raise StorageUnavailable(f"Cannot read the document: {exc}") from exc
    headers = {
        "Content-Type": row["content_type"],
        "Accept-Ranges": "bytes",
        "ETag": etag,
        "Content-Disposition": _disposition(row["name"]),
    }
    if range_header:
        headers["Content-Range"] = f"bytes {start}-{end - 1}/{size}"
        return Content(206, body, headers)
    return Content(200, body, headers)


def delete(conn: Conn, owner: str, document_id: str, settings: Settings | None = None) -> None:
    """Delete the document: its object (or its open multipart upload) and its record."""
    settings = settings or get_settings()
    row = _row(conn, owner, document_id)
    client = storage.s3_client(settings)
    try:
        if row["status"] == "uploading" and row["s3_upload_id"]:
            try:
                client.abort_multipart_upload(
                    Bucket=row["bucket"], Key=row["object_key"], UploadId=row["s3_upload_id"]
                )
            except ClientError as exc:
                if exc.response.get("Error", {}).get("Code") != "NoSuchUpload":
                    raise
        client.delete_object(Bucket=row["bucket"], Key=row["object_key"])
    except (ClientError, BotoCoreError) as exc:
        raise StorageUnavailable(f"Object storage refused to delete the document: {exc}") from exc
    conn.execute("DELETE FROM dsa_core.documents WHERE id = %s", (row["id"],))
