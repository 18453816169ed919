"""A whole number in a request body is a JSON integer: "5", true and 5.5 are refused, naming
the field, where they used to be read as 5, 1 and (for some fields) 5 -- a client sending them
has a bug it should see, not a silently different request. Nothing is opened or stored."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

import psycopg
import pytest

from sluiceway.client import ApiError, Client

Conn = psycopg.Connection[dict[str, Any]]

ANY_ID = str(uuid.uuid4())  # the body is refused before the id is looked up


def _upload(**fields: Any) -> dict[str, Any]:
    return {"dataset": "ints", "filename": "a.csv", **fields}


def _options(**options: Any) -> dict[str, Any]:
    return _upload(size=3, options=options)


def _rules(**rules: Any) -> dict[str, Any]:
    return _options(rules=rules)


# (method, path, the body with the value put in, the field the error names)
CASES: dict[str, tuple[str, str, Callable[[Any], dict[str, Any]], str]] = {
    "upload size": ("POST", "/uploads", lambda v: _upload(size=v), "size"),
    "chunk_bytes": ("POST", "/uploads", lambda v: _options(chunk_bytes=v), "chunk_bytes"),
    "faults": ("POST", "/uploads", lambda v: _options(faults={"load": v}), "faults.load"),
    "rule max_file_bytes": (
        "POST",
        "/uploads",
        lambda v: _rules(max_file_bytes=v),
        "rules.max_file_bytes",
    ),
    "rule min_records": ("POST", "/uploads", lambda v: _rules(min_records=v), "min_records"),
    "rule max_errors": ("POST", "/uploads", lambda v: _rules(max_errors=v), "max_errors"),
    "rule sample_records": (
        "POST",
        "/uploads",
        lambda v: _rules(sample_records=v),
        "sample_records",
    ),
    "dataset rules": ("PUT", "/datasets/ints/rules", lambda v: {"max_errors": v}, "max_errors"),
    "part numbers to sign": (
        "POST",
        f"/uploads/{ANY_ID}/parts",
        lambda v: {"part_numbers": [1, v]},
        "part_numbers.1",
    ),
    "completed part": (
        "POST",
        f"/uploads/{ANY_ID}/complete",
        lambda v: {"parts": [{"part_number": v, "etag": '"0123456789abcdef0123456789abcdef"'}]},
        "parts.0.part_number",
    ),
    "Uppy's completed part": (
        "POST",
        f"/uploads/s3/multipart/{ANY_ID}/complete?key=k",
        lambda v: {"parts": [{"PartNumber": v, "ETag": '"0123456789abcdef0123456789abcdef"'}]},
        "parts.0.PartNumber",
    ),
    "gc keep": ("POST", "/datasets/ints/gc", lambda v: {"keep": v}, "keep"),
    "session total_chunks": (
        "POST",
        "/sessions",
        lambda v: {"dataset": "ints", "total_chunks": v},
        "total_chunks",
    ),
    "session options": (
        "POST",
        "/sessions",
        lambda v: {"dataset": "ints", "options": {"chunk_bytes": v}},
        "options.chunk_bytes",
    ),
    "chunk_number": (
        "POST",
        f"/sessions/{ANY_ID}/chunks",
        lambda v: {"chunk_number": v, "records": [{"a": 1}]},
        "chunk_number",
    ),
    "chunk's total_chunks": (
        "POST",
        f"/sessions/{ANY_ID}/chunks",
        lambda v: {"chunk_number": 1, "total_chunks": v, "records": [{"a": 1}]},
        "total_chunks",
    ),
    "document size": ("POST", "/documents", lambda v: {"name": "d.bin", "size": v}, "size"),
    "document parts to sign": (
        "POST",
        f"/documents/{ANY_ID}/parts",
        lambda v: {"part_numbers": [v]},
        "part_numbers.0",
    ),
}


def _stored(db: Conn) -> dict[str, int]:
    counts = db.execute(
        "SELECT (SELECT count(*) FROM dsa_jobs.uploads WHERE dataset_name = 'ints') AS uploads, "
        "(SELECT count(*) FROM dsa_core.datasets WHERE name = 'ints') AS datasets"
    ).fetchone()
    assert counts is not None
    return dict(counts)


@pytest.mark.parametrize("value", ["5", True, 5.5, 5.0], ids=["string", "true", "5.5", "5.0"])
@pytest.mark.parametrize("case", list(CASES))
def test_a_whole_number_field_refuses_what_is_not_a_json_integer(
    case: str, value: Any, client: Client, db: Conn
) -> None:
    method, path, body, field = CASES[case]
    before = _stored(db)

    with pytest.raises(ApiError) as refused:
        client.call(method, path, body(value))

    assert refused.value.http_status == 422, refused.value.message
    assert refused.value.code == "invalid_request"
    assert field in refused.value.message
    assert "integer" in refused.value.message
    assert _stored(db) == before


@pytest.mark.parametrize("case", ["upload size", "chunk_bytes", "rule max_errors"])
def test_the_same_fields_take_a_json_integer(case: str, client: Client, db: Conn) -> None:
    method, path, body, _ = CASES[case]
    created = client.call(method, path, body(5))

    assert created["upload_id"]
    client.call("DELETE", f"/uploads/{created['upload_id']}")
