"""A bad file fails its import with a message that points at the problem, and changes nothing."""

from __future__ import annotations

import base64
import json
import urllib.parse
import uuid
from pathlib import Path
from typing import Any

import psycopg
import pytest
import urllib3
from tests.conftest import import_bytes

from sluiceway.client import ApiError, Client

Conn = psycopg.Connection[dict[str, Any]]

FILENAME = "orders-2024.csv"
GOOD = b"id,name\n10,x\n11,y\n"

# name -> (file, line of the bad record, its byte offset, what the message says is wrong).
# Every bad file starts with b"id,name\n1,a\n": 8 + 4 bytes, so line 3 starts at byte 12.
BAD_FILES: dict[str, tuple[bytes, int, int, str]] = {
    "too many fields": (b"id,name\n1,a\n2,b,c\n3,d\n", 3, 12, "has 3 field(s); the header has 2"),
    "too few fields": (b"id,name\n1,a\n2\n3,d\n", 3, 12, "has 1 field(s); the header has 2"),
    # b"2,caf" is bytes 12-16; the Latin-1 e-acute 0xE9 is byte 17
    "invalid UTF-8": (b"id,name\n1,a\n2,caf\xe9!\n3,d\n", 3, 17, "is not valid UTF-8 (0xe9)"),
    "unclosed quote at the end": (
        b'id,name\n1,a\n2,"never closed\n',
        3,
        12,
        "a quoted field is never closed",
    ),
    "NUL byte": (b"id,name\n1,a\n2,b\x00c\n3,d\n", 3, 12, "contains a NUL byte"),
    # line 2's record is b'1,"a\nb"\n' (bytes 8-15, two lines): the short record is line 4
    "too few fields after a multi-line field": (
        b'id,name\n1,"a\nb"\n2\n',
        4,
        16,
        "has 1 field(s); the header has 2",
    ),
}


def _head(db: Conn, dataset: str) -> dict[str, Any] | None:
    return db.execute(
        "SELECT c.commit_id, c.row_count FROM dsa_core.refs r "
        "JOIN dsa_core.datasets d ON d.id = r.dataset_id "
        "JOIN dsa_core.commits c ON c.commit_id = r.commit_id "
        "WHERE d.name = %s AND r.name = 'main'",
        (dataset,),
    ).fetchone()


def _commit_count(db: Conn, dataset: str) -> int:
    row = db.execute(
        "SELECT count(*) AS n FROM dsa_core.commits c JOIN dsa_core.datasets d "
        "ON d.id = c.dataset_id WHERE d.name = %s",
        (dataset,),
    ).fetchone()
    assert row is not None
    return int(row["n"])


def _assert_names_the_problem(
    job: dict[str, Any],
    *,
    line: int | None,
    byte: int | None,
    reason: str,
    code: str = "malformed_file",
) -> None:
    assert job["status"] == "failed"
    # the code says it is the file to fix, not a service to retry, however it was cut
    assert job["error_code"] == code, job
    message = job["error_message"]
    assert FILENAME in message
    if line is not None:
        assert f"line {line}" in message, message
    if byte is not None:
        assert f"byte {byte}" in message.lower(), message
    assert reason in message


def _assert_nothing_staged(db: Conn, job: dict[str, Any]) -> None:
    """No staging tables of the job, and no row entries for the commit it never made."""
    prefix = "j" + uuid.UUID(job["job_id"]).hex
    stage = db.execute(
        "SELECT count(*) AS n FROM pg_tables WHERE schemaname = 'dsa_stage' AND tablename LIKE %s",
        (prefix + "%",),
    ).fetchone()
    assert stage == {"n": 0}
    # a range stages its rows in session temp tables dropped with its transaction
    temp = db.execute(
        "SELECT count(*) AS n FROM pg_tables WHERE tablename IN ('sluiceway_raw', 'sluiceway_hashed')"
    ).fetchone()
    assert temp == {"n": 0}
    commit_key = (job["checkpoint"] or {}).get("commit_key")
    if commit_key is not None:
        made = db.execute(
            "SELECT (SELECT count(*) FROM dsa_core.commits WHERE commit_key = %s) "
            "+ (SELECT count(*) FROM dsa_core.commit_chunks WHERE commit_key = %s) AS n",
            (commit_key, commit_key),
        ).fetchone()
        assert made == {"n": 0}
    keyed = db.execute(
        "SELECT count(*) AS n FROM dsa_jobs.import_keyed_rows WHERE job_id = %s", (job["job_id"],)
    ).fetchone()
    assert keyed == {"n": 0}


@pytest.mark.parametrize("case", list(BAD_FILES))
def test_a_bad_file_fails_and_main_keeps_the_previous_commit(
    case: str, client: Client, db: Conn, tmp_path: Path, dataset_name: str
) -> None:
    data, line, byte, reason = BAD_FILES[case]
    # Given a dataset whose main points at a good commit of two rows
    good = import_bytes(client, tmp_path, GOOD, dataset_name)
    assert good["status"] == "completed", good["error_message"]
    before = _head(db, dataset_name)
    assert before == {"commit_id": good["output_summary"]["commit_id"], "row_count": 2}

    # When a bad file is imported into it
    job = import_bytes(client, tmp_path, data, dataset_name, filename=FILENAME)

    # Then the job failed naming the file, the line, the byte and the problem
    _assert_names_the_problem(job, line=line, byte=byte, reason=reason)
    # ... main did not move and no commit was added
    assert _head(db, dataset_name) == before
    assert _commit_count(db, dataset_name) == 1
    log = client.call("GET", f"/datasets/{dataset_name}/commits")
    assert [c["commit_id"] for c in log["commits"]] == [before["commit_id"]]
    # ... and nothing of the failed import is left behind
    _assert_nothing_staged(db, job)


@pytest.mark.parametrize("case", list(BAD_FILES))
def test_a_bad_first_import_cut_into_small_ranges_leaves_no_dataset(
    case: str, client: Client, db: Conn, tmp_path: Path, dataset_name: str
) -> None:
    data, line, byte, reason = BAD_FILES[case]

    # When a bad file is the first import of a dataset, loaded as many 5-byte ranges
    job = import_bytes(client, tmp_path, data, dataset_name, chunk_bytes=5, filename=FILENAME)

    # Then the message points at the same line and byte as when loaded whole
    _assert_names_the_problem(job, line=line, byte=byte, reason=reason)
    # ... no commit exists, so the dataset does not either
    assert _commit_count(db, dataset_name) == 0
    assert _head(db, dataset_name) is None
    with pytest.raises(ApiError) as missing:
        client.call("GET", f"/datasets/{dataset_name}/commits")
    assert missing.value.http_status == 404
    # ... and the rows of the ranges that did load were discarded
    _assert_nothing_staged(db, job)


def test_a_duplicate_header_column_fails_and_main_keeps_the_previous_commit(
    client: Client, db: Conn, tmp_path: Path, dataset_name: str
) -> None:
    # Given a dataset with a good commit
    good = import_bytes(client, tmp_path, GOOD, dataset_name)
    before = _head(db, dataset_name)
    assert before is not None

    # When a file whose header names "id" twice is imported
    job = import_bytes(client, tmp_path, b"id,name,id\n1,a,2\n", dataset_name, filename=FILENAME)

    # Then the import failed, saying which column is repeated, and main did not move
    assert job["status"] == "failed"
    assert "'id' twice" in job["error_message"]
    assert (
        _head(db, dataset_name)
        == before
        == {
            "commit_id": good["output_summary"]["commit_id"],
            "row_count": 2,
        }
    )
    assert _commit_count(db, dataset_name) == 1
    _assert_nothing_staged(db, job)


def test_a_duplicate_header_column_error_names_the_file_and_line(
    client: Client, tmp_path: Path, dataset_name: str
) -> None:
    job = import_bytes(client, tmp_path, b"id,name,id\n1,a,2\n", dataset_name, filename=FILENAME)

    _assert_names_the_problem(job, line=1, byte=None, reason="'id' twice")


def test_a_nul_byte_in_the_header_is_reported_with_file_and_line(
    client: Client, db: Conn, tmp_path: Path, dataset_name: str
) -> None:
    job = import_bytes(client, tmp_path, b"id,na\x00me\n1,a\n", dataset_name, filename=FILENAME)

    assert job["status"] == "failed"
    assert _commit_count(db, dataset_name) == 0
    _assert_names_the_problem(job, line=1, byte=None, reason="NUL")


def test_a_file_with_cr_only_line_ends_does_not_silently_import_nothing(
    client: Client, tmp_path: Path, dataset_name: str
) -> None:
    # Given a file with classic Mac line ends: a header and two records
    job = import_bytes(client, tmp_path, b"id,name\r1,a\r2,b\r", dataset_name, filename=FILENAME)

    # Then either its two records are imported, or the import fails and says why;
    # a completed import of no rows loses the data without a word
    if job["status"] == "completed":
        assert job["output_summary"]["rows"] == 2
    else:
        assert FILENAME in job["error_message"]


def test_a_range_the_database_keeps_failing_fails_the_job_as_unavailable_not_as_a_bad_file(
    client: Client, db: Conn, tmp_path: Path, dataset_name: str
) -> None:
    # Given a dataset with a good commit
    good = import_bytes(client, tmp_path, GOOD, dataset_name)
    before = _head(db, dataset_name)
    assert before is not None
    assert good["status"] == "completed"

    # When a good file's range fails with the database unavailable on every attempt (the
    # state machine retries it four times with backoff, then gives up)
    job = import_bytes(client, tmp_path, b"id,name\n1,a\n2,b\n", dataset_name, faults={"load": 10})

    # Then the job failed with the range's own error and its code: a service to retry later,
    # not a file to fix (the check after the Map used to report every range failure as a
    # malformed file)
    assert job["status"] == "failed"
    assert job["error_code"] == "database_unavailable", job
    assert "Injected fault at 'load'" in job["error_message"]
    # ... and main did not move
    assert _head(db, dataset_name) == before
    _assert_nothing_staged(db, job)


# the step, and a function its worker calls (looked up when called, so a patch takes)
CRASH_POINTS = {"scan": ("plan", "_scan_chunk"), "load": ("load", "_reuses_blocks")}


@pytest.mark.parametrize("step", list(CRASH_POINTS))
def test_a_range_that_crashes_fails_the_job_with_what_the_crash_was(
    step: str,
    client: Client,
    db: Conn,
    tmp_path: Path,
    dataset_name: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import importlib

    from sluiceway.local import lambdas

    # Given a dataset with a good commit
    good = import_bytes(client, tmp_path, GOOD, dataset_name)
    before = _head(db, dataset_name)
    assert before is not None
    assert good["status"] == "completed"

    # When a range's worker raises an exception no part of sluiceway expected (a bug): the
    # ranges run in this process, so that the worker can be made to crash
    def crash(*args: Any, **kwargs: Any) -> Any:
        raise KeyError("surprise")

    module, name = CRASH_POINTS[step]
    monkeypatch.setattr(lambdas, "WORKER_FUNCTIONS", frozenset())
    monkeypatch.setattr(importlib.import_module(f"sluiceway.{module}"), name, crash)
    data = b"id,name\n" + b"".join(b"%d,row %d\n" % (i, i) for i in range(200))
    job = import_bytes(client, tmp_path, data, dataset_name, chunk_bytes=1024)

    # Then the job failed saying which range crashed and how (it used to say only that the
    # range was "never loaded"), as an internal error, not as a bad file
    assert job["status"] == "failed"
    assert job["error_code"] == "internal_error", job
    assert "Range 0 failed unexpectedly (KeyError: 'surprise')" in job["error_message"], job
    # ... and main did not move, nothing is left staged
    assert _head(db, dataset_name) == before
    _assert_nothing_staged(db, job)


# -- API errors ------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["../x", "a b", "", "-starts-with-dash", "x" * 129])
def test_an_upload_into_a_bad_dataset_name_is_refused(name: str, client: Client, db: Conn) -> None:
    with pytest.raises(ApiError) as refused:
        client.call("POST", "/uploads", {"dataset": name, "filename": "a.csv", "size": 3})

    assert refused.value.http_status == 400
    assert refused.value.code == "invalid_request"
    assert f"Invalid dataset name {name!r}" in refused.value.message
    # nothing was opened for it
    opened = db.execute(
        "SELECT count(*) AS n FROM dsa_jobs.uploads WHERE dataset_name = %s", (name,)
    ).fetchone()
    assert opened == {"n": 0}


def test_an_unknown_job_is_not_found(client: Client) -> None:
    job_id = str(uuid.uuid4())
    with pytest.raises(ApiError) as missing:
        client.call("GET", f"/jobs/{job_id}")

    assert missing.value.http_status == 404
    assert missing.value.code == "not_found"
    assert job_id in missing.value.message


def test_a_job_id_that_is_not_a_uuid_is_not_found(client: Client) -> None:
    with pytest.raises(ApiError) as missing:
        client.call("GET", "/jobs/not-a-uuid")

    assert missing.value.http_status == 404
    assert missing.value.code == "not_found"
    assert "not-a-uuid" in missing.value.message


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"dataset": "x", "size": 3}, "filename"),
        ({"filename": "a.csv", "size": 3}, "dataset"),
        ({"dataset": "x", "filename": "a.csv", "size": -1}, "size"),
    ],
)
def test_an_upload_missing_a_field_is_unprocessable(
    body: dict[str, Any], field: str, client: Client
) -> None:
    with pytest.raises(ApiError) as refused:
        client.call("POST", "/uploads", body)

    assert refused.value.http_status == 422
    assert refused.value.code == "invalid_request"
    assert refused.value.message.startswith(f"{field}: ")


# -- the object's real size against the declared one and the limits --------------------------


def _multipart(
    client: Client, dataset: str, data: bytes, *, size: int | None, **options: Any
) -> dict[str, Any]:
    """Upload ``data`` in one part of an upload opened as ``size`` bytes (None: unknown)."""
    body: dict[str, Any] = {"dataset": dataset, "filename": FILENAME, "options": options}
    if size is not None:
        body["size"] = size
    created = client.call("POST", "/uploads", body)
    path = f"/uploads/{created['upload_id']}"
    signed = client.call("POST", f"{path}/parts", {"part_numbers": [1]})
    sent = urllib3.request("PUT", signed["parts"][0]["url"], body=data)
    assert sent.status == 200
    part = {"part_number": 1, "etag": sent.headers["ETag"]}
    client.call("POST", f"{path}/complete", {"parts": [part]})
    return client.wait_for_job(created["job_id"], poll_seconds=0.05, timeout=60)


def _presigned_post(
    client: Client, dataset: str, data: bytes, **metadata: str
) -> tuple[dict[str, Any], list[Any]]:
    """Upload ``data`` in Uppy's one presigned POST: its job, and the policy's conditions."""
    query = "".join(f"&metadata[{k}]={v}" for k, v in {"dataset": dataset, **metadata}.items())
    params = client.call("GET", f"/uploads/s3/params?filename={FILENAME}&type=text/csv{query}")
    sent = urllib3.request(
        "POST", params["url"], fields={**params["fields"], "file": (FILENAME, data, "text/csv")}
    )
    assert sent.status in (200, 204), sent.data
    policy = json.loads(base64.b64decode(params["fields"]["policy"]))
    job = client.wait_for_job(params["job_id"], poll_seconds=0.05, timeout=60)
    return job, policy["conditions"]


@pytest.mark.parametrize(
    ("declared", "words"),
    [
        (5, f"is {len(GOOD)} bytes, but its upload was opened as 5 bytes"),
        (1000, f"is {len(GOOD)} bytes, but its upload was opened as 1,000 bytes"),
    ],
    ids=["more than declared", "fewer than declared (cut short)"],
)
def test_an_upload_whose_size_is_not_the_declared_one_fails_and_main_keeps_its_commit(
    client: Client, db: Conn, tmp_path: Path, dataset_name: str, declared: int, words: str
) -> None:
    # Given a dataset with a commit
    good = import_bytes(client, tmp_path, GOOD, dataset_name)
    assert good["status"] == "completed", good["error_message"]
    before = _head(db, dataset_name)

    # When a file is uploaded into an upload opened (and checked) as another size
    job = _multipart(client, dataset_name, GOOD, size=declared)

    # Then the import fails saying so, and main keeps its commit
    assert job["status"] == "failed"
    assert job["error_code"] == "size_mismatch", job["error_message"]
    assert FILENAME in job["error_message"]
    assert words in job["error_message"]
    assert "Upload the file again" in job["error_message"]
    assert _head(db, dataset_name) == before


def test_an_upload_of_unknown_size_over_max_file_bytes_fails_before_it_is_read(
    client: Client, dataset_name: str
) -> None:
    # Given an upload opened with no size under a rule of at most 10 bytes, and a file that
    # is larger (and, read, would fail for another reason: a NUL in its header)
    data = b"id\x00,name\n1,a\n2,b\n"

    # When it is imported
    job = _multipart(client, dataset_name, data, size=None, rules={"max_file_bytes": 10})

    # Then it fails on its size, the first thing the planner knows, before reading it
    assert job["status"] == "failed"
    assert job["error_code"] == "too_large", job["error_message"]
    assert f"{FILENAME} is {len(data)} bytes" in job["error_message"]
    assert "max_file_bytes" in job["error_message"]


def test_a_presigned_post_is_limited_to_the_declared_size_and_checked_after(
    client: Client, dataset_name: str
) -> None:
    # When Uppy's one-request upload declares 5 bytes and sends more (S3 would refuse them by
    # the policy's content-length-range; the local S3 does not check it)
    job, conditions = _presigned_post(client, dataset_name, GOOD, size="5")

    # Then the policy asks S3 for exactly 5 bytes, and the import fails on the size
    assert ["content-length-range", 5, 5] in conditions
    assert job["status"] == "failed"
    assert job["error_code"] == "size_mismatch", job["error_message"]


def test_a_presigned_post_of_unknown_size_is_limited_to_max_file_bytes(
    client: Client, dataset_name: str
) -> None:
    # When a one-request upload of unknown size is opened under a rule of at most 100 bytes
    rules = urllib.parse.quote(json.dumps({"max_file_bytes": 100}))
    job, conditions = _presigned_post(client, dataset_name, GOOD, rules=rules)

    # Then S3 is asked for at most 100 bytes, and the file, within them, imports
    assert ["content-length-range", 0, 100] in conditions
    assert job["status"] == "completed", job["error_message"]
