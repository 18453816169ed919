"""One typed settings model, read once. Nothing else in sluiceway reads ``os.environ``.

On AWS the values come from the Lambda environment that CDK sets; locally the embedded
stack builds a :class:`Settings` itself and hands it to the worker processes.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic import AliasChoices, BaseModel, Field
from pydantic_settings import BaseSettings, SettingsConfigDict

MiB = 1024 * 1024


class DatabaseSettings(BaseModel):
    """Where PostgreSQL is. ``url`` empty means: use the embedded server."""

    url: str | None = None
    connect_timeout_seconds: int = 10


class StorageSettings(BaseModel):
    """Where objects live. ``endpoint_url`` empty means: real S3 (or the embedded one locally)."""

    bucket: str = "sluiceway-data"
    region: str = "us-east-1"
    endpoint_url: str | None = None
    # Only for S3-compatible stores that need explicit keys (the embedded one); on AWS the
    # Lambda role's credentials are used.
    access_key_id: str | None = None
    secret_access_key: str | None = None
    uploads_prefix: str = "uploads/"
    work_prefix: str = "work/"
    exports_prefix: str = "exports/"
    # Documents are stored, never imported: their prefix must not start with uploads_prefix,
    # which the object-created rule (names.object_created_pattern) turns into imports.
    documents_prefix: str = "documents/"
    # chunks of record sessions until their commit assembles them under uploads_prefix
    sessions_prefix: str = "sessions/"
    # rejected-rows reports, beside their upload's path (not under uploads_prefix: an object
    # there starts an import)
    reports_prefix: str = "reports/"
    presign_expiry_seconds: int = Field(default=3600, ge=60, le=7 * 24 * 3600)
    # S3's own limits: parts of at least 5 MiB (but the last), at most 10,000 of them.
    min_part_bytes: int = 8 * MiB
    max_object_bytes: int = 5 * 1024 * 1024 * MiB
    max_document_bytes: int = 1024 * 1024 * MiB
    # Multipart uploads sluiceway opened itself (export parts, an import's staged copy, a
    # record session's assembly) and left open, because the job that opened them ended without
    # completing them (a killed stack, a lost function), are aborted once this old: by the
    # local stack's sweep every ``sweep_seconds``, or by `sluiceway cleanup`. On AWS the
    # bucket's AbortIncompleteUploads lifecycle rule aborts every upload after 2 days.
    stale_upload_hours: float = Field(default=24.0, ge=0)
    sweep_seconds: float = Field(default=600.0, gt=0)
    # What the API itself answers with (a Lambda response is at most 6 MB, base64 included);
    # anything bigger is a redirect to a presigned GET URL, which S3 serves with ranges.
    max_api_download_bytes: int = Field(default=4 * MiB, ge=1)


class ImportSettings(BaseModel):
    """How imports are cut and loaded."""

    # One chunk is what one Lambda streams, parses and COPYs in well under its 15 minutes.
    chunk_bytes: int = Field(default=64 * MiB, ge=1)
    # A record longer than this is an error, not a reason to run out of memory.
    max_record_bytes: int = Field(default=16 * MiB, ge=1024)
    map_concurrency: int = Field(default=8, ge=1, le=1000)
    # A compressed upload is inflated into a staged object once; this caps what it may
    # inflate to (a gzip bomb is an error). One Lambda does the pass, so its 15 minutes
    # bound it in practice too.
    max_unpacked_bytes: int = Field(default=64 * 1024 * MiB, ge=1)
    # The columns of JSON records are the keys of the records in this many first bytes.
    json_sample_bytes: int = Field(default=1 * MiB, ge=1024)
    # A CSV range's blocks found stored (their bytes seen before) are not COPYed or hashed
    # again (sluiceway.blocks). Off by default: on two shared cores a re-import with it is
    # 25-35% faster, but a first import 14-32% slower (bench/README.md, 8 Dec 2026, tenth
    # session); an import can ask for it (ImportOptions.reuse_blocks).
    reuse_blocks: bool = False


class ExportSettings(BaseModel):
    """How exports are cut into parts and written."""

    # Rows per part when a request names none; small exports are still cut so every worker
    # writes, but never into parts of fewer than ``min_auto_part_rows``.
    default_part_rows: int = Field(default=1_000_000, ge=1)
    min_auto_part_rows: int = Field(default=250_000, ge=1)
    max_part_rows: int = Field(default=100_000_000, ge=1)
    # A Distributed Map runs at most 10,000 children at once; more parts is a request to refuse.
    max_parts: int = Field(default=10_000, ge=1)
    # Each part is uploaded in pieces of this size as rows arrive (S3: >= 5 MiB but the last).
    piece_bytes: int = Field(default=8 * MiB, ge=5 * MiB)
    # Rows per Parquet row group, and per batch read from the cursor for JSON and Parquet.
    batch_rows: int = Field(default=50_000, ge=1)
    # EventBridge Scheduler (AWS only): the group schedules go in, and the role they run as.
    schedule_group: str = "sluiceway-exports"
    scheduler_role_arn: str | None = None
    # How often the local stack's scheduler looks for due schedules.
    local_scheduler_seconds: float = Field(default=1.0, gt=0)


class SessionSettings(BaseModel):
    """Chunked record sessions: records sent in numbered batches, imported as one file."""

    max_chunk_records: int = Field(default=10_000, ge=1)
    max_chunk_bytes: int = Field(default=8 * MiB, ge=1024)
    # the assembled CSV is written to S3 in parts of this size: memory stays at one part
    assembly_part_bytes: int = Field(default=8 * MiB, ge=5 * MiB)


class ThrottleSettings(BaseModel):
    """The local API's throttle, per caller (its token, else its address): a token bucket
    refilled at ``rate_per_second`` holding at most ``burst``. On AWS, API Gateway's stage
    throttle (infra/sluiceway_infra/api.py, the same numbers) answers 429 instead."""

    rate_per_second: float = Field(default=50.0, gt=0)
    burst: int = Field(default=100, ge=1)


class Settings(BaseSettings):
    """Everything sluiceway can be configured with, from the environment."""

    model_config = SettingsConfigDict(
        env_prefix="SLUICEWAY_", env_nested_delimiter="__", extra="ignore"
    )

    home: Path = Field(default=Path(".sluiceway"), description="Local data directory.")
    database_url: str | None = Field(
        default=None, validation_alias=AliasChoices("DATABASE_URL", "SLUICEWAY_DATABASE_URL")
    )
    # On AWS: the Secrets Manager secret RDS keeps the credentials in, and the RDS Proxy
    # endpoint to connect through instead of the host the secret names.
    database_secret_arn: str | None = None
    database_host: str | None = None
    s3_endpoint_url: str | None = Field(
        default=None,
        validation_alias=AliasChoices(
            "AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL", "SLUICEWAY_S3_ENDPOINT_URL"
        ),
    )
    api_url: str | None = Field(
        default=None, validation_alias=AliasChoices("SLUICEWAY_API", "SLUICEWAY_API_URL")
    )
    storage: StorageSettings = StorageSettings()
    imports: ImportSettings = ImportSettings()
    sessions: SessionSettings = SessionSettings()
    throttle: ThrottleSettings = ThrottleSettings()
    exports: ExportSettings = ExportSettings()
    import_state_machine_arn: str | None = None
    export_state_machine_arn: str | None = None
    # Where Step Functions answers, when not AWS's own endpoint (the local stack's moto).
    stepfunctions_endpoint_url: str | None = None
    # Set by the local stack only when objects live in an S3 it does not run (and so cannot
    # hear from): completing an upload then publishes S3's object-created event to this
    # EventBridge endpoint itself. Never set on AWS, where S3 sends the event.
    local_events_endpoint: str | None = None
    # Set by the local stack in the same case: the state machine's ItemReader reads range lists
    # from the S3 the interpreter talks to, so they are written there.
    local_work_endpoint: str | None = None
    # Set by the local stack only: every job it creates carries this id, and the stack holds a
    # PostgreSQL advisory lock on it while it runs, so the next stack on the same database can
    # tell the jobs of a stack that died (the lock is gone) from those of one still running.
    local_runtime_id: int | None = Field(default=None, ge=1, le=2**31 - 1)
    # The local stack's API runs in this many processes of its own, one request at a time in
    # each (as Lambda runs one invocation per container); 0: in the stack's own process.
    local_api_workers: int = Field(default=2, ge=0, le=64)
    log_level: str = "INFO"
    # Tests only: honour the `faults` an import asks for (see sluiceway.faults).
    allow_fault_injection: bool = False

    @property
    def database(self) -> DatabaseSettings:
        return DatabaseSettings(url=self.database_url)

    def storage_endpoint(self) -> str | None:
        return self.s3_endpoint_url or self.storage.endpoint_url


_override: Settings | None = None


@lru_cache(maxsize=1)
def _from_environment() -> Settings:
    return Settings()


def get_settings() -> Settings:
    """The settings of this process: the ones installed by :func:`configure`, else the environment's."""
    return _override if _override is not None else _from_environment()


def configure(settings: Settings | None) -> None:
    """Install settings for this process (the local stack does this in every worker)."""
    global _override  # noqa: PLW0603 - one process-wide configuration, set once at start
    _override = settings
