"""Git for datasets (issue 6): modes, log, diff, time travel, refs, revert, merge, gc."""

from __future__ import annotations

import itertools
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
import pytest
from tests.conftest import import_bytes

from sluiceway.client import ApiError, Client

Conn = psycopg.Connection[dict[str, Any]]


def _ok(job: dict[str, Any]) -> dict[str, Any]:
    assert job["status"] == "completed", job["error_message"]
    summary: dict[str, Any] = job["output_summary"]
    return summary


def _stored_rows(db: Conn, dataset: str) -> int:
    """How many stored rows have a ``v`` starting with the dataset's name (each test's own)."""
    found = db.execute(
        "SELECT count(*) AS n FROM dsa_core.rows WHERE data->>'v' LIKE %s", (dataset + "-%",)
    ).fetchone()
    assert found is not None
    return int(found["n"])


def _rows(
    client: Client, dataset: str, commit: str | None = None
) -> list[tuple[str, dict[str, Any]]]:
    path = f"/datasets/{dataset}/rows?limit=10000" + (f"&commit={commit}" if commit else "")
    page = client.call("GET", path)
    return [(r["logical_row_id"], r["data"]) for r in page["rows"]]


def _csv(*lines: str) -> bytes:
    return ("\n".join(lines) + "\n").encode()


BASE = _csv("id,name,score", "1,ann,10", "2,bob,20", "3,cy,30")


def test_append_adds_the_files_rows_after_the_parents(
    client: Client, tmp_path: Path, dataset_name: str
) -> None:
    first = _ok(import_bytes(client, tmp_path, BASE, dataset_name))
    second = _ok(
        import_bytes(
            client, tmp_path, _csv("id,name,score", "4,dee,40"), dataset_name, mode="append"
        )
    )
    assert second["parent_commit_id"] == first["commit_id"]
    assert second["rows"] == 4
    assert second["changes"] == {"added": 1, "removed": 0, "changed": 0}
    assert [d["name"] for _, d in _rows(client, dataset_name)] == ["ann", "bob", "cy", "dee"]


def test_upsert_updates_matched_keys_adds_new_ones_and_keeps_the_rest(
    client: Client, tmp_path: Path, dataset_name: str
) -> None:
    _ok(import_bytes(client, tmp_path, BASE, dataset_name))
    upsert = _csv("id,name,score", "2,bob,21", "5,eve,50")
    summary = _ok(import_bytes(client, tmp_path, upsert, dataset_name, mode="upsert", key=["id"]))
    assert summary["changes"] == {"added": 1, "removed": 0, "changed": 1}
    rows = _rows(client, dataset_name)
    # logical_row_id is the key; rows are in key order
    assert [(i, d["score"]) for i, d in rows] == [
        ("1", "10"),
        ("2", "21"),
        ("3", "30"),
        ("5", "50"),
    ]
    # the same upsert again changes nothing: a job, but no empty commit
    again = _ok(import_bytes(client, tmp_path, upsert, dataset_name, mode="upsert", key=["id"]))
    assert again["unchanged"] is True
    assert again["commit_id"] == summary["commit_id"]


def test_upsert_with_a_duplicate_key_in_the_file_fails_and_moves_nothing(
    client: Client, tmp_path: Path, dataset_name: str
) -> None:
    first = _ok(import_bytes(client, tmp_path, BASE, dataset_name))
    bad = _csv("id,name,score", "2,bob,21", "2,bob,22")
    job = import_bytes(client, tmp_path, bad, dataset_name, mode="upsert", key=["id"])
    assert job["status"] == "failed"
    assert "duplicate key" in job["error_message"]
    assert "'2'" in job["error_message"]
    head = client.call("GET", f"/datasets/{dataset_name}")["head_commit_id"]
    assert head == first["commit_id"]


def test_a_key_column_missing_from_the_header_is_named(
    client: Client, tmp_path: Path, dataset_name: str
) -> None:
    job = import_bytes(client, tmp_path, BASE, dataset_name, mode="upsert", key=["nope"])
    assert job["status"] == "failed"
    assert "'nope'" in job["error_message"]
    assert "not in the header" in job["error_message"]


def test_upsert_without_a_key_is_refused_before_any_upload(
    client: Client, dataset_name: str
) -> None:
    with pytest.raises(ApiError) as caught:
        client.call(
            "POST",
            "/uploads",
            {"dataset": dataset_name, "filename": "a.csv", "options": {"mode": "upsert"}},
        )
    assert caught.value.http_status == 422
    assert "key" in caught.value.message


def test_delete_removes_the_listed_keys(client: Client, tmp_path: Path, dataset_name: str) -> None:
    _ok(import_bytes(client, tmp_path, BASE, dataset_name))
    summary = _ok(
        import_bytes(
            client, tmp_path, _csv("id", "1", "3", "99"), dataset_name, mode="delete", key=["id"]
        )
    )
    assert summary["changes"] == {"added": 0, "removed": 2, "changed": 0}
    assert summary["columns"] == ["id", "name", "score"]
    assert _rows(client, dataset_name) == [("2", {"id": "2", "name": "bob", "score": "20"})]


def test_diff_shows_added_removed_and_changed_rows_with_changed_columns(
    client: Client, tmp_path: Path, dataset_name: str
) -> None:
    a = _ok(import_bytes(client, tmp_path, BASE, dataset_name))
    b = _ok(
        import_bytes(
            client,
            tmp_path,
            _csv("id,name,score", "1,ann,10", "2,bob,25", "3,cy,30", "4,dee,40"),
            dataset_name,
        )
    )
    d = client.call("GET", f"/datasets/{dataset_name}/diff?from={a['commit_id']}&to=main")
    assert (d["added"], d["removed"], d["changed"]) == (1, 0, 1)
    changed = next(r for r in d["rows"] if r["op"] == "changed")
    assert changed["logical_row_id"] == "2"
    assert changed["changed_columns"] == ["score"]
    assert changed["before"]["score"] == "20"
    assert changed["after"]["score"] == "25"
    added = next(r for r in d["rows"] if r["op"] == "added")
    assert added["after"]["name"] == "dee"
    # with no `from`, a commit's own changes against its parent; and the reverse direction
    own = client.call("GET", f"/datasets/{dataset_name}/diff?to={b['commit_id']}")
    assert (own["added"], own["changed"]) == (1, 1)
    back = client.call("GET", f"/datasets/{dataset_name}/diff?from=main&to={a['commit_id']}")
    assert (back["added"], back["removed"], back["changed"]) == (0, 1, 1)


def test_a_row_inserted_in_the_middle_is_one_added_row_not_a_shifted_file(
    client: Client, tmp_path: Path, dataset_name: str
) -> None:
    lines = [f"{i},name {i},{i * 7 % 13}" for i in range(1, 2001)]
    _ok(import_bytes(client, tmp_path, _csv("id,name,score", *lines), dataset_name))
    inserted = [*lines[:1000], "x,inserted,0", *lines[1000:]]
    summary = _ok(import_bytes(client, tmp_path, _csv("id,name,score", *inserted), dataset_name))
    assert summary["changes"] == {"added": 1, "removed": 0, "changed": 0}


def test_time_travel_reads_by_id_ref_and_time(
    client: Client, tmp_path: Path, dataset_name: str
) -> None:
    a = _ok(import_bytes(client, tmp_path, BASE, dataset_name))
    time.sleep(0.05)
    between = datetime.now(UTC).isoformat()
    time.sleep(0.05)
    _ok(import_bytes(client, tmp_path, _csv("id,name,score", "9,zed,90"), dataset_name))
    by_id = _rows(client, dataset_name, a["commit_id"])
    assert [i for i, _ in by_id] == ["1", "2", "3"]
    assert [i for i, _ in _rows(client, dataset_name, "main")] == ["1"]
    by_time = client.call(
        "GET", f"/datasets/{dataset_name}/rows?commit={between.replace('+', '%2B')}"
    )
    assert by_time["commit_id"] == a["commit_id"]
    ref_at = client.call(
        "GET", f"/datasets/{dataset_name}/rows?commit=main@{between.replace('+', '%2B')}"
    )
    assert ref_at["commit_id"] == a["commit_id"]
    with pytest.raises(ApiError) as caught:
        client.call("GET", f"/datasets/{dataset_name}/rows?commit=main@2001-01-01T00:00:00Z")
    assert caught.value.http_status == 404
    assert "did not exist" in caught.value.message


def test_log_counts_changes_and_reset_keeps_old_commits_findable(
    client: Client, tmp_path: Path, dataset_name: str
) -> None:
    a = _ok(import_bytes(client, tmp_path, BASE, dataset_name, message="first"))
    b = _ok(import_bytes(client, tmp_path, _csv("id,name,score", "1,ann,11"), dataset_name))
    log = client.call("GET", f"/datasets/{dataset_name}/commits")["commits"]
    assert [c["commit_id"] for c in log] == [b["commit_id"], a["commit_id"]]
    assert log[0]["stats"] == {"added": 0, "removed": 2, "changed": 1}
    assert log[1]["stats"] == {"added": 3, "removed": 0, "changed": 0}
    assert log[1]["message"] == "first"

    moved = client.call("PUT", f"/datasets/{dataset_name}/refs/main", {"to": a["commit_id"]})
    assert moved["commit_id"] == a["commit_id"]
    log = client.call("GET", f"/datasets/{dataset_name}/commits")["commits"]
    assert [c["commit_id"] for c in log] == [a["commit_id"]]
    everything = client.call("GET", f"/datasets/{dataset_name}/commits?all=true")["commits"]
    assert {c["commit_id"] for c in everything} == {a["commit_id"], b["commit_id"]}
    # compare-and-swap: a reset that expected another position changes nothing
    with pytest.raises(ApiError) as caught:
        client.call(
            "PUT",
            f"/datasets/{dataset_name}/refs/main",
            {"to": b["commit_id"], "expected": b["commit_id"]},
        )
    assert caught.value.http_status == 409


def test_revert_undoes_one_commit_and_refuses_conflicts(
    client: Client, tmp_path: Path, dataset_name: str
) -> None:
    _ok(import_bytes(client, tmp_path, BASE, dataset_name))
    bump = _ok(
        import_bytes(
            client,
            tmp_path,
            _csv("id,name,score", "2,bob,99"),
            dataset_name,
            mode="upsert",
            key=["id"],
        )
    )
    _ok(
        import_bytes(
            client,
            tmp_path,
            _csv("id,name,score", "4,dee,40"),
            dataset_name,
            mode="upsert",
            key=["id"],
        )
    )
    made = client.call("POST", f"/datasets/{dataset_name}/revert", {"commit": bump["commit_id"]})
    assert made["changes"] == {"added": 0, "removed": 0, "changed": 1}
    assert [(i, d["score"]) for i, d in _rows(client, dataset_name)] == [
        ("1", "10"),
        ("2", "20"),
        ("3", "30"),
        ("4", "40"),
    ]
    # a later change to the same row makes reverting the original commit a conflict
    _ok(
        import_bytes(
            client,
            tmp_path,
            _csv("id,name,score", "2,bob,77"),
            dataset_name,
            mode="upsert",
            key=["id"],
        )
    )
    head = client.call("GET", f"/datasets/{dataset_name}")["head_commit_id"]
    with pytest.raises(ApiError) as caught:
        client.call("POST", f"/datasets/{dataset_name}/revert", {"commit": bump["commit_id"]})
    assert caught.value.http_status == 409
    assert caught.value.code == "merge_conflict"
    assert "'2'" in caught.value.message
    assert client.call("GET", f"/datasets/{dataset_name}")["head_commit_id"] == head


def test_branches_fast_forward_and_three_way_merge_with_conflicts_reported(
    client: Client, tmp_path: Path, dataset_name: str
) -> None:
    _ok(import_bytes(client, tmp_path, BASE, dataset_name, mode="upsert", key=["id"]))
    created = client.call("POST", f"/datasets/{dataset_name}/refs", {"name": "dev"})
    main_at = created["commit_id"]
    on_dev = _ok(
        import_bytes(
            client,
            tmp_path,
            _csv("id,name,score", "4,dee,40"),
            dataset_name,
            mode="upsert",
            key=["id"],
            branch="dev",
        )
    )
    assert on_dev["ref"] == "dev"
    assert on_dev["parent_commit_id"] == main_at
    assert client.call("GET", f"/datasets/{dataset_name}")["head_commit_id"] == main_at
    ff = client.call("POST", f"/datasets/{dataset_name}/merge", {"source": "dev"})
    assert ff == {"result": "fast-forward", "commit_id": on_dev["commit_id"]}

    # diverge: dev changes row 1, main changes row 3 -> a clean three-way merge
    _ok(
        import_bytes(
            client,
            tmp_path,
            _csv("id,name,score", "1,ann,11"),
            dataset_name,
            mode="upsert",
            key=["id"],
            branch="dev",
        )
    )
    _ok(
        import_bytes(
            client,
            tmp_path,
            _csv("id,name,score", "3,cy,33"),
            dataset_name,
            mode="upsert",
            key=["id"],
        )
    )
    merged = client.call("POST", f"/datasets/{dataset_name}/merge", {"source": "dev"})
    assert merged["result"] == "merged"
    assert [(i, d["score"]) for i, d in _rows(client, dataset_name)] == [
        ("1", "11"),
        ("2", "20"),
        ("3", "33"),
        ("4", "40"),
    ]
    log = client.call("GET", f"/datasets/{dataset_name}/commits")["commits"]
    assert log[0]["kind"] == "merge"
    assert log[0]["merge_parent_id"] is not None

    # both change row 2 differently: a conflict, reported, nothing moves
    _ok(
        import_bytes(
            client,
            tmp_path,
            _csv("id,name,score", "2,bob,1"),
            dataset_name,
            mode="upsert",
            key=["id"],
            branch="dev",
        )
    )
    _ok(
        import_bytes(
            client,
            tmp_path,
            _csv("id,name,score", "2,bob,2"),
            dataset_name,
            mode="upsert",
            key=["id"],
        )
    )
    head = client.call("GET", f"/datasets/{dataset_name}")["head_commit_id"]
    with pytest.raises(ApiError) as caught:
        client.call("POST", f"/datasets/{dataset_name}/merge", {"source": "dev"})
    assert caught.value.http_status == 409
    assert caught.value.details["conflicts"][0]["logical_row_id"] == "2"
    assert client.call("GET", f"/datasets/{dataset_name}")["head_commit_id"] == head


IMPORTS_AT_ONCE = 10  # issue 9's number


def test_concurrent_imports_into_one_ref_make_a_linear_history(
    client: Client, tmp_path: Path, dataset_name: str
) -> None:
    def run(n: int) -> dict[str, Any]:
        data = _csv("id,v", f"{n},{n}")
        return import_bytes(client, tmp_path / str(n), data, dataset_name, mode="append")

    with ThreadPoolExecutor(IMPORTS_AT_ONCE) as pool:
        jobs = list(pool.map(run, range(IMPORTS_AT_ONCE)))  # re-raises what any one raised
    assert len(jobs) == IMPORTS_AT_ONCE
    assert all(j["status"] == "completed" for j in jobs), [j["error_message"] for j in jobs]
    log = client.call("GET", f"/datasets/{dataset_name}/commits")["commits"]
    assert len(log) == IMPORTS_AT_ONCE
    for child, parent in itertools.pairwise(log):
        assert child["parent_commit_id"] == parent["commit_id"]
    assert sorted(int(d["id"]) for _, d in _rows(client, dataset_name)) == list(
        range(IMPORTS_AT_ONCE)
    )


def test_gc_keeps_what_refs_reach_and_deletes_rows_nothing_uses(
    client: Client, db: Conn, tmp_path: Path, dataset_name: str
) -> None:
    unique = dataset_name  # values no other test writes
    old = _csv("id,v", f"1,{unique}-old-a", f"2,{unique}-old-b")
    _ok(import_bytes(client, tmp_path, old, dataset_name))
    kept_rows = _csv("id,v", f"1,{unique}-new-a", f"2,{unique}-old-b")
    kept = _ok(import_bytes(client, tmp_path, kept_rows, dataset_name))
    client.call("POST", f"/datasets/{dataset_name}/refs", {"name": "pinned", "start": "main"})

    def stored(value: str) -> int:
        row = db.execute(
            "SELECT count(*) AS n FROM dsa_core.rows WHERE data->>'v' = %s", (value,)
        ).fetchone()
        assert row is not None
        return int(row["n"])

    assert stored(f"{unique}-old-a") == 1
    done = client.call("POST", f"/datasets/{dataset_name}/gc", {"keep": 1})
    assert done["commits_dropped"] == 1
    assert stored(f"{unique}-old-a") == 0  # only the dropped commit used it
    assert stored(f"{unique}-old-b") == 1  # the kept commit still does
    assert _rows(client, dataset_name) == [
        ("1", {"id": "1", "v": f"{unique}-new-a"}),
        ("2", {"id": "2", "v": f"{unique}-old-b"}),
    ]
    log = client.call("GET", f"/datasets/{dataset_name}/commits?all=true")["commits"]
    assert [c["commit_id"] for c in log] == [kept["commit_id"]]
    assert log[0]["parent_commit_id"] is None


def test_a_reimport_stores_the_rows_of_its_new_leaves_and_reads_back_whole(
    client: Client, db: Conn, tmp_path: Path, dataset_name: str
) -> None:
    # Given 3,000 stored rows, and the same file with three rows changed: one to a new
    # value, one to a copy of another row of the file, one to a row of another dataset
    lines = [f"{i},{dataset_name}-{i}" for i in range(3000)]
    _ok(import_bytes(client, tmp_path, _csv("id,v", *lines), f"{dataset_name}-other"))
    _ok(import_bytes(client, tmp_path, _csv("id,v", *lines[:2000]), dataset_name))
    changed = list(lines[:2000])
    changed[700] = f"700,{dataset_name}-changed"
    changed[1200] = lines[5]
    changed[1900] = lines[2500]  # stored, by the other dataset only
    # When it is imported again (the load looks up only the rows of the leaves it stores anew)
    summary = _ok(import_bytes(client, tmp_path, _csv("id,v", *changed), dataset_name))
    # Then the commit is the new file, row for row, and each distinct row is stored once
    assert summary["changes"] == {"added": 0, "removed": 0, "changed": 3}
    rows = _rows(client, dataset_name)
    assert [f"{d['id']},{d['v']}" for _, d in rows] == changed
    assert _stored_rows(db, dataset_name) == 3001  # the other dataset's 3,000 and the one new value


def test_a_reimport_with_rejected_rows_stores_the_rows_of_new_leaves_across_the_gaps(
    client: Client, db: Conn, tmp_path: Path, dataset_name: str
) -> None:
    # Given 2,000 stored rows, and the same file with three rows changed, each after two
    # records the rules reject. A rejected record leaves a gap in the range's positions, and
    # the load picks a new leaf's rows by position: the changed value is chosen to end its
    # leaf, after a row that does not, so its leaf spans the gap and ends with it.
    rules = {"columns": {"id": {"type": "integer"}}, "max_errors": 10, "sample_records": 1}
    lines = [f"{i},{dataset_name}-{i}" for i in range(2000)]
    _ok(import_bytes(client, tmp_path, _csv("id,v", *lines), dataset_name, rules=rules))

    def row_hash(i: str, v: str) -> bytes:  # load.hash_rows's formula, checked below
        found = db.execute(
            "SELECT sha256(convert_to('{id,v}'::text[]::text || ARRAY[%s, %s]::text, 'UTF8')) AS h",
            (i, v),
        ).fetchone()
        assert found is not None
        return bytes(found["h"])

    def cuts(h: bytes) -> bool:  # tree.NATURAL_CUT
        return h[31] & 7 == 0

    stored = db.execute(
        "SELECT row_hash FROM dsa_core.rows WHERE data->>'v' = %s", (f"{dataset_name}-5",)
    ).fetchone()
    assert stored is not None
    assert bytes(stored["row_hash"]) == row_hash("5", f"{dataset_name}-5")
    changed, at = list(lines), []
    for i in range(100, 2000, 50):
        if len(at) < 3 and not cuts(row_hash(str(i - 1), f"{dataset_name}-{i - 1}")):
            v = next(
                f"{dataset_name}-changed-{i}-{k}"
                for k in range(1000)
                if cuts(row_hash(str(i), f"{dataset_name}-changed-{i}-{k}"))
            )
            changed[i] = f"{i},{v}"
            at.append(i)
    sent = [
        x
        for i, line in enumerate(changed)
        for x in ([f"bad{i},x", f"bad{i}b,y"] * (i in at)) + [line]
    ]
    # When it is imported again, tolerating the six bad records
    job = import_bytes(client, tmp_path, _csv("id,v", *sent), dataset_name, rules=rules)
    summary = _ok(job)
    # Then the commit is the file's good records, row for row, and the changed rows are stored
    assert summary["rejected_rows"] == 6
    assert summary["changes"] == {"added": 0, "removed": 0, "changed": 3}
    rows = _rows(client, dataset_name)
    assert [f"{d['id']},{d['v']}" for _, d in rows] == changed
    assert _stored_rows(db, dataset_name) == 2003


@pytest.mark.parametrize("faults", [{}, {"load": 2}])
def test_ranges_that_share_leaves_store_each_row_once_even_when_one_fails(
    faults: dict[str, int], client: Client, db: Conn, tmp_path: Path, dataset_name: str
) -> None:
    # Given a file that repeats one block of rows, cut into many small ranges: ranges loaded
    # at once build the same leaves, and one range may wait on another's uncommitted leaf
    # (and, with the fault, see that range roll back and store the leaf itself)
    block = [f"{dataset_name}-{i},{i % 7}" for i in range(64)]
    data = _csv("v,k", *(block * 12))
    summary = _ok(
        import_bytes(client, tmp_path, data, dataset_name, chunk_bytes=512, faults=faults)
    )
    # Then the commit is the file, and each distinct row is stored once
    assert summary["rows"] == 64 * 12
    rows = _rows(client, dataset_name)
    assert [f"{d['v']},{d['k']}" for _, d in rows] == block * 12
    assert _stored_rows(db, dataset_name) == 64


@pytest.mark.parametrize("point", ["scan", "load", "commit"])
def test_a_step_that_fails_after_its_work_is_retried_and_leaves_each_row_once(
    point: str, client: Client, db: Conn, tmp_path: Path, dataset_name: str
) -> None:
    # Given a file of 300 rows cut into many ranges, and a fault that fails the first
    # attempt of one step after it has done all its work (before its commit)
    lines = [f"{i},{dataset_name}-{i}" for i in range(300)]
    data = _csv("id,v", *lines)
    job = import_bytes(client, tmp_path, data, dataset_name, chunk_bytes=512, faults={point: 2})
    # Then the state machine retried it, and the import is exactly the file, once
    summary = _ok(job)
    assert summary["rows"] == 300
    used = db.execute(
        "SELECT run_parameters #> '{options,faults}' AS f FROM dsa_jobs.analysis_runs WHERE id = %s",
        (job["job_id"],),
    ).fetchone()
    assert used == {"f": {point: 0}}  # both injected failures happened
    rows = _rows(client, dataset_name)
    assert [d["v"] for _, d in rows] == [f"{dataset_name}-{i}" for i in range(300)]
    assert _stored_rows(db, dataset_name) == 300
    log = client.call("GET", f"/datasets/{dataset_name}/commits")["commits"]
    assert len(log) == 1
