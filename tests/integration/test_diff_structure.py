"""Diffs that cost what the difference costs (issue 6): lists cut by content, seams stitched.

A commit's rows are leaves, cut into lists by leaf hash (tree.py). These tests look at the
structure itself: which lists a commit has, and how many lists, leaves and rows a diff had to
open (``work`` in the diff's answer), never at timings.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql
from tests.conftest import import_bytes

from sluiceway import tree
from sluiceway.client import Client

Conn = psycopg.Connection[dict[str, Any]]

ROWS = 100_000
BLOCK = 100


def _ok(job: dict[str, Any]) -> dict[str, Any]:
    assert job["status"] == "completed", job["error_message"]
    summary: dict[str, Any] = job["output_summary"]
    return summary


def _csv(lines: list[str]) -> bytes:
    return ("id,name,score\n" + "\n".join(lines) + "\n").encode()


def _lines(tag: str, rows: int = ROWS) -> list[str]:
    return [f"{i},{tag} {i},{i * 7 % 13}" for i in range(1, rows + 1)]


def _lists(db: Conn, commit_id: str) -> list[bytes]:
    rows = db.execute(
        "SELECT k.list_hash FROM dsa_core.commit_chunks k JOIN dsa_core.commits c "
        "USING (commit_key) WHERE c.commit_id = %s AND k.row_count > 0 ORDER BY k.chunk_no",
        (commit_id,),
    ).fetchall()
    return [bytes(r["list_hash"]) for r in rows]


def _leaves(db: Conn, lists: list[bytes]) -> int:
    row = db.execute(
        "SELECT coalesce(sum(ll.leaf_count), 0) AS n FROM unnest(%s::bytea[]) h "
        "JOIN dsa_core.leaf_lists ll ON ll.list_hash = h",
        (lists,),
    ).fetchone()
    assert row is not None
    return int(row["n"])


def _only_in(a: list[bytes], b: list[bytes]) -> list[bytes]:
    """The lists of ``a`` that ``b`` does not have (as multisets)."""
    left = list(b)
    out = []
    for x in a:
        if x in left:
            left.remove(x)
        else:
            out.append(x)
    return out


def _expect_only_changed_lists_read(db: Conn, d: dict[str, Any], a: str, b: str) -> None:
    """The diff a -> b opened exactly the lists one side has and the other has not, and
    their leaves; at most three lists a side, of the fifty and more each commit has."""
    la, lb = _lists(db, a), _lists(db, b)
    gone, new = _only_in(la, lb), _only_in(lb, la)
    assert 1 <= len(gone) <= 3
    assert 1 <= len(new) <= 3
    assert d["work"]["lists_read"] == len(gone) + len(new)
    assert d["work"]["leaves_read"] == _leaves(db, gone + new)
    assert d["work"]["leaves_read"] <= 6 * tree.MAX_LIST_LEAVES  # whatever the dataset's size


def _readable_rows(db: Conn, commit_id: str) -> int:
    """Rows of the commit whose leaves and stored rows are all there."""
    row = db.execute(
        "SELECT count(*) AS n FROM dsa_core.commit_row_range(%s, 1, NULL) r "
        "JOIN dsa_core.row_store s USING (row_hash)",
        (commit_id,),
    ).fetchone()
    assert row is not None
    return int(row["n"])


def test_lists_are_cut_by_content_wherever_the_ranges_were_cut(db: Conn) -> None:
    # Given 60,000 rows built at once, and the same rows built as four ranges cut anywhere
    # (one of them so short it holds a single list), then stitched as a commit does
    with db.transaction(force_rollback=True):
        db.execute(
            "CREATE TEMP TABLE t_all ON COMMIT DROP AS SELECT g AS pos, "
            "sha256(convert_to('structure ' || g, 'UTF8')) AS row_hash, NULL::text AS logical_id "
            "FROM generate_series(1, 60000) g"
        )
        whole = tree.build(db, sql.Identifier("t_all"), keyed=False)
        cuts = [(1, 17_001), (17_001, 17_051), (17_051, 40_123), (40_123, 60_001)]
        ranges = []
        for n, (a, b) in enumerate(cuts):
            db.execute(
                sql.SQL(
                    "CREATE TEMP TABLE {} ON COMMIT DROP AS SELECT pos - %s + 1 AS pos, row_hash, "
                    "logical_id FROM t_all WHERE pos >= %s AND pos < %s"
                ).format(sql.Identifier(f"t_range{n}")),
                (a, a, b),
            )
            ranges.append(tree.build(db, sql.Identifier(f"t_range{n}"), keyed=False))
        # Then the whole has many lists; a range's own edges are not content cuts...
        assert len(whole) >= 5
        assert sum(len(r) for r in ranges) > len(whole)
        assert [x for r in ranges for x in r] != whole
        # ...and once stitched they are the very lists of the whole, hash for hash
        assert tree.stitch(db, ranges) == whole
        assert tree.stitch(db, [tree.stitch(db, ranges[:2]), *ranges[2:]]) == whole
        # and an append (a parent's lists, then a range of new rows) stitches the same way
        start = whole[0].row_count + whole[1].row_count + 100
        db.execute(
            "CREATE TEMP TABLE t_appended ON COMMIT DROP AS SELECT pos - %s + 1 AS pos, "
            "row_hash, logical_id FROM t_all WHERE pos >= %s",
            (start, start),
        )
        db.execute(
            "CREATE TEMP TABLE t_parent ON COMMIT DROP AS SELECT * FROM t_all WHERE pos < %s",
            (start,),
        )
        parent = tree.build(db, sql.Identifier("t_parent"), keyed=False)
        appended = tree.build(db, sql.Identifier("t_appended"), keyed=False)
        assert parent[:2] == whole[:2]
        assert parent[-1] not in whole  # cut where the parent ended, not by content
        assert tree.stitch(db, [parent, appended]) == whole


def test_a_localized_change_is_diffed_by_reading_only_the_lists_it_touched(
    client: Client, db: Conn, tmp_path: Path, dataset_name: str
) -> None:
    # Given 100,000 rows imported as several ranges
    base_lines = _lines(dataset_name)
    base = _ok(import_bytes(client, tmp_path, _csv(base_lines), dataset_name, chunk_bytes=600_000))
    lists = _lists(db, base["commit_id"])
    # cut by content: about 56 lists (14,300 leaves / 256), their count varying with the
    # rows (the dataset's random name is in them; sd about 7.5): 30 is 3.5 sd down
    assert len(lists) >= 30

    def diff(to: str) -> dict[str, Any]:
        answer: dict[str, Any] = client.call(
            "GET", f"/datasets/{dataset_name}/diff?from={base['commit_id']}&to={to}&limit=0"
        )
        return answer

    # When a block of 100 consecutive rows is edited in the middle
    mid = ROWS // 2
    edited = [
        f"{i},{dataset_name} {i},edited" if mid <= i < mid + BLOCK else line
        for i, line in enumerate(base_lines, start=1)
    ]
    commit = _ok(import_bytes(client, tmp_path, _csv(edited), dataset_name, chunk_bytes=600_000))
    d = diff(commit["commit_id"])
    # Then the diff finds exactly those rows, opening a list or a few a side, not all, and
    # of their leaves only the rows of those that differ
    assert (d["added"], d["removed"], d["changed"]) == (0, 0, BLOCK)
    _expect_only_changed_lists_read(db, d, base["commit_id"], commit["commit_id"])
    # (each side: the block, and at each end the rows up to where the leaves cut alike again:
    # the next natural cut, since a cap cut counts from the last natural one, which the edit
    # may have moved; a run of more than 4 caps without a natural cut has odds (7/8)**64)
    assert d["work"]["rows_read"] <= 2 * (BLOCK + 2 * 4 * tree.MAX_LEAF_ROWS)

    # When a block is deleted from the first range (every later range starts elsewhere now)
    dropped = base_lines[: ROWS // 10] + base_lines[ROWS // 10 + BLOCK :]
    commit = _ok(import_bytes(client, tmp_path, _csv(dropped), dataset_name, chunk_bytes=600_000))
    d = diff(commit["commit_id"])
    # Then only the lists around the deleted rows are read: the seams moved, the lists did not
    assert (d["added"], d["removed"], d["changed"]) == (0, BLOCK, 0)
    _expect_only_changed_lists_read(db, d, base["commit_id"], commit["commit_id"])

    # When rows are appended at the end
    more = base_lines + _lines(dataset_name + "-more", BLOCK)
    commit = _ok(import_bytes(client, tmp_path, _csv(more), dataset_name, chunk_bytes=600_000))
    d = diff(commit["commit_id"])
    assert (d["added"], d["removed"], d["changed"]) == (BLOCK, 0, 0)
    _expect_only_changed_lists_read(db, d, base["commit_id"], commit["commit_id"])

    # When the base file is imported again in ranges of another size
    again = _ok(import_bytes(client, tmp_path, _csv(base_lines), dataset_name, chunk_bytes=450_000))
    # Then it is the same lists as the base (cut by content, not by range): the commit holds
    # exactly the base's lists, and a diff of the two opens nothing
    assert _lists(db, again["commit_id"]) == lists
    d = diff(again["commit_id"])
    assert d["work"] == {"lists_read": 0, "leaves_read": 0, "rows_read": 0}

    # And gc, which drops the lists the ranges built before their seams were stitched, keeps
    # every leaf and row of every commit
    client.call("POST", f"/datasets/{dataset_name}/gc", {})
    log = client.call("GET", f"/datasets/{dataset_name}/commits?all=true")["commits"]
    assert len(log) == 5
    for c in log:
        assert _readable_rows(db, c["commit_id"]) == c["row_count"]


def test_a_range_loaded_twice_after_a_failure_leaves_the_same_lists(
    client: Client, db: Conn, tmp_path: Path, dataset_name: str
) -> None:
    # Given a file cut into many ranges, one of whose loads fails after its work once
    data = _csv(_lines(dataset_name, 20_000))
    clean = _ok(import_bytes(client, tmp_path, data, dataset_name, chunk_bytes=100_000))
    retried = _ok(
        import_bytes(
            client,
            tmp_path,
            data,
            dataset_name + "-b",
            chunk_bytes=100_000,
            faults={"load": 1},
        )
    )
    # Then the retried import is the same rows in the same lists as the clean one
    assert retried["rows"] == clean["rows"] == 20_000
    assert _lists(db, retried["commit_id"]) == _lists(db, clean["commit_id"])
