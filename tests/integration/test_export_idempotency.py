"""An export request retried with the same Idempotency-Key gives one export, never two."""

from __future__ import annotations

import json
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import urllib3
from tests.conftest import import_bytes

from sluiceway.client import Client


def _post(stack: Any, dataset: str, body: dict[str, Any], key: str) -> urllib3.BaseHTTPResponse:
    return _post_raw(stack, dataset, json.dumps(body), key)


def _post_raw(stack: Any, dataset: str, raw: str, key: str) -> urllib3.BaseHTTPResponse:
    return urllib3.request(
        "POST",
        f"{stack.api_url}/datasets/{dataset}/exports",
        body=raw,
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


@pytest.mark.parametrize(
    "number", ["1e23", "0.1", "1.0", "-0.0", "123456789012345678901234567890", "1E+2", "2.50"]
)
@pytest.mark.parametrize("shape", ["eq", "range"])
def test_a_retry_whose_filter_has_a_number_jsonb_rewrites_answers_with_the_first_export(
    stack: Any, client: Client, tmp_path: Path, dataset_name: str, number: str, shape: str
) -> None:
    # Given an export whose filter holds a number as the client wrote it
    import_bytes(client, tmp_path, b"a,v\n1,2\n", dataset_name)
    key = str(uuid.uuid4())
    value = number if shape == "eq" else '{"gte": ' + number + "}"
    raw = '{"format": "jsonl", "filter": {"v": ' + value + "}}"
    first = _post_raw(stack, dataset_name, raw, key)
    assert first.status == 202, first.data

    # When the same bytes are sent again (the stored options went through jsonb, which keeps
    # numbers as numeric: 1e23 came back as the integer 10**23, no longer the float)
    again = _post_raw(stack, dataset_name, raw, key)

    # Then the retry names the first job, not a 409
    assert again.status == 202, again.data
    assert again.json()["job_id"] == first.json()["job_id"]
