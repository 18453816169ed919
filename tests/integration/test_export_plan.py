"""An export part chooses how to read row_store from what row_store holds now, whatever its
statistics say (never analyzed right after a first import, or stale after a big one)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from psycopg.rows import dict_row
from tests.conftest import migrated_database

from sluiceway.export_part import RowQuery

Conn = psycopg.Connection[dict[str, Any]]


@pytest.fixture
def store_without_autovacuum(stack: Any) -> Iterator[str]:
    """A new, migrated database whose row_store autovacuum never analyzes."""
    with migrated_database(stack, "export_plan") as url:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("ALTER TABLE dsa_core.row_store SET (autovacuum_enabled = false)")
        yield url


def _store(conn: Conn, start: int, count: int) -> None:
    conn.execute(
        "INSERT INTO dsa_core.row_store (row_hash, column_set_id, vals) "
        "SELECT sha256(convert_to(g::text, 'UTF8')), 0, ARRAY[g::text, 'some text ' || g] "
        "FROM generate_series(%s::int, %s::int) g",
        (start, start + count - 1),
    )


def _reltuples(conn: Conn) -> float:
    row = conn.execute(
        "SELECT reltuples FROM pg_class WHERE oid = 'dsa_core.row_store'::regclass"
    ).fetchone()
    assert row is not None
    return float(row["reltuples"])


def test_a_small_part_probes_row_store_when_it_was_never_analyzed(
    store_without_autovacuum: str,
) -> None:
    with psycopg.connect(store_without_autovacuum, row_factory=dict_row, autocommit=True) as conn:
        # Given 60,000 stored rows that no analyze has counted yet
        _store(conn, 1, 60_000)
        assert _reltuples(conn) == -1
        # When an export part of 1,000 rows is planned
        query = RowQuery(conn, ["a", "b"])
        # Then it knows the store is tens of thousands of rows, and looks its rows up by
        # hash instead of hashing all of them
        assert 30_000 <= query.stored_rows <= 120_000
        shape, _ = query.select(["a"], None, "c", 1, 1_001)
        assert "LATERAL" in shape.as_string(conn)


def test_a_small_part_probes_row_store_when_its_statistics_are_stale(
    store_without_autovacuum: str,
) -> None:
    with psycopg.connect(store_without_autovacuum, row_factory=dict_row, autocommit=True) as conn:
        # Given row_store analyzed at 1,000 rows, then 100,000 more stored
        _store(conn, 1, 1_000)
        conn.execute("ANALYZE dsa_core.row_store")
        assert _reltuples(conn) == 1_000
        _store(conn, 1_001, 100_000)
        # When an export part of 5,000 rows is planned (five times what the statistics say)
        query = RowQuery(conn, ["a", "b"])
        # Then it probes: the estimate follows the pages row_store has now
        assert 50_000 <= query.stored_rows <= 200_000
        shape, _ = query.select(["a"], None, "c", 1, 5_001)
        assert "LATERAL" in shape.as_string(conn)
        # and a part of most of the store still hashes it once
        whole, _ = query.select(["a"], None, "c", 1, 100_001)
        assert "LATERAL" not in whole.as_string(conn)
