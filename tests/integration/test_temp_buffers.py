"""db.room_for_temp_tables: a session gets room for its temp tables, or keeps what it has."""

from __future__ import annotations

from typing import Any

import psycopg
import pytest
from psycopg.rows import dict_row

from sluiceway import db


def _connect(stack: Any) -> psycopg.Connection[dict[str, Any]]:
    """A new session whose temp_buffers, as it starts, is not TEMP_BUFFERS already: the
    server's default (PostgreSQL's 8MB on the embedded one; a DATABASE_URL server may be
    configured otherwise), so a call that changed nothing cannot pass."""
    conn = psycopg.connect(stack.database_url, autocommit=True, row_factory=dict_row)
    if _temp_buffers(conn) == db.TEMP_BUFFERS:
        conn.close()
        pytest.skip(f"this server starts sessions with temp_buffers = {db.TEMP_BUFFERS} already")
    return conn


def _temp_buffers(conn: psycopg.Connection[dict[str, Any]]) -> str:
    row = conn.execute("SHOW temp_buffers").fetchone()
    assert row is not None
    return str(row["temp_buffers"])


def test_a_new_session_gets_the_room_and_keeps_it_after_the_call(stack: Any) -> None:
    with _connect(stack) as conn:
        assert db.room_for_temp_tables(conn) is True
        assert _temp_buffers(conn) == db.TEMP_BUFFERS
        with conn.transaction():  # the same value again, temp tables used: still allowed
            conn.execute("CREATE TEMP TABLE t (x int) ON COMMIT DROP")
            assert db.room_for_temp_tables(conn) is True
        assert _temp_buffers(conn) == db.TEMP_BUFFERS


def test_a_session_that_used_temp_tables_keeps_its_value_and_its_transaction(stack: Any) -> None:
    with _connect(stack) as conn:
        before = _temp_buffers(conn)
        with conn.transaction():
            conn.execute("CREATE TEMP TABLE t (x int) ON COMMIT DROP")
        with conn.transaction():
            conn.execute("CREATE TEMP TABLE kept (x int)")
            conn.execute("INSERT INTO kept VALUES (1)")
            assert db.room_for_temp_tables(conn) is False  # PostgreSQL refused; no error
            conn.execute("INSERT INTO kept VALUES (2)")  # the transaction goes on
        assert _temp_buffers(conn) == before
        row = conn.execute("SELECT count(*) AS n FROM kept").fetchone()
        assert row is not None
        assert row["n"] == 2


def test_outside_a_transaction_the_setting_stays_for_the_session(stack: Any) -> None:
    with _connect(stack) as conn:
        assert db.room_for_temp_tables(conn) is True
        conn.execute("CREATE TEMP TABLE t (x int)")
        assert _temp_buffers(conn) == db.TEMP_BUFFERS
