"""The new-row insert probes row_store's key whatever the planner believes row_store holds."""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import psycopg
import pytest
from psycopg import sql
from psycopg.rows import dict_row

from sluiceway import db as sluiceway_db
from sluiceway.load import insert_new_rows
from sluiceway.settings import Settings


@pytest.fixture
def analyzed_empty_store(stack: Any) -> Iterator[str]:
    """A new, migrated database whose row_store was ANALYZEd while empty (what a vacuum does
    after gc has swept every row, or an operator's ANALYZE before the first import)."""
    name = f"plan_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(stack.database_url, autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    url = urlunsplit(urlsplit(stack.database_url)._replace(path=f"/{name}"))
    try:
        sluiceway_db.migrate(Settings(home=stack.settings.home, database_url=url))
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("ANALYZE dsa_core.row_store")
        yield url
    finally:
        sluiceway_db.close_all()
        with psycopg.connect(stack.database_url, autocommit=True) as admin:
            admin.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(name)))


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
