"""The new-row insert probes row_store's key whatever the planner believes row_store holds."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from psycopg import sql
from psycopg.rows import dict_row
from tests.conftest import migrated_database

from sluiceway.load import insert_new_rows


@pytest.fixture
def analyzed_empty_store(stack: Any) -> Iterator[str]:
    """A new, migrated database whose row_store was ANALYZEd while empty (what a vacuum does
    after gc has swept every row, or an operator's ANALYZE before the first import)."""
    with migrated_database(stack, "plan") as url:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("ANALYZE dsa_core.row_store")
        yield url


def test_new_rows_are_probed_by_key_when_row_store_was_analyzed_empty(
    analyzed_empty_store: str,
) -> None:
    # Given a range of 2,000 new rows, and statistics that say row_store has no rows: the
    # planner's cheapest probe is then a sequential scan of row_store per row, and the
    # statement's own inserts make each scan longer (quadratic: a 500,000-row range ran for
    # over ten minutes)
    with psycopg.connect(analyzed_empty_store, row_factory=dict_row) as conn:
        stats = conn.execute(
            "SELECT reltuples FROM pg_class WHERE oid = 'dsa_core.row_store'::regclass"
        ).fetchone()
        assert stats == {"reltuples": 0.0}
        conn.execute("CREATE TEMP TABLE h (row_hash bytea, vals text[])")
        with conn.cursor().copy("COPY h FROM STDIN") as copy:
            for n in range(2000):
                copy.write_row((hashlib.sha256(str(n).encode()).digest(), [str(n)]))

        # When the range inserts its new rows
        insert_new_rows(conn, sql.Identifier("h"), 0)

        # Then every row is stored, and row_store was never scanned whole
        scans = conn.execute(
            "SELECT pg_stat_get_xact_numscans('dsa_core.row_store'::regclass) AS n"
        ).fetchone()
        stored = conn.execute("SELECT count(*) AS n FROM dsa_core.row_store").fetchone()
        assert (stored, scans) == ({"n": 2000}, {"n": 0})
