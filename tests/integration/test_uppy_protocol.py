"""The S3 multipart routes that stock Uppy (@uppy/aws-s3, companionEndpoint mode) calls.

Each call here is the request Uppy makes (see shared/FACTS.md for the protocol); the bytes go
to the presigned URLs, straight to S3, and completing the upload starts the import.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import urllib3

from sluiceway.client import ApiError, Client

MiB = 1024 * 1024


def _csv(rows: int) -> bytes:
    return b"id,text\n" + b"".join(
        f'{i},"row {i}, padded {"x" * 60}"\n'.encode() for i in range(rows)
    )


def test_a_multipart_upload_with_resume_imports_the_file(client: Client, dataset_name: str) -> None:
    data = _csv(150_000)  # > 10 MiB: three 5 MiB parts, as Uppy cuts them
    assert len(data) > 10 * MiB
    meta = {"dataset": dataset_name, "size": len(data), "chunk_bytes": 4 * MiB}
    created = client.call(
        "POST",
        "/uploads/s3/multipart",
        {"filename": "big.csv", "type": "text/csv", "metadata": meta},
    )
    upload_id, key = created["uploadId"], created["key"]
    assert key.endswith("/big.csv")
    parts = [data[i : i + 5 * MiB] for i in range(0, len(data), 5 * MiB)]

    def put(number: int) -> str:
        signed = client.call("GET", f"/uploads/s3/multipart/{upload_id}/{number}?key={key}")
        response = urllib3.request("PUT", signed["url"], body=parts[number - 1])
        assert response.status == 200
        return str(response.headers["ETag"])

    # Given two parts sent before a reload
    etags = {1: put(1), 2: put(2)}
    # When the page comes back, it asks which parts S3 already has
    listed = client.call("GET", f"/uploads/s3/multipart/{upload_id}?key={key}")
    assert [(p["PartNumber"], p["Size"]) for p in listed] == [(1, 5 * MiB), (2, 5 * MiB)]
    assert [p["ETag"] for p in listed] == [etags[1], etags[2]]
    # and sends only the rest, then completes
    etags[3] = put(3)
    done = client.call(
        "POST",
        f"/uploads/s3/multipart/{upload_id}/complete?key={key}",
        {"parts": [{"PartNumber": n, "ETag": e} for n, e in etags.items()]},
    )
    assert done["location"].endswith(key)
    # (a page that only learns the key finds the import's job by it)
    by_key = client.call("GET", f"/jobs?key={key}")["jobs"]
    assert [j["job_id"] for j in by_key] == [done["job_id"]]
    # Then the object-created event imported it
    job = client.wait_for_job(done["job_id"], poll_seconds=0.1, timeout=120)
    assert job["status"] == "completed", job["error_message"]
    assert job["output_summary"]["rows"] == 150_000


def test_abort_discards_the_upload(client: Client, dataset_name: str) -> None:
    created = client.call(
        "POST",
        "/uploads/s3/multipart",
        {"filename": "x.csv", "metadata": {"dataset": dataset_name}},
    )
    path = f"/uploads/s3/multipart/{created['uploadId']}?key={created['key']}"
    assert client.call("DELETE", path) == {}
    with pytest.raises(ApiError) as refused:
        client.call("GET", f"/uploads/s3/multipart/{created['uploadId']}/1?key={created['key']}")
    assert refused.value.http_status == 409


def test_small_files_go_in_one_presigned_post(client: Client, dataset_name: str) -> None:
    params = client.call(
        "GET",
        f"/uploads/s3/params?filename=small.csv&type=text/csv&metadata[dataset]={dataset_name}",
    )
    assert params["method"] == "POST"
    response = urllib3.request(
        "POST",
        params["url"],
        fields={**params["fields"], "file": ("small.csv", b"a,b\n1,2\n", "text/csv")},
    )
    assert response.status in (200, 204), response.data
    job = client.wait_for_job(params["job_id"], poll_seconds=0.1, timeout=60)
    assert job["status"] == "completed", job["error_message"]
    assert job["output_summary"]["rows"] == 1


@pytest.mark.parametrize(
    ("method", "path", "body", "status"),
    [
        ("POST", "/uploads/s3/multipart", {"filename": "a.csv", "metadata": {}}, 400),
        (
            "POST",
            "/uploads/s3/multipart",
            {"filename": "a.csv", "metadata": {"dataset": "../etc"}},
            400,
        ),
        (
            "POST",
            "/uploads/s3/multipart",
            {"filename": "a.csv", "metadata": {"dataset": "d", "size": 6 * 1024**4}},
            413,
        ),
        ("GET", "/uploads/s3/multipart/nope/1?key=uploads/local/x", None, 404),
        ("GET", "/uploads/s3/multipart/nope/1", None, 400),
        ("GET", "/uploads/s3/params?type=text/csv&metadata[dataset]=d", None, 400),
    ],
)
def test_bad_requests_get_clear_json_errors(
    client: Client, method: str, path: str, body: Any, status: int
) -> None:
    with pytest.raises(ApiError) as refused:
        client.call(method, path, body)
    assert refused.value.http_status == status
    assert refused.value.message


def test_a_hostile_filename_never_becomes_a_path(
    client: Client, dataset_name: str, tmp_path: Path
) -> None:
    created = client.call(
        "POST",
        "/uploads/s3/multipart",
        {"filename": "../../etc/pass\x00wd\n.csv", "metadata": {"dataset": dataset_name}},
    )
    owner_prefix = "uploads/local/"
    assert created["key"].startswith(owner_prefix)
    last = created["key"].rsplit("/", 1)[1]
    assert last == "pass_wd_.csv"
    assert ".." not in created["key"]
