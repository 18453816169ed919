"""Export requests with hostile values: a clear 4xx that says what was wrong, never a 500 or
a filter silently dropped."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import urllib3
from tests.conftest import import_bytes

from sluiceway.client import Client


def _post(stack: Any, dataset: str, raw: str) -> urllib3.BaseHTTPResponse:
    return urllib3.request(
        "POST",
        f"{stack.api_url}/datasets/{dataset}/exports",
        body=raw,
        headers={
            "authorization": f"Bearer {stack.local_token}",
            "content-type": "application/json",
        },
    )


@pytest.mark.parametrize("bound", ["eq", "gt", "gte", "lt", "lte"])
def test_a_null_bound_of_a_range_is_refused_not_silently_dropped(
    stack: Any, client: Client, tmp_path: Path, dataset_name: str, bound: str
) -> None:
    # Given a dataset with one empty value among three
    import_bytes(client, tmp_path, b"id,v\n1,a\n2,\n3,c\n", dataset_name)

    # When a range's bound is null (it was dropped, and every row exported)
    refused = _post(stack, dataset_name, json.dumps({"filter": {"v": {bound: None}}}))

    # Then the request is refused, naming the column and saying how to match empty values
    assert refused.status == 422, refused.data
    message = refused.json()["message"]
    assert "filter.v" in message
    assert "null" in message


@pytest.mark.parametrize("field", ["part_rows", "filter"])
def test_a_number_too_long_to_read_is_a_400_not_a_500(
    stack: Any, client: Client, tmp_path: Path, dataset_name: str, field: str
) -> None:
    import_bytes(client, tmp_path, b"id\n1\n", dataset_name)
    huge = "1" + "0" * 5000  # past Python's 4,300 digits for an int read from text
    value = huge if field == "part_rows" else '{"id": ' + huge + "}"

    answer = _post(stack, dataset_name, f'{{"{field}": {value}}}')

    assert answer.status == 400, answer.data
    body = answer.json()
    assert body["error"] == "invalid_request"
    assert "digits" in body["message"]
