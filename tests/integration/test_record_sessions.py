"""Chunked record sessions (seed 002): numbered batches of records, imported as one file."""

from __future__ import annotations

import csv
import io
import json
import uuid
from typing import Any

import pytest

from sluiceway import auth
from sluiceway.client import ApiError, Client


def _rows_of(client: Client, dataset: str) -> list[list[str]]:
    """The dataset's main, exported as CSV, parsed (header first)."""
    status, urls = client.run_export(dataset, {"format": "csv"}, poll_seconds=0.05)
    assert urls is not None, status
    out = io.BytesIO()
    client.download_export(urls, out)
    text = out.getvalue().decode()
    return list(csv.reader(io.StringIO(text, newline="")))


def _post_chunk(client: Client, session_id: str, body: dict[str, Any]) -> tuple[int, Any]:
    response = client.http.request(
        "POST",
        f"{client.base_url}/sessions/{session_id}/chunks",
        headers=client.headers,
        body=json.dumps(body),
    )
    return response.status, response.json()


def test_three_chunks_one_resent_import_exactly_those_rows_in_order(
    client: Client, dataset_name: str
) -> None:
    # Given a session of three chunks
    opened = client.call("POST", "/sessions", {"dataset": dataset_name, "total_chunks": 3})
    sid = opened["session_id"]
    assert opened["missing"] == [1, 2, 3]
    chunk1 = [
        {"id": 1, "name": "Ada", "note": None},
        {"id": 2, "name": 'quote " and, comma', "note": ""},
    ]
    chunk2_wrong = [{"id": 99, "name": "wrong", "note": "x"}]
    chunk2 = [{"note": "multi\nline", "id": 3, "name": "Grace"}]  # keys in another order
    chunk3_csv = 'id,name,note\n4,Linus,"a, b"\n5,Margaret,\n'
    # When chunk 2 arrives first (a wrong version), then 1, then 2 again, then 3 as CSV text
    status, body = _post_chunk(client, sid, {"chunk_number": 2, "records": chunk2_wrong})
    assert status == 202
    assert (body["missing"], body["progress"], body["next_chunk"]) == ([1, 3], 33.3, 1)
    status, body = _post_chunk(client, sid, {"chunk_number": 1, "records": chunk1})
    assert (status, body["missing"]) == (202, [3])
    status, body = _post_chunk(client, sid, {"chunk_number": 2, "records": chunk2})
    assert (status, body["missing"]) == (202, [3])
    status, body = _post_chunk(client, sid, {"chunk_number": 3, "csv": chunk3_csv})
    # Then the last chunk commits the session and starts the import
    assert status == 200, body
    assert body["status_url"] == f"/jobs/{body['job_id']}"
    assert body["total_records"] == 5
    job = client.wait_for_job(body["job_id"], poll_seconds=0.1, timeout=120)
    assert job["status"] == "completed", job["error_message"]
    assert job["output_summary"]["rows"] == 5
    assert _rows_of(client, dataset_name) == [
        ["id", "name", "note"],
        ["1", "Ada", ""],
        ["2", 'quote " and, comma', ""],
        ["3", "Grace", "multi\nline"],
        ["4", "Linus", "a, b"],
        ["5", "Margaret", ""],
    ]
    # and the session says so; a chunk after the commit is refused
    session = client.call("GET", f"/sessions/{sid}")
    assert (session["status"], session["job_id"], session["missing"]) == (
        "committed",
        body["job_id"],
        [],
    )
    status, refused = _post_chunk(client, sid, {"chunk_number": 3, "csv": "id,name,note\n6,X,\n"})
    assert status == 409
    assert "committed" in refused["message"]
    # except the very chunk that committed it, sent again (its answer was lost): same answer
    status, again = _post_chunk(client, sid, {"chunk_number": 3, "csv": chunk3_csv})
    assert (status, again["job_id"]) == (200, body["job_id"])
    imports = [
        j
        for j in client.call("GET", f"/jobs?dataset={dataset_name}")["jobs"]
        if j["run_type"] == "import"
    ]
    assert [j["job_id"] for j in imports] == [body["job_id"]]


def test_null_and_empty_string_stay_apart(client: Client, db: Any, dataset_name: str) -> None:
    sid = client.call("POST", "/sessions", {"dataset": dataset_name})["session_id"]
    records = [{"a": None, "b": ""}, {"a": "x", "b": True}]
    assert _post_chunk(client, sid, {"chunk_number": 1, "records": records})[0] == 202
    done = client.call("POST", f"/sessions/{sid}/commit")
    job = client.wait_for_job(done["job_id"], poll_seconds=0.1, timeout=120)
    assert job["status"] == "completed", job["error_message"]
    vals = db.execute(
        "SELECT s.vals FROM dsa_core.commit_row_range(%s, 1, NULL) r "
        "JOIN dsa_core.row_store s ON s.row_hash = r.row_hash ORDER BY r.row_number",
        (job["output_summary"]["commit_id"],),
    ).fetchall()
    assert [v["vals"] for v in vals] == [[None, ""], ["x", "true"]]


def test_seed_002_style_client_chosen_session(client: Client, dataset_name: str) -> None:
    # The seed's client makes up the session id and sends chunk_data with the total
    sid = str(uuid.uuid4())
    first = {"chunk_number": 1, "total_chunks": 2, "dataset": dataset_name}
    status, body = _post_chunk(client, sid, first | {"chunk_data": [{"t": "a"}, {"t": "b"}]})
    assert status == 202
    assert (body["session_id"], body["progress"], body["next_chunk"]) == (sid, 50.0, 2)
    status, body = _post_chunk(client, sid, {"chunk_number": 2, "chunk_data": [{"t": "c"}]})
    assert status == 200
    job = client.wait_for_job(body["job_id"], poll_seconds=0.1, timeout=120)
    assert job["status"] == "completed", job["error_message"]
    assert _rows_of(client, dataset_name) == [["t"], ["a"], ["b"], ["c"]]


def test_a_gap_at_commit_is_409_and_the_session_says_what_is_missing(
    client: Client, dataset_name: str
) -> None:
    sid = client.call("POST", "/sessions", {"dataset": dataset_name})["session_id"]
    for n in (1, 3):
        assert _post_chunk(client, sid, {"chunk_number": n, "records": [{"a": n}]})[0] == 202
    with pytest.raises(ApiError) as refused:
        client.call("POST", f"/sessions/{sid}/commit")
    assert refused.value.http_status == 409
    assert "[2]" in refused.value.message
    assert client.call("GET", f"/sessions/{sid}")["missing"] == [2]
    # and once it arrives, the commit goes through
    assert _post_chunk(client, sid, {"chunk_number": 2, "records": [{"a": 2}]})[0] == 202
    done = client.call("POST", f"/sessions/{sid}/commit")
    job = client.wait_for_job(done["job_id"], poll_seconds=0.1, timeout=120)
    assert _rows_of(client, dataset_name) == [["a"], ["1"], ["2"], ["3"]], job


@pytest.mark.parametrize(
    ("second", "status", "words"),
    [
        ({"records": [{"a": 1, "c": 2}]}, 422, "missing: ['b']"),
        ({"records": [{"a": 1}]}, 422, "missing: ['b']"),
        ({"records": [{"a": 1, "b": 2, "z": 3}]}, 422, "not expected: ['z']"),
        ({"csv": "b,a\n1,2\n"}, 422, "same order"),
        ({"csv": "a,b\n1,2,3\n"}, 422, "3 field(s)"),
        ({"csv": 'a,b\n1,"open\n'}, 422, "not valid CSV"),
        ({"records": [{"a": 1, "b": "nul\u0000"}]}, 422, "NUL"),
        ({"records": [{"a": 1, "b": "lone \ud800"}]}, 422, "record 1, column 'b'"),
        ({"records": [{"a": 1, "b": {"deep": ["\udfff"]}}]}, 422, "not valid Unicode"),
        ({"records": [{"a": 1, "b": 2}], "csv": "a,b\n"}, 422, "either records"),
        ({"records": []}, 422, "records"),
        ({"records": [1, 2]}, 422, "records"),
        ({"records": [{"a": 1, "b": 2}], "total_chunks": 1}, 409, "outside 1..1"),
    ],
)
def test_a_bad_second_chunk_is_refused_and_changes_nothing(
    client: Client, dataset_name: str, second: dict[str, Any], status: int, words: str
) -> None:
    sid = client.call("POST", "/sessions", {"dataset": dataset_name})["session_id"]
    assert _post_chunk(client, sid, {"chunk_number": 1, "records": [{"a": 0, "b": 0}]})[0] == 202
    got, body = _post_chunk(client, sid, {"chunk_number": 2, **second})
    assert got == status, body
    assert words in body["message"]
    session = client.call("GET", f"/sessions/{sid}")
    assert (session["received"], session["records"], session["status"]) == ([1], 1, "open")


@pytest.mark.parametrize(
    ("first", "words"),
    [
        ({"records": [{}]}, "no columns"),
        ({"records": [{}, {}]}, "no columns"),
        ({"csv": "\n"}, "no columns"),
        ({"csv": "\n\n"}, "no columns"),
        ({"records": [{"\ud800": 1}]}, "not valid Unicode"),
    ],
)
def test_a_first_chunk_without_usable_columns_is_refused_and_later_ones_are_not_mixed_in(
    client: Client, dataset_name: str, first: dict[str, Any], words: str
) -> None:
    # Given a new session
    sid = client.call("POST", "/sessions", {"dataset": dataset_name})["session_id"]
    # When its first chunk has records with no fields (or a CSV with an empty header)
    got, body = _post_chunk(client, sid, {"chunk_number": 1, **first})
    # Then it is refused saying what is wrong with its columns, and nothing was kept
    assert got == 422, body
    assert words in body["message"]
    session = client.call("GET", f"/sessions/{sid}")
    assert (session["received"], session["columns"]) == ([], None)
    # and a chunk with columns still opens the session's columns
    assert _post_chunk(client, sid, {"chunk_number": 1, "records": [{"a": 1}]})[0] == 202
    assert client.call("GET", f"/sessions/{sid}")["columns"] == ["a"]


def test_limits_totals_and_malformed_bodies(
    stack: Any, client: Client, db: Any, dataset_name: str
) -> None:
    sid = client.call("POST", "/sessions", {"dataset": dataset_name, "total_chunks": 2})[
        "session_id"
    ]
    limit = stack.settings.sessions.max_chunk_records
    # over-size chunk: 413 with the limit
    status, body = _post_chunk(
        client, sid, {"chunk_number": 1, "records": [{"a": i} for i in range(limit + 1)]}
    )
    assert status == 413
    assert f"{limit:,}" in body["message"]
    # a chunk number past the total, and a changed total: 409
    status, body = _post_chunk(client, sid, {"chunk_number": 3, "records": [{"a": 1}]})
    assert (status, "outside 1..2" in body["message"]) == (409, True)
    status, body = _post_chunk(
        client, sid, {"chunk_number": 1, "total_chunks": 5, "records": [{"a": 1}]}
    )
    assert (status, "cannot change" in body["message"]) == (409, True)
    # malformed JSON: 400
    response = client.http.request(
        "POST",
        f"{client.base_url}/sessions/{sid}/chunks",
        headers=client.headers,
        body=b'{"chunk_number": 1, "records": [{"a": 1}',
    )
    assert response.status == 400
    assert response.json()["error"] == "invalid_request"
    # nothing was kept
    assert client.call("GET", f"/sessions/{sid}")["received"] == []
    # an unknown session without a dataset, and another owner's session: 404
    status, body = _post_chunk(
        client, str(uuid.uuid4()), {"chunk_number": 1, "records": [{"a": 1}]}
    )
    assert status == 404
    other = Client(stack.api_url, token=auth.create_token(db, "mallory"))
    with pytest.raises(ApiError) as hidden:
        other.call("GET", f"/sessions/{sid}")
    assert hidden.value.http_status == 404
    status, _ = _post_chunk(other, sid, {"chunk_number": 1, "records": [{"a": 1}]})
    assert status == 404
    # a bad dataset name or import option is refused when the session opens
    with pytest.raises(ApiError) as bad:
        client.call("POST", "/sessions", {"dataset": "../etc"})
    assert bad.value.http_status == 400
    with pytest.raises(ApiError) as bad:
        client.call("POST", "/sessions", {"dataset": dataset_name, "options": {"mode": "upsert"}})
    assert bad.value.http_status == 422


def test_a_session_bigger_than_one_assembly_part_keeps_its_order(
    stack: Any, client: Client, dataset_name: str
) -> None:
    # Given three full chunks whose CSV is more than one 5 MiB+ part of the assembled object
    per_chunk = stack.settings.sessions.max_chunk_records
    pad = "x" * 300
    sid = client.call("POST", "/sessions", {"dataset": dataset_name, "total_chunks": 3})[
        "session_id"
    ]
    bodies = {}
    for n in (3, 1, 2):
        first = (n - 1) * per_chunk
        records = [{"n": i, "pad": pad} for i in range(first, first + per_chunk)]
        status, bodies[n] = _post_chunk(client, sid, {"chunk_number": n, "records": records})
    assert status == 200
    assert 3 * per_chunk * len(pad) > stack.settings.sessions.assembly_part_bytes
    job = client.wait_for_job(bodies[2]["job_id"], poll_seconds=0.2, timeout=300)
    assert job["status"] == "completed", job["error_message"]
    rows = _rows_of(client, dataset_name)
    assert rows[0] == ["n", "pad"]
    assert [int(r[0]) for r in rows[1:]] == list(range(3 * per_chunk))


def test_last_chunks_sent_at_once_commit_once(client: Client, dataset_name: str) -> None:
    from concurrent.futures import ThreadPoolExecutor

    sid = client.call("POST", "/sessions", {"dataset": dataset_name, "total_chunks": 4})[
        "session_id"
    ]
    assert _post_chunk(client, sid, {"chunk_number": 1, "records": [{"v": 1}]})[0] == 202
    # When the other three arrive at the same moment
    with ThreadPoolExecutor(3) as pool:
        answers = list(
            pool.map(
                lambda n: _post_chunk(client, sid, {"chunk_number": n, "records": [{"v": n}]}),
                [2, 3, 4],
            )
        )
    # Then each is accepted, and the session is committed once
    assert {status for status, _ in answers} <= {200, 202}
    assert 200 in {status for status, _ in answers}
    session = client.call("GET", f"/sessions/{sid}")
    assert session["status"] == "committed"
    job = client.wait_for_job(session["job_id"], poll_seconds=0.1, timeout=120)
    imports = [
        j
        for j in client.call("GET", f"/jobs?dataset={dataset_name}")["jobs"]
        if j["run_type"] == "import"
    ]
    assert [j["job_id"] for j in imports] == [job["job_id"]]
    assert _rows_of(client, dataset_name) == [["v"], ["1"], ["2"], ["3"], ["4"]]


def test_a_session_keeps_its_dataset(client: Client, dataset_name: str) -> None:
    sid = client.call("POST", "/sessions", {"dataset": dataset_name})["session_id"]
    body = {"chunk_number": 1, "records": [{"v": 1}], "dataset": "another"}
    status, answer = _post_chunk(client, sid, body)
    assert status == 409
    assert "cannot change" in answer["message"]
