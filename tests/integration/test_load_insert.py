"""A range's new rows go into row_store without a lookup each when none is stored yet, and
the usual way, once each, when the sample that decided it missed a stored row."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from psycopg import sql
from psycopg.rows import dict_row
from tests.conftest import index_scans, migrated_database

from sluiceway import db, load

RANGE_ROWS = 3 * db.UNPROBED_SAMPLE


@pytest.fixture
def store(stack: Any) -> Iterator[psycopg.Connection[dict[str, Any]]]:
    """A connection to a new, migrated database (its own row_store and statistics), and a
    range's hashed table ``h`` of RANGE_ROWS rows, all new."""
    with (
        migrated_database(stack, "insert") as url,
        psycopg.connect(url, row_factory=dict_row) as conn,
    ):
        conn.execute("CREATE TEMP TABLE h (row_hash bytea, vals text[])")
        with conn.cursor().copy("COPY h FROM STDIN") as copy:
            for n in range(RANGE_ROWS):
                copy.write_row((_hash(n), [str(n)]))
        conn.commit()
        yield conn


def _hash(n: int) -> bytes:
    return hashlib.sha256(f"row {n}".encode()).digest()


def test_a_range_of_new_rows_is_stored_without_looking_each_up(
    store: psycopg.Connection[dict[str, Any]],
) -> None:
    # Given a range whose rows row_store has none of
    # When it inserts them
    load.insert_new_rows(store, sql.Identifier("h"), 0)

    # Then all are stored, and row_store's key was searched only for the sample's rows
    stored = store.execute("SELECT count(*) AS n FROM dsa_core.row_store").fetchone()
    assert stored == {"n": RANGE_ROWS}
    assert index_scans(store, "dsa_core.row_store_pkey") <= db.UNPROBED_SAMPLE


def test_a_stored_row_the_sample_missed_is_not_stored_twice(
    store: psycopg.Connection[dict[str, Any]],
) -> None:
    # Given a range whose last row (past the sample's first rows) is stored already, under
    # another column set
    last = RANGE_ROWS - 1
    store.execute("INSERT INTO dsa_core.row_store VALUES (%s, 7, %s)", (_hash(last), [str(last)]))
    store.commit()

    # When it inserts its rows
    load.insert_new_rows(store, sql.Identifier("h"), 0)

    # Then the range looked its rows up after all, and every row is stored once, the stored
    # one as it was
    assert index_scans(store, "dsa_core.row_store_pkey") >= RANGE_ROWS
    store.commit()
    stored = store.execute(
        "SELECT count(*) AS n, count(*) FILTER (WHERE column_set_id = 7) AS kept "
        "FROM dsa_core.row_store"
    ).fetchone()
    assert stored == {"n": RANGE_ROWS, "kept": 1}
