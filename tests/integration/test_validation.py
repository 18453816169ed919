"""Validation rules per import and per dataset, the rejected-rows report, and the sample check."""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path
from typing import Any

import psycopg
import pytest
from test_diff_structure import _lists
from test_import_failures import BAD_FILES
from tests.conftest import import_bytes, main_commit

from sluiceway.client import ApiError, Client

Conn = psycopg.Connection[dict[str, Any]]

GOOD = b"id,name\n1,a\n2,b\n"
ID_INTEGER = {"columns": {"id": {"type": "integer", "nullable": False}}}
# a sample of one record only: these tests are about the load's rejects, not the sample check
LOAD_ONLY = {"sample_records": 1}


def _rows(client: Client, dataset: str) -> list[dict[str, Any]]:
    page = client.call("GET", f"/datasets/{dataset}/rows?limit=1000")
    return [r.get("data", r) for r in page["rows"]]


def _report(client: Client, job: dict[str, Any]) -> list[dict[str, Any]]:
    """The job's rejected-rows report, read from S3 through the link GET /jobs/{id} gives."""
    found = client.call("GET", f"/jobs/{job['job_id']}")
    assert found["report_url"], found
    with urllib.request.urlopen(found["report_url"]) as answer:
        return [json.loads(line) for line in answer.read().decode().splitlines()]


def _given_main(client: Client, db: Conn, tmp_path: Path, dataset: str) -> str:
    job = import_bytes(client, tmp_path / "first", GOOD, dataset)
    assert job["status"] == "completed", job["error_message"]
    head = main_commit(db, dataset)
    assert head is not None
    return head


# -- each rule, kept and broken ------------------------------------------------------------------


def test_max_file_bytes_refuses_the_upload_and_allows_a_small_file(
    client: Client, tmp_path: Path, dataset_name: str
) -> None:
    with pytest.raises(ApiError) as refused:
        import_bytes(client, tmp_path, GOOD, dataset_name, rules={"max_file_bytes": 10})
    assert refused.value.http_status == 413
    assert "max_file_bytes" in str(refused.value)
    job = import_bytes(client, tmp_path, GOOD, dataset_name, rules={"max_file_bytes": 100})
    assert job["status"] == "completed", job["error_message"]


def test_a_dataset_rule_applies_to_every_import(
    client: Client, db: Conn, tmp_path: Path, dataset_name: str
) -> None:
    # Given a dataset that allows CSV only (set before its first import)
    client.call("PUT", f"/datasets/{dataset_name}/rules", {"allowed_formats": ["csv"]})
    assert client.call("GET", f"/datasets/{dataset_name}/rules")["rules"] == {
        "allowed_formats": ["csv"]
    }
    # Then a JSON Lines file (detected as such) fails at planning, and a CSV imports
    job = import_bytes(client, tmp_path, b'{"id": 1}\n', dataset_name, filename="d.jsonl")
    assert job["status"] == "failed"
    assert (
        "d.jsonl is jsonl; the rules of this import allow only csv (allowed_formats)"
        in (job["error_message"])
    )
    assert main_commit(db, dataset_name) is None
    assert import_bytes(client, tmp_path, GOOD, dataset_name)["status"] == "completed"


def test_min_records(client: Client, db: Conn, tmp_path: Path, dataset_name: str) -> None:
    before = _given_main(client, db, tmp_path, dataset_name)
    job = import_bytes(client, tmp_path, b"id,name\n3,c\n", dataset_name, rules={"min_records": 2})
    assert job["status"] == "failed"
    assert (
        "1 records were accepted; the rules ask for at least 2 (min_records)"
        in (job["error_message"])
    )
    assert main_commit(db, dataset_name) == before
    kept = import_bytes(client, tmp_path, GOOD, dataset_name, rules={"min_records": 2})
    assert kept["status"] == "completed", kept["error_message"]


def test_required_columns(client: Client, db: Conn, tmp_path: Path, dataset_name: str) -> None:
    before = _given_main(client, db, tmp_path, dataset_name)
    job = import_bytes(
        client, tmp_path, GOOD, dataset_name, rules={"required_columns": ["id", "email"]}
    )
    assert job["status"] == "failed"
    assert "data.csv: required column(s) 'email' are not in the file" in job["error_message"]
    assert main_commit(db, dataset_name) == before
    kept = import_bytes(client, tmp_path, GOOD, dataset_name, rules={"required_columns": ["id"]})
    assert kept["status"] == "completed", kept["error_message"]


@pytest.mark.parametrize("chunk_bytes", [None, 1])
def test_a_type_break_fails_the_import_and_the_report_says_why(
    client: Client, db: Conn, tmp_path: Path, dataset_name: str, chunk_bytes: int | None
) -> None:
    before = _given_main(client, db, tmp_path, dataset_name)
    data = b"id,name\n3,c\nfour,d\n5,e\n"  # line 3 starts at byte 12
    job = import_bytes(
        client,
        tmp_path,
        data,
        dataset_name,
        chunk_bytes=chunk_bytes,
        rules={**ID_INTEGER, **LOAD_ONLY},
    )
    assert job["status"] == "failed"
    message = job["error_message"]
    assert "data.csv: 1 of 3 records were rejected (tolerated: 0)" in message, message
    assert "line 3 (byte 12), column 'id': 'four': not a valid integer for column 'id'" in message
    assert main_commit(db, dataset_name) == before
    summary, *lines = _report(client, job)
    assert summary["outcome"] == "failed"
    assert summary["reason"] == message
    assert (summary["accepted"], summary["rejected"]) == (2, 1)
    assert lines == [
        {
            "line": 3,
            "byte_offset": 12,
            "column": "id",
            "reason": "'four': not a valid integer for column 'id'",
            "raw": "four,d\n",
        }
    ]


@pytest.mark.parametrize("chunk_bytes", [None, 1, 9])
def test_tolerated_rejects_commit_the_good_rows_and_report_the_bad(
    client: Client, tmp_path: Path, dataset_name: str, chunk_bytes: int | None
) -> None:
    # Given a file with a non-integer id, an empty id, and a record with too many fields
    data = b'id,name\n1,a\nx,b\n3,c\n,d\n5,e,extra\n6,"f\ng"\n'
    rules = {
        "columns": {"id": {"type": "integer", "nullable": False}},
        "max_errors": 3,
        **LOAD_ONLY,
    }
    job = import_bytes(client, tmp_path, data, dataset_name, chunk_bytes=chunk_bytes, rules=rules)
    # Then the good rows are committed and the others are in the report, in file order
    assert job["status"] == "completed", job["error_message"]
    summary = job["output_summary"]
    assert (summary["accepted_rows"], summary["rejected_rows"], summary["rows"]) == (3, 3, 3)
    assert sorted(r["id"] for r in _rows(client, dataset_name)) == ["1", "3", "6"]
    head, *lines = _report(client, job)
    assert head["outcome"] == "committed"
    assert (head["accepted"], head["rejected"], head["tolerated"]) == (3, 3, 3)
    assert [(x["line"], x["byte_offset"], x["column"]) for x in lines] == [
        (3, 12, "id"),
        (5, 20, "id"),
        (6, 23, None),
    ]
    assert lines[1]["reason"] == "no value: no value in column 'id', which may not be empty"
    assert lines[2]["reason"] == "has 3 field(s); the header has 2."
    assert lines[2]["raw"] == "5,e,extra\n"
    # the job (GET /jobs/{id}) counts them too
    found = client.call("GET", f"/jobs/{job['job_id']}")
    assert found["progress"]["rejected_rows"] == 3


def test_a_percentage_tolerance_over_and_under_the_limit(
    client: Client, db: Conn, tmp_path: Path, dataset_name: str
) -> None:
    before = _given_main(client, db, tmp_path, dataset_name)
    rows = [f"{i},n{i}" for i in range(1, 21)]
    rows[4] = "bad,n5"
    under = ("id,name\n" + "\n".join(rows) + "\n").encode()
    rules = {**ID_INTEGER, "max_error_percent": 5, **LOAD_ONLY}  # 1 of 20 tolerated
    job = import_bytes(client, tmp_path, under, dataset_name, chunk_bytes=30, rules=rules)
    assert job["status"] == "completed", job["error_message"]
    assert job["output_summary"]["rejected_rows"] == 1
    after_under = main_commit(db, dataset_name)
    assert after_under != before

    rows[9] = "worse,n10"
    over = ("id,name\n" + "\n".join(rows) + "\n").encode()
    job = import_bytes(client, tmp_path, over, dataset_name, chunk_bytes=30, rules=rules)
    assert job["status"] == "failed"
    assert "2 of 20 records were rejected (tolerated: 1)" in job["error_message"]
    assert main_commit(db, dataset_name) == after_under
    summary, *lines = _report(client, job)
    assert summary["outcome"] == "failed"
    assert "tolerated: 1" in summary["reason"]
    assert [x["line"] for x in lines] == [6, 11]


def test_unique_key(client: Client, db: Conn, tmp_path: Path, dataset_name: str) -> None:
    before = _given_main(client, db, tmp_path, dataset_name)
    rules = {"unique_key": ["id"]}
    job = import_bytes(
        client, tmp_path, b"id,name\n1,a\n2,b\n1,c\n", dataset_name, chunk_bytes=6, rules=rules
    )
    assert job["status"] == "failed"
    assert "the unique key id is not unique: '1' (2 times)" in job["error_message"]
    assert main_commit(db, dataset_name) == before
    # an append must not repeat a key main already has
    job = import_bytes(
        client, tmp_path, b"id,name\n2,z\n", dataset_name, mode="append", rules=rules
    )
    assert job["status"] == "failed"
    assert "'2' (2 times)" in job["error_message"]
    kept = import_bytes(
        client, tmp_path, b"id,name\n3,c\n", dataset_name, mode="append", rules=rules
    )
    assert kept["status"] == "completed", kept["error_message"]


def test_a_retried_range_reports_its_rows_once(
    client: Client, tmp_path: Path, dataset_name: str
) -> None:
    # Given a load that fails after writing its report (and is retried by the state machine)
    data = b"id,name\n1,a\nx,b\n3,c\ny,d\n"
    rules = {**ID_INTEGER, "max_errors": 5, **LOAD_ONLY}
    job = import_bytes(client, tmp_path, data, dataset_name, rules=rules, faults={"load": 1})
    assert job["status"] == "completed", job["error_message"]
    # Then each rejected row is in the report exactly once
    _, *lines = _report(client, job)
    assert [x["line"] for x in lines] == [3, 5]
    assert job["output_summary"]["rejected_rows"] == 2


def test_json_lines_rule_breaks_name_their_line(
    client: Client, tmp_path: Path, dataset_name: str
) -> None:
    data = b'{"id": 1}\n\n{"id": "one"}\n{"id": 3}\n'
    rules = {**ID_INTEGER, "max_errors": 1, **LOAD_ONLY}
    job = import_bytes(client, tmp_path, data, dataset_name, filename="d.jsonl", rules=rules)
    assert job["status"] == "completed", job["error_message"]
    _, line = _report(client, job)
    assert (line["line"], line["byte_offset"], line["column"]) == (3, 11, "id")
    assert line["raw"] == '{"id": "one"}'


# -- the quick sample check ----------------------------------------------------------------------


def test_the_sample_check_fails_the_wrong_file_before_loading(
    client: Client, db: Conn, tmp_path: Path, dataset_name: str
) -> None:
    before = _given_main(client, db, tmp_path, dataset_name)
    # a file of names where the rules want integer ids
    wrong = b"id,name\n" + b"".join(f"n{i},x\n".encode() for i in range(50))
    job = import_bytes(client, tmp_path, wrong, dataset_name, chunk_bytes=64, rules=ID_INTEGER)
    assert job["status"] == "failed"
    message = job["error_message"]
    assert message.startswith("data.csv: 50 of the first 50 records break the rules"), message
    assert "the first is line 2 (byte 8), 'n0': not a valid integer for column 'id'" in message
    assert "Is this the right file?" in message
    # nothing was loaded: the planner stopped it
    chunks = db.execute(
        "SELECT count(*) AS n FROM dsa_jobs.import_chunks WHERE job_id = %s", (job["job_id"],)
    ).fetchone()
    assert chunks == {"n": 0}
    assert main_commit(db, dataset_name) == before


def test_the_sample_check_honours_the_tolerance(
    client: Client, tmp_path: Path, dataset_name: str
) -> None:
    data = b"id,name\nx,a\n" + b"".join(f"{i},b\n".encode() for i in range(2, 12))
    # 1 bad of 11 sampled with 10% tolerated: the sample passes, the load rejects the row
    rules = {**ID_INTEGER, "max_error_percent": 10}
    job = import_bytes(client, tmp_path, data, dataset_name, rules=rules)
    assert job["status"] == "completed", job["error_message"]
    assert job["output_summary"]["rejected_rows"] == 1


@pytest.mark.parametrize("chunk_bytes", [None, 7])
def test_json_lines_that_cannot_be_read_are_rejected_when_tolerated(
    client: Client, tmp_path: Path, dataset_name: str, chunk_bytes: int | None
) -> None:
    # line 2 is not JSON, line 4 is not an object; line 5 breaks the type rule
    data = b'{"id": 1}\n{"id": 2,\n{"id": 3}\n[4]\n{"id": "v"}\n{"id": 6}\n'
    rules = {**ID_INTEGER, "max_errors": 3, **LOAD_ONLY}
    job = import_bytes(
        client,
        tmp_path,
        data,
        dataset_name,
        filename="d.jsonl",
        chunk_bytes=chunk_bytes,
        rules=rules,
    )
    assert job["status"] == "completed", job["error_message"]
    assert sorted(r["id"] for r in _rows(client, dataset_name)) == ["1", "3", "6"]
    _, *lines = _report(client, job)
    assert [(x["line"], x["byte_offset"], x["column"]) for x in lines] == [
        (2, 10, None),
        (4, 30, None),
        (5, 34, "id"),
    ]
    assert lines[0]["reason"].startswith("is not valid JSON")
    assert "the record is a JSON array, not an object" in lines[1]["reason"]
    assert lines[1]["raw"] == "[4]"
    # without a tolerance the same file fails as it always did
    strict = import_bytes(client, tmp_path, data, dataset_name, filename="d.jsonl")
    assert strict["status"] == "failed"
    assert "d.jsonl: line 2 (byte 10) is not valid JSON" in strict["error_message"]


def test_a_workbook_row_that_breaks_a_rule_is_reported_by_sheet_and_row(
    client: Client, tmp_path: Path, dataset_name: str
) -> None:
    import io

    import openpyxl

    book = openpyxl.Workbook()
    sheet = book.active
    assert sheet is not None
    sheet.title = "Orders"
    for row in (["id", "name"], [1, "a"], ["two", "b"], [3, "c"]):
        sheet.append(row)
    out = io.BytesIO()
    book.save(out)
    rules = {**ID_INTEGER, "max_errors": 1}
    job = import_bytes(
        client, tmp_path, out.getvalue(), dataset_name, filename="o.xlsx", rules=rules
    )
    assert job["status"] == "completed", job["error_message"]
    _, line = _report(client, job)
    assert (line["row_id"], line["column"]) == ("Orders:3", "id")
    assert json.loads(line["raw"]) == {"id": "two", "name": "b"}


@pytest.mark.parametrize("case", sorted(BAD_FILES))
def test_every_malformed_record_becomes_a_rejected_row_when_tolerated(
    client: Client, tmp_path: Path, dataset_name: str, case: str
) -> None:
    # the files that fail an import without a tolerance (test_import_failures.py)
    data, line, _, reason = BAD_FILES[case]
    job = import_bytes(client, tmp_path, data, dataset_name, rules={"max_errors": 1})
    assert job["status"] == "completed", job["error_message"]
    assert job["output_summary"]["rejected_rows"] == 1
    _, rejected = _report(client, job)
    assert rejected["line"] == line
    assert rejected["column"] is None
    assert reason in rejected["reason"]
    assert _rows(client, dataset_name)[0]["id"] == "1"


def test_a_line_ending_unlike_the_others_is_rejected_when_tolerated(
    client: Client, tmp_path: Path, dataset_name: str
) -> None:
    data = b"id,name\n1,a\n2,b\r\n3,c\n4,d\n"
    job = import_bytes(client, tmp_path, data, dataset_name, rules={"max_errors": 1})
    assert job["status"] == "completed", job["error_message"]
    assert [r["id"] for r in _rows(client, dataset_name)] == ["1", "3", "4"]
    _, rejected = _report(client, job)
    assert (rejected["line"], rejected["byte_offset"]) == (3, 12)
    assert rejected["reason"] == "ends with CR LF but the other lines with LF"


def test_uppy_metadata_carries_rules(client: Client, dataset_name: str) -> None:
    metadata = {"dataset": dataset_name, "size": "100", "rules": '{"max_file_bytes": 10}'}
    with pytest.raises(ApiError) as refused:
        client.call("POST", "/uploads/s3/multipart", {"filename": "a.csv", "metadata": metadata})
    assert refused.value.http_status == 413
    assert "max_file_bytes" in refused.value.message
    with pytest.raises(ApiError) as bad:
        client.call(
            "POST",
            "/uploads/s3/multipart",
            {"filename": "a.csv", "metadata": {"dataset": dataset_name, "rules": "{nope"}},
        )
    assert bad.value.http_status == 400
    assert "metadata.rules is not JSON" in bad.value.message


def test_rules_are_checked_when_set(client: Client, dataset_name: str) -> None:
    with pytest.raises(ApiError) as refused:
        client.call(
            "PUT",
            f"/datasets/{dataset_name}/rules",
            {"columns": {"id": {"type": "uuid"}}, "allowed_formats": ["csv", "doc"]},
        )
    assert refused.value.http_status == 422
    assert "columns.id.type" in refused.value.message
    assert "unknown format(s) doc" in refused.value.message
    with pytest.raises(ApiError) as missing:
        client.call("GET", f"/datasets/{dataset_name}/rules")
    assert missing.value.http_status == 404


def test_the_cli_imports_with_rules_and_points_at_the_report(
    stack: Any, tmp_path: Path, dataset_name: str
) -> None:
    from click.testing import CliRunner

    from sluiceway.cli import cli

    src = tmp_path / "people.csv"
    src.write_bytes(b"id,name\n1,a\nx,b\n3,c\n")
    rules = json.dumps({**ID_INTEGER, **LOAD_ONLY})
    base = ["--api", stack.api_url, "--token", stack.local_token, "import", str(src)]
    done = CliRunner().invoke(
        cli, [*base, "-d", dataset_name, "--rules", rules, "--max-errors", "1", "--json"]
    )
    assert done.exit_code == 0, done.output
    result = json.loads(done.stdout)
    assert (result["rows"], result["accepted_rows"], result["rejected_rows"]) == (2, 2, 1)
    assert result["report_key"].endswith(".jsonl")
    # over the tolerance (none given): the command fails and says why
    failed = CliRunner().invoke(cli, [*base, "-d", dataset_name, "--rules", rules])
    assert failed.exit_code == 1
    said = " ".join(failed.output.split())  # the console wraps lines at its width
    assert "import failed (rules_broken)" in said
    assert "1 of 3 records were rejected (tolerated: 0)" in said


def test_rows_taken_out_by_the_rules_leave_the_tree_of_the_rows_kept(
    client: Client, db: Conn, tmp_path: Path, dataset_name: str
) -> None:
    # Given a file where every 10th record breaks the id's type, and the same file without them
    # (a range's rows are cut into leaves by their order; the rejected ones leave gaps in it)
    records = [f"{i if i % 10 else 'x'},name {i}" for i in range(1, 6001)]
    kept = [r for r in records if not r.startswith("x")]
    rules = {**ID_INTEGER, "max_errors": 1000, **LOAD_ONLY}
    with_rejects = import_bytes(
        client,
        tmp_path / "a",
        ("id,name\n" + "\n".join(records) + "\n").encode(),
        dataset_name,
        chunk_bytes=20_000,
        rules=rules,
    )
    clean = import_bytes(
        client,
        tmp_path / "b",
        ("id,name\n" + "\n".join(kept) + "\n").encode(),
        dataset_name + "-clean",
        chunk_bytes=20_000,
        rules=rules,
    )
    # Then both commits hold the kept rows in the same leaves and lists
    assert with_rejects["status"] == clean["status"] == "completed"
    assert with_rejects["output_summary"]["rejected_rows"] == 600
    a, b = (_lists(db, j["output_summary"]["commit_id"]) for j in (with_rejects, clean))
    assert len(a) > 1
    assert a == b
