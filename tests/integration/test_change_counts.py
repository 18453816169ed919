"""A commit's change counts in memory (sluiceway.changes) are the SQL diff's, pair by pair.

Each scenario imports a sequence of files into one dataset, then compares, for every ordered
pair of its commits (and nothing against each), :func:`changes.count` with
:func:`versioning.diff_counts` of :func:`versioning.compute_diff`. The files make every case
the matching has: edits, a block deleted and one inserted, rows moved, rows and whole leaves
repeated (keys twice on a side), an append, keyed upserts and deletes (logical ids that are
keys), and the same files loaded by blocks.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import psycopg
import pytest
from tests.conftest import import_bytes

from sluiceway import changes, versioning
from sluiceway.client import Client

Conn = psycopg.Connection[dict[str, Any]]


def _csv(lines: list[str], header: str = "id,name,score") -> bytes:
    return (header + "\n" + "\n".join(lines) + "\n").encode()


def _base(n: int = 3000) -> list[str]:
    return [f'{i},"name {i}, quoted",{i * 7 % 13}' for i in range(1, n + 1)]


def _commits(db: Conn, dataset: str) -> list[str]:
    rows = db.execute(
        "SELECT c.commit_id FROM dsa_core.commits c JOIN dsa_core.datasets d "
        "ON d.id = c.dataset_id WHERE d.name = %s ORDER BY c.commit_key",
        (dataset,),
    ).fetchall()
    return [r["commit_id"] for r in rows]


def _sql_counts(db: Conn, a: str | None, b: str) -> dict[str, int]:
    with db.transaction():
        return versioning.diff_counts(db, versioning.compute_diff(db, a, b).table)


def _every_pair_agrees(db: Conn, dataset: str) -> int:
    commits = _commits(db, dataset)
    pairs = [(a, b) for a in [None, *commits] for b in commits if a != b]
    for a, b in pairs:
        assert changes.count(db, a, b) == _sql_counts(db, a, b), (a, b)
    # and each commit's stored stats are the SQL diff against its parent
    for row in db.execute(
        "SELECT c.commit_id, c.parent_commit_id, c.stats FROM dsa_core.commits c "
        "JOIN dsa_core.datasets d ON d.id = c.dataset_id WHERE d.name = %s",
        (dataset,),
    ).fetchall():
        assert row["stats"] == _sql_counts(db, row["parent_commit_id"], row["commit_id"])
    return len(pairs)


def _import(client: Client, tmp_path: Path, data: bytes, dataset: str, **options: Any) -> None:
    job = import_bytes(client, tmp_path, data, dataset, chunk_bytes=20_000, **options)
    assert job["status"] == "completed", job["error_message"]


@pytest.mark.parametrize("by_blocks", [False, True])
def test_unkeyed_imports_count_alike(
    client: Client, db: Conn, tmp_path: Path, dataset_name: str, by_blocks: bool
) -> None:
    rng = random.Random(5)
    base = _base()
    edited = [
        (line.replace("quoted", "edited") if i % 37 == 0 else line) for i, line in enumerate(base)
    ]
    deleted = base[:1000] + base[1200:]
    inserted = base[:1500] + [f"{i},new {i},1" for i in range(100)] + base[1500:]
    moved = base[2000:] + base[:2000]
    repeated = base[:40] * 30 + base[:5] * 7  # the same rows, and the same leaves, many times
    shuffled = rng.sample(base, len(base))
    files = [base, edited, deleted, inserted, moved, repeated, base, shuffled]
    for lines in files:
        _import(client, tmp_path, _csv(lines), dataset_name, reuse_blocks=by_blocks)
    _import(client, tmp_path, _csv(base[:300]), dataset_name, mode="append")
    assert _every_pair_agrees(db, dataset_name) >= 60


def test_keyed_imports_count_alike(
    client: Client, db: Conn, tmp_path: Path, dataset_name: str
) -> None:
    base = _base(2000)
    _import(client, tmp_path, _csv(base), dataset_name, mode="upsert", key=["id"])
    changed = [f"{i},changed {i},0" for i in range(1, 2001, 9)]
    _import(client, tmp_path, _csv(changed), dataset_name, mode="upsert", key=["id"])
    more = [f"{i},more {i},2" for i in range(1900, 2600)]
    _import(client, tmp_path, _csv(more), dataset_name, mode="upsert", key=["id"])
    gone = [str(i) for i in range(1, 2600, 4)]
    _import(client, tmp_path, _csv(gone, "id"), dataset_name, mode="delete", key=["id"])
    assert _every_pair_agrees(db, dataset_name) >= 10


def test_past_its_limit_the_sql_diff_counts(
    client: Client, db: Conn, tmp_path: Path, dataset_name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    base = _base(1500)
    _import(client, tmp_path, _csv(base), dataset_name)
    _import(client, tmp_path, _csv(base[::-1]), dataset_name)
    first, second = _commits(db, dataset_name)
    expected = _sql_counts(db, first, second)
    assert changes.count(db, first, second) == expected
    monkeypatch.setattr(changes, "MAX_ENTRIES", 10)
    assert changes.count(db, first, second) is None
    with db.transaction():
        assert versioning.record_stats(db, first, second) == expected
        raise psycopg.Rollback()  # the stats it wrote were the same: keep nothing
