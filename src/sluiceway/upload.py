"""Stage 1, upload: presigned multipart uploads straight to object storage.

The API never sees the bytes. It opens an S3 multipart upload, signs part URLs, and
completes the upload; completing it makes S3 emit the object-created event that starts the
import state machine.
"""

from __future__ import annotations

import json
import math
import re
import uuid
from typing import Any, Literal

import boto3
from botocore.exceptions import BotoCoreError, ClientError
from psycopg.types.json import Jsonb
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictInt,
    field_validator,
    model_validator,
)

from . import datasets, formats, jobs, rules, storage
from .db import Conn
from .errors import ABORTED, Conflict, InvalidRequest, NotFound, PayloadTooLarge, StorageUnavailable
from .rules import Rules
from .settings import MiB, Settings, get_settings

MAX_PARTS = 10_000
MIN_PART_BYTES = 5 * MiB
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


FORMATS = formats.FORMATS
ImportMode = Literal["replace", "append", "upsert", "delete"]


class ImportOptions(BaseModel):
    """Options an import carries from upload to commit (the pipeline reads them from the job's
    ``run_parameters.options``). An unknown option is refused: a misspelt ``mode`` would
    otherwise import as ``replace``."""

    model_config = ConfigDict(extra="forbid")

    chunk_bytes: StrictInt | None = Field(
        default=None, ge=1, description="Byte range per Map task."
    )
    reuse_blocks: bool | None = Field(
        default=None,
        description="CSV: cut each range into blocks of its bytes, one leaf each, so that a "
        "later import of bytes seen before neither COPYs nor hashes them again (unkeyed "
        "imports without rules). Default: the server's setting (off).",
    )
    message: str | None = Field(default=None, max_length=10_000)
    format: str | None = Field(
        default=None,
        description=f"File format: one of {', '.join(FORMATS)}; detected from the name and the "
        "first bytes when not given. A .gz or .zst file is decompressed (detected too).",
    )
    delimiter: str | None = Field(
        default=None,
        description="CSV field delimiter (one character; 'tab' works); sniffed among comma, tab, "
        "semicolon and pipe when not given.",
    )
    header: bool | None = Field(
        default=None,
        description="false: the CSV has no header row (columns are named column_1, column_2, ...).",
    )
    encoding: str | None = Field(
        default=None,
        description=f"Text encoding: {', '.join(formats.ENCODINGS)}; default UTF-8 (a UTF-8 or "
        "UTF-16 byte order mark is honoured).",
    )
    mode: ImportMode = Field(
        default="replace",
        description="replace: the file is the new content; append: its rows are added; "
        "upsert: rows replace those with the same key; delete: rows with these keys are removed.",
    )
    key: list[str] | None = Field(
        default=None,
        min_length=1,
        max_length=100,
        description="Key columns identifying a row, for upsert and delete.",
    )

    branch: str | None = Field(
        default=None,
        pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$",
        description="The ref the import commits to (default main; created from main if new).",
    )
    rules: Rules | None = Field(
        default=None,
        description="Validation rules of this import, over the dataset's own (field by field).",
    )
    faults: dict[str, StrictInt] | None = Field(
        default=None, description="Tests only: steps to fail on purpose (ignored unless enabled)."
    )

    @field_validator("format")
    @classmethod
    def _known_format(cls, value: str | None) -> str | None:
        if value is not None and value.lower() not in FORMATS:
            raise ValueError(
                f"format {value!r} is not supported; the formats are: {', '.join(FORMATS)}"
            )
        return None if value is None else value.lower()

    @field_validator("delimiter")
    @classmethod
    def _one_delimiter(cls, value: str | None) -> str | None:
        return None if value is None else formats.check_delimiter(value)

    @field_validator("encoding")
    @classmethod
    def _known_encoding(cls, value: str | None) -> str | None:
        return None if value is None else formats.normalize_encoding(value)

    @model_validator(mode="after")
    def _key_for_mode(self) -> ImportOptions:
        if self.mode in ("upsert", "delete") and not self.key:
            raise ValueError(f"mode {self.mode} needs key: the column(s) that identify a row")
        if self.mode in ("replace", "append") and self.key:
            raise ValueError(f"key applies to upsert and delete, not to mode {self.mode}")
        if self.key and any(not k or len(k) > 1024 for k in self.key):
            raise ValueError("key column names are 1 to 1024 characters")
        return self


class CreateUpload(BaseModel):
    dataset: str
    filename: str = Field(min_length=1, max_length=1024)
    size: StrictInt | None = Field(default=None, ge=0, description="Bytes, if known up front.")
    options: ImportOptions = ImportOptions()


class UploadCreated(BaseModel):
    upload_id: str
    job_id: str
    bucket: str
    key: str
    s3_upload_id: str | None
    part_bytes: int
    part_count: int | None


class PartUrl(BaseModel):
    part_number: int
    url: str


# An ETag is printable ASCII (RFC 9110's etagc, as S3 sends them): anything else S3 cannot
# even parse, and its answer would read as an outage.
ETAG_PATTERN = r"^[!-~]{1,1024}$"


class CompletedPart(BaseModel):
    part_number: StrictInt = Field(ge=1, le=MAX_PARTS)
    etag: str = Field(pattern=ETAG_PATTERN)


def part_size(size: int | None, settings: Settings) -> int:
    """Smallest part size, a whole number of MiB >= the configured minimum, that fits in 10,000 parts."""
    needed = max(
        settings.storage.min_part_bytes, MIN_PART_BYTES, math.ceil((size or 0) / MAX_PARTS)
    )
    return math.ceil(needed / MiB) * MiB


_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def display_filename(filename: str) -> str:
    """The name as given, minus control characters (PostgreSQL text cannot hold NUL at all)."""
    return _CONTROL.sub("_", filename)


def safe_filename(filename: str) -> str:
    """The last path component, with anything but letters, digits, '.', '_', '-' replaced."""
    base = re.split(r"[\\/]", filename)[-1]
    cleaned = _UNSAFE.sub("_", base).strip("._") or "upload"
    return cleaned[:200]


def create_upload(
    conn: Conn,
    owner: str,
    request: CreateUpload,
    settings: Settings | None = None,
    *,
    multipart: bool = True,
) -> UploadCreated:
    """Open an upload of a file that will be imported into ``request.dataset``.

    ``multipart``: open an S3 multipart upload (else the caller will use a presigned POST).
    """
    settings = settings or get_settings()
    datasets.check_name(request.dataset)
    request = request.model_copy(update={"filename": display_filename(request.filename)})
    if request.size is not None and request.size > settings.storage.max_object_bytes:
        raise PayloadTooLarge(
            f"The file is {request.size:,} bytes; the limit is {settings.storage.max_object_bytes:,}."
        )
    effective = rules.effective(
        conn, owner, request.dataset, request.options.model_dump(exclude_none=True)
    )
    rules.check_upload(
        effective, size=request.size, fmt=request.options.format, filename=request.filename
    )
    upload_id = uuid.uuid4()
    key = f"{settings.storage.uploads_prefix}{owner}/{upload_id}/{safe_filename(request.filename)}"
    bucket = settings.storage.bucket
    psize = part_size(request.size, settings)
    with conn.transaction():
        job_id = jobs.create(
            conn,
            "import",
            owner,
            {
                "dataset": request.dataset,
                "filename": request.filename,
                "bucket": bucket,
                "key": key,
                "size_bytes": request.size,
                "options": request.options.model_dump(exclude_none=True),
            },
        )
        s3_upload_id: str | None = None
        if multipart:
            try:
                s3_upload_id = storage.s3_client(settings).create_multipart_upload(
                    Bucket=bucket, Key=key, ContentType="application/octet-stream"
                )["UploadId"]
            except (ClientError, BotoCoreError) as exc:
                raise StorageUnavailable(f"Object storage refused the upload: {exc}") from exc
        conn.execute(
            """
            INSERT INTO dsa_jobs.uploads (upload_id, owner, bucket, object_key, s3_upload_id,
                filename, size_bytes, part_bytes, dataset_name, options, job_id)
            VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)
            """,
            (
                upload_id,
                owner,
                bucket,
                key,
                s3_upload_id,
                request.filename,
                request.size,
                psize,
                request.dataset,
                Jsonb(request.options.model_dump(exclude_none=True)),
                job_id,
            ),
        )
    return UploadCreated(
        upload_id=str(upload_id),
        job_id=str(job_id),
        bucket=bucket,
        key=key,
        s3_upload_id=s3_upload_id,
        part_bytes=psize,
        part_count=None if request.size is None else max(1, math.ceil(request.size / psize)),
    )


def find_multipart(conn: Conn, owner: str, s3_upload_id: str, key: str) -> str:
    """Our upload id for S3's (upload id, key) pair, as Uppy's protocol names uploads."""
    row = conn.execute(
        "SELECT upload_id FROM dsa_jobs.uploads "
        "WHERE owner = %s AND s3_upload_id = %s AND object_key = %s",
        (owner, s3_upload_id, key),
    ).fetchone()
    if row is None:
        raise NotFound(f"No upload {s3_upload_id!r} for key {key!r}.")
    return str(row["upload_id"])


def list_parts(
    conn: Conn, owner: str, upload_id: str, settings: Settings | None = None
) -> list[dict[str, Any]]:
    """The parts S3 already holds, so a client can resume after a reload."""
    settings = settings or get_settings()
    upload = upload_row(conn, owner, upload_id)
    if upload["status"] != "uploading":
        raise Conflict(f"Upload {upload_id} is {upload['status']}.")
    return storage.list_parts(
        upload["bucket"], upload["object_key"], upload["s3_upload_id"], settings
    )


def presigned_post(
    conn: Conn,
    owner: str,
    request: CreateUpload,
    content_type: str,
    settings: Settings | None = None,
) -> dict[str, Any]:
    """A one-request upload for small files: a presigned POST that S3 checks the size of."""
    settings = settings or get_settings()
    limit = min(settings.storage.max_object_bytes, 5 * 1024 * MiB)  # S3's limit for one POST
    if request.size is not None and request.size > limit:
        raise PayloadTooLarge(
            f"The file is {request.size:,} bytes; one presigned POST takes at most {limit:,}. "
            "Upload it in parts (a multipart upload)."
        )
    created = create_upload(conn, owner, request, settings, multipart=False)
    # S3 then refuses a file of another size than the declared one (create_upload checked it
    # against the limits), or, of unknown size, one over the rules' max_file_bytes
    least = most = request.size
    if request.size is None:
        least, most = 0, limit
        options = request.options.model_dump(exclude_none=True)
        largest = rules.effective(conn, owner, request.dataset, options).max_file_bytes
        if largest is not None:
            most = min(most, largest)
    post = storage.s3_client(settings).generate_presigned_post(
        Bucket=created.bucket,
        Key=created.key,
        Fields={"Content-Type": content_type},
        Conditions=[["content-length-range", least, most], {"Content-Type": content_type}],
        ExpiresIn=settings.storage.presign_expiry_seconds,
    )
    return {
        "method": "POST",
        "url": post["url"],
        "fields": post["fields"],
        "key": created.key,
        "job_id": created.job_id,
        "upload_id": created.upload_id,
    }


def upload_row(conn: Conn, owner: str, upload_id: str) -> dict[str, Any]:
    """The caller's upload row; another owner's (or none) is NotFound."""
    try:
        key = uuid.UUID(upload_id)
    except ValueError as exc:
        raise NotFound(f"No upload {upload_id!r}.") from exc
    row = conn.execute(
        "SELECT * FROM dsa_jobs.uploads WHERE upload_id = %s AND owner = %s", (key, owner)
    ).fetchone()
    if row is None:
        raise NotFound(f"No upload {upload_id!r}.")
    return row


def _multipart(upload: dict[str, Any]) -> str:
    """The S3 upload id of a multipart upload; an upload opened as one presigned POST has none."""
    if upload["s3_upload_id"] is None:
        raise Conflict(
            f"Upload {upload['upload_id']} is one presigned POST, not a multipart upload: it has "
            "no parts to sign, complete or abort (POST the file to its URL)."
        )
    return str(upload["s3_upload_id"])


def check_parts(parts: list[CompletedPart]) -> None:
    """Each part once (S3 itself refuses a repeat, but moto's S3 stores the part twice)."""
    seen: set[int] = set()
    for p in parts:
        if p.part_number in seen:
            raise InvalidRequest(f"Part {p.part_number} is listed twice; list each part once.")
        seen.add(p.part_number)


def sign_parts(
    conn: Conn,
    owner: str,
    upload_id: str,
    part_numbers: list[int],
    settings: Settings | None = None,
) -> list[PartUrl]:
    """Presigned PUT URLs for the given parts of an open upload."""
    settings = settings or get_settings()
    upload = upload_row(conn, owner, upload_id)
    if upload["status"] != "uploading":
        raise Conflict(f"Upload {upload_id} is {upload['status']}; it takes no more parts.")
    s3_upload_id = _multipart(upload)
    size = upload["size_bytes"]
    # Clients choose their part size (Uppy's default is 5 MiB); S3 needs >= 5 MiB but the last.
    limit = MAX_PARTS if size is None else min(MAX_PARTS, max(1, math.ceil(size / MIN_PART_BYTES)))
    urls = []
    for n in part_numbers:
        if not 1 <= n <= limit:
            raise InvalidRequest(f"Part {n} is out of range: this upload has parts 1 to {limit}.")
        urls.append(
            PartUrl(
                part_number=n,
                url=storage.presign(
                    "upload_part",
                    {
                        "Bucket": upload["bucket"],
                        "Key": upload["object_key"],
                        "UploadId": s3_upload_id,
                        "PartNumber": n,
                    },
                    settings,
                ),
            )
        )
    return urls


def complete_upload(
    conn: Conn,
    owner: str,
    upload_id: str,
    parts: list[CompletedPart],
    settings: Settings | None = None,
) -> dict[str, Any]:
    """Finish the multipart upload; S3's object-created event then starts the import."""
    settings = settings or get_settings()
    upload = upload_row(conn, owner, upload_id)
    if upload["status"] == "completed":
        return {
            "upload_id": upload_id,
            "job_id": str(upload["job_id"]),
            "key": upload["object_key"],
        }
    if upload["status"] != "uploading":
        raise Conflict(f"Upload {upload_id} was {upload['status']}.")
    s3_upload_id = _multipart(upload)
    check_parts(parts)
    client = storage.s3_client(settings)
    try:
        if not parts:
            # S3 needs at least one part; an empty file is a single empty part. Never in place
            # of parts S3 holds: part 1 would become empty, and the import an empty file.
            size = upload["size_bytes"]
            held = (
                []
                if size
                else storage.list_parts(
                    upload["bucket"], upload["object_key"], s3_upload_id, settings
                )
            )
            if size or held:
                raise InvalidRequest(
                    f"No parts listed, but upload {upload_id} "
                    + (f"is {size:,} bytes" if size else f"holds {len(held)} part(s)")
                    + ": list every part uploaded (part_number and etag) to complete it."
                )
            part = client.upload_part(
                Bucket=upload["bucket"],
                Key=upload["object_key"],
                UploadId=s3_upload_id,
                PartNumber=1,
                Body=b"",
            )
            parts = [CompletedPart(part_number=1, etag=part["ETag"])]
        client.complete_multipart_upload(
            Bucket=upload["bucket"],
            Key=upload["object_key"],
            UploadId=s3_upload_id,
            MultipartUpload={
                "Parts": [
                    {"PartNumber": p.part_number, "ETag": p.etag}
                    for p in sorted(parts, key=lambda p: p.part_number)
                ]
            },
        )
    except ClientError as exc:
        code = exc.response.get("Error", {}).get("Code", "")
        if code in ("InvalidPart", "InvalidPartOrder", "EntityTooSmall", "NoSuchUpload"):
            raise InvalidRequest(f"S3 could not complete the upload ({code}): {exc}") from exc
        raise StorageUnavailable(f"Object storage refused to complete the upload: {exc}") from exc
    mark_completed(conn, upload, settings)
    return {"upload_id": upload_id, "job_id": str(upload["job_id"]), "key": upload["object_key"]}


def mark_completed(conn: Conn, upload: dict[str, Any], settings: Settings) -> None:
    """Record that the upload's object is in place (its object-created event starts the import)."""
    conn.execute(
        "UPDATE dsa_jobs.uploads SET status = 'completed', completed_at = now() WHERE upload_id = %s",
        (upload["upload_id"],),
    )
    if settings.local_events_endpoint:
        _publish_object_created(settings, upload["bucket"], upload["object_key"])


def _publish_object_created(settings: Settings, bucket: str, key: str) -> None:
    """What S3 does on completion, for a local stack whose S3 cannot reach its EventBridge."""
    head = storage.s3_client(settings).head_object(Bucket=bucket, Key=key)
    detail = {
        "version": "0",
        "bucket": {"name": bucket},
        "object": {"key": key, "size": head["ContentLength"], "eTag": head["ETag"].strip('"')},
        "reason": "CompleteMultipartUpload",
    }
    events = boto3.client(
        "events",
        endpoint_url=settings.local_events_endpoint,
        region_name=settings.storage.region,
        aws_access_key_id="sluiceway-local",  # the local stack's own EventBridge takes any key
        aws_secret_access_key="sluiceway-local",  # noqa: S106 - not a secret
    )
    events.put_events(
        Entries=[{"Source": "aws.s3", "DetailType": "Object Created", "Detail": json.dumps(detail)}]
    )


def abort_upload(conn: Conn, owner: str, upload_id: str, settings: Settings | None = None) -> None:
    settings = settings or get_settings()
    upload = upload_row(conn, owner, upload_id)
    if upload["status"] == "completed":
        raise Conflict(
            f"Upload {upload_id} was completed: its import (job {upload['job_id']}) goes on and "
            "cannot be aborted."
        )
    if upload["status"] != "uploading":
        return  # aborted already
    s3_upload_id = _multipart(upload)
    storage.s3_client(settings).abort_multipart_upload(
        Bucket=upload["bucket"], Key=upload["object_key"], UploadId=s3_upload_id
    )
    conn.execute(
        "UPDATE dsa_jobs.uploads SET status = 'aborted' WHERE upload_id = %s",
        (upload["upload_id"],),
    )
    jobs.fail(conn, upload["job_id"], "The upload was aborted before it completed.", ABORTED)
