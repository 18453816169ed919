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


def test_a_boolean_filter_matches_every_spelling_of_true_or_false_on_a_boolean_column(
    client: Client, tmp_path: Path, dataset_name: str
) -> None:
    # Given a boolean column (its schema's type) whose values spell true and false many ways
    data = b"id,ok\n1,true\n2,no\n3,Y\n4,\n5,FALSE\n6,1\n7,0\n8, yes \n9,t\n"
    import_bytes(client, tmp_path, data, dataset_name)
    schema = client.call("GET", f"/datasets/{dataset_name}")["schema"]
    assert {c["name"]: c["type"] for c in schema}["ok"] == "boolean"

    # When it is exported with {"ok": true}, then with {"ok": false} (true compared as 1)
    kept = {
        wanted: run_export(client, dataset_name, format="jsonl", filter={"ok": wanted})
        for wanted in (True, False)
    }

    # Then each export holds the rows whose value means it, as the text imported; not the empty
    for status in kept.values():
        assert status["status"] == "completed", status["error"]
    assert exported_records(kept[True]) == [
        {"id": i, "ok": v}
        for i, v in [("1", "true"), ("3", "Y"), ("6", "1"), ("8", " yes "), ("9", "t")]
    ]
    assert exported_records(kept[False]) == [
        {"id": i, "ok": v} for i, v in [("2", "no"), ("5", "FALSE"), ("7", "0")]
    ]


@pytest.mark.parametrize("wanted", [True, False])
@pytest.mark.parametrize("column", ["n", "s"])
def test_a_boolean_filter_on_a_column_that_is_not_boolean_is_refused_naming_it(
    stack: Any, client: Client, tmp_path: Path, dataset_name: str, column: str, wanted: bool
) -> None:
    # Given an integer column of 0 and 1 and a text column that spells true and false
    import_bytes(client, tmp_path, b"id,n,s\n1,1,true\n2,0,false\n3,2,maybe\n", dataset_name)

    # When a boolean is its filter (it compared with 1: n's 1, none of s)
    refused = _post(stack, dataset_name, json.dumps({"filter": {column: wanted}}))

    # Then the request is refused, as an unknown column is, naming the filter and the type
    assert refused.status == 400, refused.data
    body = refused.json()
    assert body["error"] == "invalid_request"
    assert f"filter.{column}" in body["message"]
    assert ("integer" if column == "n" else "text") in body["message"]


@pytest.mark.parametrize("bound", ["eq", "gt", "gte", "lt", "lte"])
@pytest.mark.parametrize("wanted", [True, False])
def test_a_boolean_bound_of_a_range_is_refused_naming_the_filter(
    stack: Any, client: Client, tmp_path: Path, dataset_name: str, bound: str, wanted: bool
) -> None:
    import_bytes(client, tmp_path, b"id,ok\n1,true\n2,false\n", dataset_name)

    # (true was taken as 1: gte true kept every value numeric 1 or more)
    refused = _post(stack, dataset_name, json.dumps({"filter": {"ok": {bound: wanted}}}))

    assert refused.status == 422, refused.data
    message = refused.json()["message"]
    assert "filter.ok" in message
    assert "true or false" in message


@pytest.mark.parametrize("raw", ['"5"', "true", '" 5"'])
def test_part_rows_that_is_not_a_json_integer_is_refused(
    stack: Any, client: Client, tmp_path: Path, dataset_name: str, raw: str
) -> None:
    import_bytes(client, tmp_path, b"id\n1\n2\n", dataset_name)

    # (a string of digits was read as the number, and true as 1)
    refused = _post(stack, dataset_name, '{"part_rows": ' + raw + "}")

    assert refused.status == 422, refused.data
    body = refused.json()
    assert body["error"] == "invalid_request"
    assert "part_rows" in body["message"]
    assert "integer" in body["message"]


def test_a_commit_exports_part_rows_that_is_not_a_json_integer_is_refused_and_keeps_the_setting(
    stack: Any, client: Client, tmp_path: Path, dataset_name: str
) -> None:
    # Given a dataset whose new commits are exported in parts of 10 rows
    import_bytes(client, tmp_path, b"id\n1\n", dataset_name)
    path = f"/datasets/{dataset_name}/commit-exports"
    client.call("PUT", path, {"formats": ["csv"], "part_rows": 10})

    # When the setting is sent again with part_rows as a string
    refused = urllib3.request(
        "PUT",
        f"{stack.api_url}{path}",
        body=json.dumps({"formats": ["csv"], "part_rows": "5"}),
        headers={
            "authorization": f"Bearer {stack.local_token}",
            "content-type": "application/json",
        },
    )

    # Then it is refused, naming the field, and the setting stored before is unchanged
    assert refused.status == 422, refused.data
    assert "part_rows" in refused.json()["message"]
    assert client.call("GET", path)["commit_exports"]["part_rows"] == 10
