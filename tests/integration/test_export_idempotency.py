"""An export request retried with the same Idempotency-Key gives one export, never two."""

from __future__ import annotations

import json
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import urllib3
from tests.conftest import import_bytes

from sluiceway.client import Client


def _post(stack: Any, dataset: str, body: dict[str, Any], key: str) -> urllib3.BaseHTTPResponse:
    return urllib3.request(
        "POST",
        f"{stack.api_url}/datasets/{dataset}/exports",
        body=json.dumps(body),
        headers={
            "authorization": f"Bearer {stack.local_token}",
            "content-type": "application/json",
            "idempotency-key": key,
        },
    )


def test_the_same_key_and_request_answer_with_the_first_export(
    stack: Any, client: Client, tmp_path: Path, dataset_name: str
) -> None:
    import_bytes(client, tmp_path, b"a,b\n1,2\n3,4\n", dataset_name)
    key = str(uuid.uuid4())
    body = {"format": "jsonl"}

    # When the request is sent again (a retry after a lost answer), and twice at the same moment
    first = _post(stack, dataset_name, body, key)
    with ThreadPoolExecutor(4) as pool:
        again = list(pool.map(lambda _: _post(stack, dataset_name, body, key), range(4)))

    # Then every answer names the one job, and there is one export job
    assert first.status == 202
    job_id = first.json()["job_id"]
    assert {r.status for r in again} == {202}
    assert {r.json()["job_id"] for r in again} == {job_id}
    listed = client.call("GET", f"/jobs?dataset={dataset_name}")["jobs"]
    assert [j["job_id"] for j in listed if j["run_type"] == "export"] == [job_id]


def test_the_same_key_with_another_request_is_a_conflict(
    stack: Any, client: Client, tmp_path: Path, dataset_name: str
) -> None:
    import_bytes(client, tmp_path, b"a,b\n1,2\n", dataset_name)
    key = str(uuid.uuid4())
    assert _post(stack, dataset_name, {"format": "csv"}, key).status == 202

    refused = _post(stack, dataset_name, {"format": "parquet"}, key)

    assert refused.status == 409
    assert "another request" in refused.json()["message"]
    # and a new key is a new export
    assert _post(stack, dataset_name, {"format": "csv"}, str(uuid.uuid4())).status == 202
