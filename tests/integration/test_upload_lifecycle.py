"""The upload lifecycle (seed 003): states derived from the job, listing, retry, cleanup; and the
import options (format, mode, key) an upload carries to the pipeline."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from tests.conftest import import_bytes

from sluiceway import auth
from sluiceway.cli import cli
from sluiceway.client import ApiError, Client
from sluiceway.storage import s3_client


def _open_upload(client: Client, dataset: str, **options: Any) -> dict[str, Any]:
    body = {"dataset": dataset, "filename": "d.csv", "size": 100, "options": options}
    created: dict[str, Any] = client.call("POST", "/uploads", body)
    return created


def test_each_state_is_derived_from_the_job(client: Client, db: Any, dataset_name: str) -> None:
    created = _open_upload(client, dataset_name)
    uid, job = created["upload_id"], created["job_id"]

    def state() -> str:
        return str(client.call("GET", f"/uploads/{uid}")["status"])

    def job_is(status: str, stage: str | None = None) -> None:
        progress = json.dumps({"stage": stage} if stage else {})
        db.execute(
            "UPDATE dsa_jobs.analysis_runs SET status = %s, progress = %s WHERE id = %s",
            (status, progress, job),
        )

    assert state() == "uploading"
    # (a started job proves the object arrived: a presigned POST has no complete call)
    job_is("running", "planning")
    assert state() == "validating"
    job_is("pending")
    # Given the object complete (as the complete route records it) and the job not started
    db.execute("UPDATE dsa_jobs.uploads SET status = 'completed' WHERE upload_id = %s", (uid,))
    assert state() == "uploaded"
    for stage, expected in [
        ("planning", "validating"),
        ("scanning", "validating"),
        ("loading", "processing"),
        ("committed", "processing"),
    ]:
        job_is("running", stage)
        assert state() == expected, stage
    job_is("completed", "committed")
    assert state() == "fresh"
    job_is("failed", "loading")
    assert state() == "failed"
    listed = client.call("GET", f"/uploads?status=failed&dataset={dataset_name}")["uploads"]
    assert [u["upload_id"] for u in listed] == [uid]
    assert client.call("GET", f"/uploads?status=fresh&dataset={dataset_name}")["uploads"] == []
    # seed 003's names for the same things
    assert client.call("GET", f"/uploads/upload-progress/{uid}")["status"] == "failed"
    assert client.call("GET", f"/uploads/file-info/{uid}")["upload_id"] == uid
    staged = client.call("GET", "/uploads/staged-files?status=failed")["files"]
    assert uid in [f["upload_id"] for f in staged]


def test_an_unknown_status_filter_is_422_naming_the_states(client: Client) -> None:
    with pytest.raises(ApiError) as refused:
        client.call("GET", "/uploads?status=done")
    assert refused.value.http_status == 422
    assert "fresh" in refused.value.message


def test_a_real_import_ends_fresh_and_a_bad_one_failed(
    client: Client, tmp_path: Path, dataset_name: str
) -> None:
    good = import_bytes(client, tmp_path / "a", b"a,b\n1,2\n", dataset_name)
    bad = import_bytes(client, tmp_path / "b", b"a,b\n1,2,3\n", dataset_name)
    states = {
        u["job_id"]: (u["status"], u["error_code"], u["error_message"])
        for u in client.list_uploads(dataset=dataset_name)
    }
    assert states[good["job_id"]] == ("fresh", None, None)
    assert states[bad["job_id"]][:2] == ("failed", "malformed_file")
    assert "3 field(s)" in states[bad["job_id"]][2]


def test_retry_runs_a_failed_import_again_on_the_same_object(
    stack: Any, client: Client, db: Any, tmp_path: Path, dataset_name: str
) -> None:
    # Given an import that failed
    first = import_bytes(client, tmp_path, b"a,b\n1,2\n3\n", dataset_name)
    assert first["status"] == "failed"
    upload = client.list_uploads(status="failed", dataset=dataset_name)[0]
    uid = upload["upload_id"]
    # and its object since fixed in storage (S3's event for that starts nothing: the job ended)
    s3_client(stack.settings).put_object(
        Bucket=stack.settings.storage.bucket, Key=upload["key"], Body=b"a,b\n1,2\n3,4\n"
    )
    # When it is retried
    retried = client.retry_upload(uid)
    # Then a new job runs on the same object and commits it
    assert retried["job_id"] != first["job_id"]
    assert retried["attempts"] == 2
    assert retried["status"] in ("uploaded", "validating", "processing", "fresh")
    job = client.wait_for_job(retried["job_id"], poll_seconds=0.1, timeout=120)
    assert job["status"] == "completed", job["error_message"]
    assert job["output_summary"]["rows"] == 2
    assert job["run_parameters"]["retry_of"] == first["job_id"]
    assert client.call("GET", f"/uploads/{uid}")["status"] == "fresh"
    # the failed attempt stays in the history
    assert client.call("GET", f"/jobs/{first['job_id']}")["status"] == "failed"
    # and a fresh upload cannot be retried
    with pytest.raises(ApiError) as refused:
        client.call("POST", f"/uploads/retry-failed-file/{uid}", {})
    assert refused.value.http_status == 409
    assert "only a failed import" in refused.value.message


def test_retry_refuses_what_it_cannot_do(
    stack: Any, client: Client, db: Any, tmp_path: Path, dataset_name: str
) -> None:
    failed = import_bytes(client, tmp_path, b"a\n\x00\n", dataset_name)
    assert failed["status"] == "failed"
    upload = client.list_uploads(status="failed", dataset=dataset_name)[0]
    # somebody else's: not found
    other = Client(stack.api_url, token=auth.create_token(db, "mallory"))
    with pytest.raises(ApiError) as hidden:
        other.retry_upload(upload["upload_id"])
    assert hidden.value.http_status == 404
    assert other.list_uploads() == []
    # an upload still open: 409
    open_one = _open_upload(client, dataset_name)
    with pytest.raises(ApiError) as refused:
        client.retry_upload(open_one["upload_id"])
    assert refused.value.http_status == 409
    # an object that is gone: 409 saying so, and no new job
    s3_client(stack.settings).delete_object(Bucket=stack.settings.storage.bucket, Key=upload["key"])
    with pytest.raises(ApiError) as gone:
        client.retry_upload(upload["upload_id"])
    assert gone.value.http_status == 409
    assert "gone" in gone.value.message
    assert client.call("GET", f"/uploads/{upload['upload_id']}")["attempts"] == 1


def test_cleanup_aborts_only_old_open_uploads_of_the_caller(
    stack: Any, client: Client, db: Any, dataset_name: str
) -> None:
    s3 = s3_client(stack.settings)
    bucket = stack.settings.storage.bucket
    old = _open_upload(client, dataset_name)
    recent = _open_upload(client, dataset_name)
    old_doc = client.call("POST", "/documents", {"name": "big.iso", "size": 10 * 1024 * 1024})
    other = Client(stack.api_url, token=auth.create_token(db, "mallory"))
    theirs = _open_upload(other, dataset_name)
    # Given three of them left open for two days
    for table, column, key in [
        ("dsa_jobs.uploads", "upload_id", old["upload_id"]),
        ("dsa_jobs.uploads", "upload_id", theirs["upload_id"]),
        ("dsa_core.documents", "id", old_doc["document_id"]),
    ]:
        db.execute(
            f"UPDATE {table} SET created_at = now() - interval '48 hours' WHERE {column} = %s",
            (key,),
        )
    # and a record session idle as long, next to an active one
    idle = client.call("POST", "/sessions", {"dataset": dataset_name})["session_id"]
    active = client.call("POST", "/sessions", {"dataset": dataset_name})["session_id"]
    for sid in (idle, active):
        client.call("POST", f"/sessions/{sid}/chunks", {"chunk_number": 1, "records": [{"a": 1}]})
    chunk_key = db.execute(
        "SELECT object_key FROM dsa_jobs.record_session_chunks WHERE session_id = %s", (idle,)
    ).fetchone()["object_key"]
    db.execute(
        "UPDATE dsa_jobs.record_session_chunks SET received_at = now() - interval '48 hours' "
        "WHERE session_id = %s",
        (idle,),
    )
    db.execute(
        "UPDATE dsa_jobs.record_sessions SET created_at = now() - interval '48 hours' "
        "WHERE session_id IN (%s, %s)",
        (idle, active),
    )
    # When I clean up what is older than a day
    result = client.cleanup_uploads(24)
    # Then my old upload and document are aborted, in S3 too; the recent one and theirs stay
    assert result["aborted_uploads"] == [old["upload_id"]]
    assert result["aborted_documents"] == [old_doc["document_id"]]
    still_open = {
        u["UploadId"] for u in s3.list_multipart_uploads(Bucket=bucket).get("Uploads", [])
    }
    assert old["s3_upload_id"] not in still_open
    assert recent["s3_upload_id"] in still_open
    assert theirs["s3_upload_id"] in still_open
    aborted = client.call("GET", f"/uploads/{old['upload_id']}")
    assert aborted["status"] == "aborted"
    abandoned = client.call("GET", f"/jobs/{old['job_id']}")
    assert "abandoned" in abandoned["error_message"]
    assert abandoned["error_code"] == "aborted"
    assert client.call("GET", f"/uploads/{recent['upload_id']}")["status"] == "uploading"
    assert client.call("GET", f"/documents/{old_doc['document_id']}")["status"] == "aborted"
    assert other.call("GET", f"/uploads/{theirs['upload_id']}")["status"] == "uploading"
    assert result["aborted_sessions"] == [idle]
    assert client.call("GET", f"/sessions/{idle}")["status"] == "aborted"
    assert client.call("GET", f"/sessions/{active}")["status"] == "open"
    assert s3.list_objects_v2(Bucket=bucket, Prefix=chunk_key).get("KeyCount", 0) == 0
    with pytest.raises(ApiError) as late:
        client.call("POST", f"/sessions/{idle}/chunks", {"chunk_number": 2, "records": [{"a": 2}]})
    assert late.value.http_status == 409
    # and seed 003's route does the same (nothing left to do now)
    again = client.call("DELETE", "/uploads/cleanup-failed-uploads?hours_old=24")
    assert again["aborted_uploads"] == []


def test_cli_uploads_list_retry_and_cleanup(
    stack: Any, client: Client, tmp_path: Path, dataset_name: str
) -> None:
    common = ["--api", stack.api_url, "--token", stack.local_token, "--json"]
    failed = import_bytes(client, tmp_path, b"a,b\n1\n", dataset_name)
    listed = CliRunner().invoke(cli, ["uploads", "list", "--status", "failed", *common])
    assert listed.exit_code == 0, listed.output
    mine = [u for u in json.loads(listed.output) if u["dataset"] == dataset_name]
    assert [u["job_id"] for u in mine] == [failed["job_id"]]
    # the same bad object fails again, and the command says so with its exit code
    retried = CliRunner().invoke(cli, ["uploads", "retry", mine[0]["upload_id"], "--wait", *common])
    assert retried.exit_code == 1, retried.output
    assert json.loads(retried.output)["status"] == "failed"
    cleaned = CliRunner().invoke(cli, ["uploads", "cleanup", "--older-than-hours", "1000", *common])
    assert cleaned.exit_code == 0, cleaned.output
    assert json.loads(cleaned.output)["older_than_hours"] == 1000


@pytest.mark.parametrize(
    ("options", "words"),
    [
        ({"format": "parquet"}, "the formats are: csv"),
        ({"mode": "upsert"}, "mode upsert needs key"),
        ({"mode": "delete", "key": []}, "key"),
        ({"mode": "replace", "key": ["id"]}, "key applies to upsert and delete"),
        ({"mode": "merge"}, "mode"),
    ],
)
def test_bad_import_options_are_422(
    client: Client, db: Any, dataset_name: str, options: dict[str, Any], words: str
) -> None:
    with pytest.raises(ApiError) as refused:
        _open_upload(client, dataset_name, **options)
    assert refused.value.http_status == 422
    assert words in refused.value.message
    # and nothing was opened
    assert client.list_uploads(dataset=dataset_name) == []


def test_mode_and_key_reach_the_job_options(client: Client, dataset_name: str) -> None:
    created = _open_upload(client, dataset_name, mode="upsert", key=["id"], format="CSV")
    job = client.call("GET", f"/jobs/{created['job_id']}")
    assert job["run_parameters"]["options"] == {"format": "csv", "mode": "upsert", "key": ["id"]}
    # and from Uppy's metadata, where key may be comma-separated
    uppy = client.call(
        "POST",
        "/uploads/s3/multipart",
        {
            "filename": "x.csv",
            "metadata": {"dataset": dataset_name, "mode": "delete", "key": "a,b"},
        },
    )
    found = client.call("GET", f"/jobs?key={uppy['key']}")["jobs"][0]
    assert found["run_parameters"]["options"]["mode"] == "delete"
    assert found["run_parameters"]["options"]["key"] == ["a", "b"]
    with pytest.raises(ApiError) as refused:
        client.call(
            "POST",
            "/uploads/s3/multipart",
            {"filename": "x.csv", "metadata": {"dataset": dataset_name, "format": "parquet"}},
        )
    assert refused.value.http_status == 422


def test_cli_import_sends_mode_and_key(stack: Any, tmp_path: Path, dataset_name: str) -> None:
    src = tmp_path / "people.csv"
    src.write_bytes(b"id,name\n1,Ada\n")
    common = ["--api", stack.api_url, "--token", stack.local_token, "--json"]
    args = ["import", str(src), "-d", dataset_name, "--mode", "upsert", "--key", "id", *common]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    job = Client(stack.api_url, token=stack.local_token).call(
        "GET", f"/jobs/{json.loads(result.output)['job_id']}"
    )
    assert job["run_parameters"]["options"]["mode"] == "upsert"
    assert job["run_parameters"]["options"]["key"] == ["id"]
    bad = CliRunner().invoke(
        cli, ["import", str(src), "-d", dataset_name, "--mode", "delete", *common]
    )
    assert bad.exit_code != 0
    assert "needs key" in str(bad.exception)


def test_the_uploaded_file_downloads_and_health_counts_uploads(
    stack: Any, client: Client, tmp_path: Path, dataset_name: str
) -> None:
    import urllib3

    data = b"a,b\n1,2\n"
    job = import_bytes(client, tmp_path, data, dataset_name)
    upload = next(u for u in client.list_uploads(dataset=dataset_name))
    assert upload["job_id"] == job["job_id"]
    for path in (
        f"/uploads/{upload['upload_id']}/download",
        f"/uploads/download-file/{upload['upload_id']}",
    ):
        url = client.call("GET", path)["url"]
        assert urllib3.request("GET", url).data == data
    open_one = _open_upload(client, dataset_name)
    with pytest.raises(ApiError) as refused:
        client.call("GET", f"/uploads/{open_one['upload_id']}/download")
    assert refused.value.http_status == 409
    health = urllib3.request("GET", f"{stack.api_url}/health").json()
    assert health["uploads"]["active"] >= 1
    assert set(health["uploads"]) == {"active", "failed"}
