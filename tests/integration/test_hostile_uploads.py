"""Hostile or mistaken input to the upload routes: each is a clear 4xx that says what was
wrong, never a 500, and nothing already stored is lost."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import urllib3
from tests.conftest import import_bytes, main_commit

from sluiceway.client import ApiError, Client

MiB = 1024 * 1024


def _refused(client: Client, method: str, path: str, body: Any = None) -> ApiError:
    with pytest.raises(ApiError) as refused:
        client.call(method, path, body)
    return refused.value


def _put_part(client: Client, upload_id: str, number: int, data: bytes) -> str:
    signed = client.call("POST", f"/uploads/{upload_id}/parts", {"part_numbers": [number]})
    response = urllib3.request("PUT", signed["parts"][0]["url"], body=data)
    assert response.status == 200
    return str(response.headers["ETag"])


@pytest.mark.parametrize(
    ("name", "value"),
    [("size", "12 KB"), ("size", "1.5"), ("size", [1]), ("chunk_bytes", "four MiB")],
)
def test_uppy_metadata_that_is_not_a_whole_number_is_a_400_naming_it(
    client: Client, dataset_name: str, name: str, value: Any
) -> None:
    # Given Uppy metadata whose size or chunk_bytes is not a number of bytes
    metadata = {"dataset": dataset_name, name: value}
    # When Uppy opens the upload
    refused = _refused(
        client, "POST", "/uploads/s3/multipart", {"filename": "a.csv", "metadata": metadata}
    )
    # Then it is a 400 naming the field, and nothing was opened
    assert (refused.http_status, refused.code) == (400, "invalid_request")
    assert f"metadata.{name}" in refused.message
    assert client.list_uploads(dataset=dataset_name) == []


@pytest.mark.parametrize(
    ("method", "route", "body"),
    [
        ("POST", "parts", {"part_numbers": [1]}),
        ("POST", "complete", {"parts": []}),
        ("DELETE", "", None),
    ],
)
def test_multipart_calls_on_a_presigned_post_upload_are_409_not_500(
    client: Client, dataset_name: str, method: str, route: str, body: Any
) -> None:
    # Given an upload opened as one presigned POST (it has no multipart upload)
    params = client.call(
        "GET", f"/uploads/s3/params?filename=s.csv&metadata[dataset]={dataset_name}"
    )
    path = f"/uploads/{params['upload_id']}" + (f"/{route}" if route else "")
    # When a client calls a multipart route on it
    refused = _refused(client, method, path, body)
    # Then it is told the upload is a presigned POST, and the upload is still open for it
    assert (refused.http_status, refused.code) == (409, "conflict")
    assert "presigned POST" in refused.message
    assert client.call("GET", f"/uploads/{params['upload_id']}")["status"] == "uploading"


def test_completing_a_sized_upload_with_no_parts_is_a_400_not_storage_unavailable(
    client: Client, dataset_name: str
) -> None:
    # Given an upload of 10 bytes
    created = client.call(
        "POST", "/uploads", {"dataset": dataset_name, "filename": "a.csv", "size": 10}
    )
    # When it is completed with no parts at all
    refused = _refused(client, "POST", f"/uploads/{created['upload_id']}/complete", {"parts": []})
    # Then the client is told to list its parts (not that storage is down), and it is still open
    assert (refused.http_status, refused.code) == (400, "invalid_request")
    assert "parts" in refused.message
    assert client.call("GET", f"/uploads/{created['upload_id']}")["status"] == "uploading"


def test_completing_a_sizeless_upload_with_no_parts_never_empties_the_dataset(
    client: Client, db: Any, tmp_path: Path, dataset_name: str
) -> None:
    # Given a dataset with rows
    first = import_bytes(client, tmp_path, b"a,b\n1,2\n3,4\n", dataset_name)
    assert first["status"] == "completed", first["error_message"]
    before = main_commit(db, dataset_name)
    # and an upload of unknown size whose first part S3 already holds
    created = client.call("POST", "/uploads", {"dataset": dataset_name, "filename": "b.csv"})
    _put_part(client, created["upload_id"], 1, b"a,b\n5,6\n")
    # When it is completed with an empty parts list (a client that lost track of them)
    refused = _refused(client, "POST", f"/uploads/{created['upload_id']}/complete", {"parts": []})
    # Then it is a 400 saying S3 holds parts, the part is kept, and main did not move
    assert (refused.http_status, refused.code) == (400, "invalid_request")
    assert "part" in refused.message
    held = client.call(
        "GET", f"/uploads/s3/multipart/{created['s3_upload_id']}?key={created['key']}"
    )
    assert [(p["PartNumber"], p["Size"]) for p in held] == [(1, 8)]
    assert main_commit(db, dataset_name) == before


@pytest.mark.parametrize("etag", ['"abc\x00"', "\ud800"])
def test_an_etag_that_cannot_be_one_is_refused_before_s3_is_asked(
    client: Client, dataset_name: str, etag: str
) -> None:
    # Given an open upload with one part
    created = client.call(
        "POST", "/uploads", {"dataset": dataset_name, "filename": "a.csv", "size": 8}
    )
    _put_part(client, created["upload_id"], 1, b"a,b\n1,2\n")
    # When it is completed with an ETag holding control characters or a lone surrogate
    body = {"parts": [{"part_number": 1, "etag": etag}]}
    refused = _refused(client, "POST", f"/uploads/{created['upload_id']}/complete", body)
    # Then it is a 4xx about the ETag (not "storage unavailable")
    assert (refused.http_status, refused.code) == (422, "invalid_request")
    assert "etag" in refused.message


def test_a_part_listed_twice_is_refused_and_never_stored_twice(
    client: Client, dataset_name: str
) -> None:
    # Given an upload whose one 5 MiB part S3 holds
    data = b"a\n" + b"1\n" * (5 * MiB // 2)
    created = client.call(
        "POST", "/uploads", {"dataset": dataset_name, "filename": "a.csv", "size": len(data)}
    )
    etag = _put_part(client, created["upload_id"], 1, data)
    # When it is completed listing part 1 twice
    part = {"part_number": 1, "etag": etag}
    refused = _refused(
        client, "POST", f"/uploads/{created['upload_id']}/complete", {"parts": [part, part]}
    )
    # Then it is a 400 naming the part, and the upload is still open to complete right
    assert (refused.http_status, refused.code) == (400, "invalid_request")
    assert "Part 1" in refused.message
    assert client.call("GET", f"/uploads/{created['upload_id']}")["status"] == "uploading"


def test_aborting_a_completed_upload_is_409_and_its_import_goes_on(
    client: Client, dataset_name: str
) -> None:
    # Given a completed upload
    created = client.call(
        "POST", "/uploads", {"dataset": dataset_name, "filename": "a.csv", "size": 8}
    )
    etag = _put_part(client, created["upload_id"], 1, b"a,b\n1,2\n")
    body = {"parts": [{"part_number": 1, "etag": etag}]}
    client.call("POST", f"/uploads/{created['upload_id']}/complete", body)
    # When it is aborted
    refused = _refused(client, "DELETE", f"/uploads/{created['upload_id']}")
    # Then the caller is told it cannot be (not a silent success), and the import completes
    assert (refused.http_status, refused.code) == (409, "conflict")
    assert "completed" in refused.message
    job = client.wait_for_job(created["job_id"], poll_seconds=0.1, timeout=60)
    assert job["status"] == "completed", job["error_message"]


@pytest.mark.parametrize(
    "body",
    [
        {"options": {"modee": "upsert"}},
        {"options": {"chunkbytes": 1024}},
    ],
)
def test_an_unknown_import_option_is_422_naming_it(
    client: Client, dataset_name: str, body: dict[str, Any]
) -> None:
    # Given an import option with a typo in its name
    request = {"dataset": dataset_name, "filename": "a.csv", "size": 3, **body}
    # When the upload is opened
    refused = _refused(client, "POST", "/uploads", request)
    # Then it is refused naming the option, and nothing was opened
    assert (refused.http_status, refused.code) == (422, "invalid_request")
    assert next(iter(body["options"])) in refused.message
    assert client.list_uploads(dataset=dataset_name) == []


def test_completing_a_document_with_no_parts_is_a_400_not_storage_unavailable(
    client: Client,
) -> None:
    # Given a document of 10 bytes
    created = client.call("POST", "/documents", {"name": "x.bin", "size": 10})
    # When it is completed with no parts at all
    path = f"/documents/{created['document_id']}/complete"
    refused = _refused(client, "POST", path, {"parts": []})
    # Then the client is told to list its parts, and the document is still open
    assert (refused.http_status, refused.code) == (400, "invalid_request")
    assert "parts" in refused.message
    assert client.call("GET", f"/documents/{created['document_id']}")["status"] == "uploading"
