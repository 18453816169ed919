"""One error hierarchy. Every error a user can cause says what was wrong and what to do."""

from __future__ import annotations

from typing import Any


class SluicewayError(Exception):
    """Base of every error sluiceway raises on purpose."""

    code = "internal_error"
    http_status = 500

    def __init__(self, message: str, **details: Any) -> None:
        super().__init__(message)
        self.message = message
        self.details = details

    def to_dict(self) -> dict[str, Any]:
        body: dict[str, Any] = {"error": self.code, "message": self.message}
        if self.details:
            body["details"] = self.details
        return body


class InvalidRequest(SluicewayError):
    """The request itself is wrong (a missing field, a bad name, a bad option)."""

    code = "invalid_request"
    http_status = 400


class NotFound(SluicewayError):
    """The dataset, commit, job or upload does not exist (or is not yours)."""

    code = "not_found"
    http_status = 404


class Conflict(SluicewayError):
    """The thing changed under you: a ref moved, an upload was already completed."""

    code = "conflict"
    http_status = 409


class MergeConflict(Conflict):
    """Rows changed differently on both sides of a merge or revert: nothing was written."""

    code = "merge_conflict"


class PayloadTooLarge(SluicewayError):
    """A file or a record is larger than the configured limit."""

    code = "too_large"
    http_status = 413


class SizeMismatch(SluicewayError):
    """The uploaded object is not the size its upload was opened with: cut short, or more than
    the declared size the limits were checked against. Nothing of it was imported."""

    code = "size_mismatch"
    http_status = 422


class RangeNotSatisfiable(SluicewayError):
    """A Range header asks for bytes the file does not have, or is not one byte range."""

    code = "range_not_satisfiable"
    http_status = 416


class MalformedFile(SluicewayError):
    """The file's content cannot be parsed; the message names the file, byte offset and line."""

    code = "malformed_file"
    http_status = 422


class UnsupportedFormat(SluicewayError):
    """The file is of a format this version cannot import."""

    code = "unsupported_format"
    http_status = 415


class StorageUnavailable(SluicewayError):
    """Object storage did not answer or refused the request."""

    code = "storage_unavailable"
    http_status = 503


class DatabaseUnavailable(SluicewayError):
    """PostgreSQL did not answer or refused the connection."""

    code = "database_unavailable"
    http_status = 503


class StackError(SluicewayError):
    """The local embedded stack could not start or was not reachable."""

    code = "stack_error"
    http_status = 500


class SchemaMismatch(SluicewayError):
    """The file's columns differ from the dataset's schema in a way its rules do not accept."""

    code = "schema_mismatch"
    http_status = 422


class RulesBroken(SluicewayError):
    """The file breaks the import's validation rules (too many rejected rows, too few records,
    a duplicate unique key): nothing was committed."""

    code = "rules_broken"
    http_status = 422


class RangeFailed(SluicewayError):
    """A range of the job failed before this step and its own error is recorded: the step
    stops without redoing it. The job keeps the range's code (``details["range_code"]``),
    not this one's: a range that found a bad record fails the job as ``malformed_file``.

    Not a retryable class: raising the range's own (``DatabaseUnavailable``, say) would have
    the state machine retry a step that can only find the same failure again."""

    code = "range_failed"
    http_status = 500


# The codes of failures that are not an error of this hierarchy (a job's ``error_code``).
STATE_MACHINE_TIMEOUT = "timeout"  # States.Timeout: a task ran past its limit
ABORTED = "aborted"  # the upload was aborted, or abandoned unfinished
STACK_STOPPED = "stack_stopped"  # the local stack running the job died


def code_of(exc: BaseException) -> str:
    """The code a job records for an exception: its own, or ``internal_error``."""
    return exc.code if isinstance(exc, SluicewayError) else SluicewayError.code


def code_of_name(name: str | None) -> str:
    """The code of a Step Functions error name (a Catch result's ``Error``): the class of
    this hierarchy by that name, ``timeout`` for a task that ran past its limit, else
    ``internal_error`` (a Lambda that crashed, a bug)."""
    if name in ("States.Timeout", "States.HeartbeatTimeout", "Sandbox.Timedout"):
        return STATE_MACHINE_TIMEOUT
    found: list[type[SluicewayError]] = [SluicewayError]
    while found:
        cls = found.pop()
        if cls.__name__ == name:
            return cls.code
        found.extend(cls.__subclasses__())
    return SluicewayError.code
