"""Export requests with hostile values: a clear 4xx that says what was wrong, never a 500 or
a filter silently dropped."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import urllib3
from tests.conftest import import_bytes
from tests.integration.export_support import exported_records, run_export

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


def test_a_numeric_filter_skips_a_value_numeric_cannot_hold_not_the_whole_export(
    client: Client, tmp_path: Path, dataset_name: str
) -> None:
    # Given a text column whose values look like numbers, two of them past numeric's exponent
    data = b"id,v\n1,1e131072\n2,5\n3,1e-20000\n4,x\n5,0.5\n"
    import_bytes(client, tmp_path, data, dataset_name)

    # When it is exported with a numeric range on that column (the cast of '1e131072' raised
    # "value overflows numeric format" and failed every part)
    status = run_export(client, dataset_name, format="jsonl", filter={"v": {"gt": 1}})

    # Then the export completed with exactly the rows that are numbers over 1
    assert status["status"] == "completed", status["error"]
    assert [r["id"] for r in exported_records(status)] == ["2"]


@pytest.mark.parametrize("raw", ["NaN", "Infinity", "-Infinity", "1e400", '{"gt": NaN}'])
def test_a_filter_number_that_is_not_finite_is_refused_naming_the_filter(
    stack: Any, client: Client, tmp_path: Path, dataset_name: str, raw: str
) -> None:
    import_bytes(client, tmp_path, b"id,v\n1,2\n", dataset_name)

    # (Python's json reads NaN and Infinity, and 1e400 as inf: they used to reach the job's
    # JSON parameters and fail there, with a message that named no field)
    answer = _post(stack, dataset_name, '{"filter": {"v": ' + raw + "}}")

    assert answer.status == 422, answer.data
    assert "filter.v" in answer.json()["message"]
