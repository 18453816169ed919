"""Every route but /health needs a token; another owner's things are not found, never shown."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import urllib3
from click.testing import CliRunner
from tests.conftest import import_bytes

from sluiceway import auth
from sluiceway.api import PUBLIC_ROUTES
from sluiceway.cli import cli
from sluiceway.client import ApiError, Client
from sluiceway.names import REPO_ROOT

GUESS = "00000000-0000-0000-0000-000000000000"


def _protected_routes() -> list[tuple[str, str]]:
    """Every operation of the OpenAPI document but the public ones, ids filled with a guess."""
    document = json.loads((REPO_ROOT / "docs" / "openapi.json").read_text())
    return [
        (method.upper(), re.sub(r"\{[^}]+\}", GUESS, path))
        for path, operations in document["paths"].items()
        if path not in PUBLIC_ROUTES
        for method in operations
        if method in ("get", "post", "put", "patch", "delete")
    ]


ROUTES = _protected_routes()


def test_the_route_list_comes_from_the_whole_document() -> None:
    # so the test below cannot pass on an empty or truncated list
    assert len(ROUTES) >= 45
    for expected in [("POST", "/uploads"), ("GET", f"/documents/{GUESS}/content")]:
        assert expected in ROUTES


@pytest.mark.parametrize(("method", "path"), ROUTES)
@pytest.mark.parametrize("header", [None, "Bearer slw_not-a-real-token", "Basic abc", "Bearer"])
def test_routes_refuse_missing_and_bad_tokens(
    stack: Any, method: str, path: str, header: str | None
) -> None:
    headers = {"content-type": "application/json"} | ({"authorization": header} if header else {})
    response = urllib3.request(method, stack.api_url + path, headers=headers, body=b"{}")
    assert response.status == 401
    body = response.json()
    assert body["error"] == "unauthorized"
    assert body["message"]


def test_health_needs_no_token(stack: Any) -> None:
    assert urllib3.request("GET", stack.api_url + "/health").json()["status"] == "ok"


def test_another_owner_sees_nothing_of_mine(
    stack: Any, client: Client, db: Any, tmp_path: Path, dataset_name: str
) -> None:
    # Given my import, and a token for somebody else
    job = import_bytes(client, tmp_path, b"a\n1\n", dataset_name)
    other = Client(stack.api_url, token=auth.create_token(db, "mallory"))
    # Then my job, dataset and history are "not found" for them, and absent from their lists
    for path in (f"/jobs/{job['job_id']}", f"/datasets/{dataset_name}/commits"):
        with pytest.raises(ApiError) as refused:
            other.call("GET", path)
        assert refused.value.http_status == 404
    with pytest.raises(ApiError) as refused:
        other.call("POST", f"/datasets/{dataset_name}/exports", {"format": "csv"})
    assert refused.value.http_status == 404
    assert job["job_id"] not in [j["job_id"] for j in other.call("GET", "/jobs")["jobs"]]
    assert dataset_name not in [d["name"] for d in other.call("GET", "/datasets")["datasets"]]


def test_token_create_issues_a_working_token(stack: Any, tmp_path: Path) -> None:
    # the command talks to the database directly, like a migration
    env = {"DATABASE_URL": stack.database_url}
    result = CliRunner(env=env).invoke(cli, ["token", "create", "--owner", "alice"])
    assert result.exit_code == 0, result.output
    token = result.output.strip()
    assert token.startswith("slw_")
    assert Client(stack.api_url, token=token).call("GET", "/datasets") == {"datasets": []}


def test_a_browser_page_authenticates_with_its_cookie(stack: Any) -> None:
    # Uppy's companion mode sends no Authorization header, only the page's cookie
    cookie = {"cookie": f"other=1; sluiceway_token={stack.local_token}"}
    assert urllib3.request("GET", stack.api_url + "/jobs", headers=cookie).status == 200
    forged = {"cookie": "sluiceway_token=slw_forged"}
    assert urllib3.request("GET", stack.api_url + "/jobs", headers=forged).status == 401


def test_the_page_route_never_serves_files_outside_web_dist(stack: Any) -> None:
    for path in ("/app/../pyproject.toml", "/app/%2e%2e/pyproject.toml", "/app/../../etc/passwd"):
        response = urllib3.request("GET", stack.api_url + path, redirect=False)
        assert response.status in (401, 404)  # a normalised path reaches the API, unauthorised
        assert b"[project]" not in response.data


def test_a_nul_character_in_a_query_or_body_is_a_clear_400(client: Client) -> None:
    for method, path, body in [
        ("GET", "/jobs?dataset=a%00b", None),
        (
            "POST",
            "/uploads",
            {"dataset": "d", "filename": "f.csv", "options": {"message": "a\x00b"}},
        ),
    ]:
        with pytest.raises(ApiError) as refused:
            client.call(method, path, body)
        assert refused.value.http_status == 400, refused.value.message
        assert refused.value.code == "invalid_request"


def test_concurrent_callers_never_see_each_others_data(
    stack: Any, client: Client, db: Any, tmp_path: Path, dataset_name: str
) -> None:
    # Given a dataset of mine, and another owner calling at the same moments as I do
    import_bytes(client, tmp_path, b"a\n1\n", dataset_name)
    other = Client(stack.api_url, token=auth.create_token(db, "eve"))

    def names(who: Client) -> list[list[str]]:
        return [[d["name"] for d in who.call("GET", "/datasets")["datasets"]] for _ in range(60)]

    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(16) as pool:
        mine = [pool.submit(names, client) for _ in range(8)]
        theirs = [pool.submit(names, other) for _ in range(8)]
        seen_by_me = [n for f in mine for n in f.result()]
        seen_by_them = [n for f in theirs for n in f.result()]

    # Then every answer was for its own caller (the local API once mixed up requests in flight)
    assert all(dataset_name in n for n in seen_by_me)
    assert all(n == [] for n in seen_by_them)


def test_a_presigned_part_url_is_for_one_part_of_one_key_and_expires(
    stack: Any, client: Client, db: Any, dataset_name: str
) -> None:
    from urllib.parse import parse_qs, urlsplit

    created = client.call(
        "POST", "/uploads", {"dataset": dataset_name, "filename": "../x.csv", "size": 10}
    )
    [part] = client.call("POST", f"/uploads/{created['upload_id']}/parts", {"part_numbers": [1]})[
        "parts"
    ]
    url = urlsplit(part["url"])
    query = parse_qs(url.query)
    # SigV4 signs the method, this path and this query: one part of one key, nothing else
    assert url.path == f"/{created['bucket']}/{created['key']}"
    assert created["key"].startswith(f"uploads/local/{created['upload_id']}/")
    assert query["uploadId"] == [created["s3_upload_id"]]
    assert query["partNumber"] == ["1"]
    assert query["X-Amz-Expires"] == [str(stack.settings.storage.presign_expiry_seconds)]
    assert "X-Amz-Signature" in query
    # and nobody else can have one signed for my upload
    other = Client(stack.api_url, token=auth.create_token(db, "trudy"))
    with pytest.raises(ApiError) as refused:
        other.call("POST", f"/uploads/{created['upload_id']}/parts", {"part_numbers": [1]})
    assert refused.value.http_status == 404
    client.call("DELETE", f"/uploads/{created['upload_id']}")
