"""A row's hash is its address in row_store, so it must never change: the load embeds the
column names' array text as a literal, and that text must be exactly PostgreSQL's own."""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tests.conftest import import_bytes

from sluiceway.client import Client
from sluiceway.load import array_text

HOSTILE = [
    "plain",
    "NULL",
    "null",
    "Null",
    "with space",
    "tab\there",
    "new\nline",
    "cr\rhere",
    "vt\vhere",
    "ff\fhere",
    '"quoted"',
    "back\\slash",
    "{braces}",
    "a,b",
    "ünïcödé ✓",
    "'; DROP TABLE dsa_core.commits; --",
    "NULLs",
    " ",
]


def _pg_text(db: Any, values: list[str]) -> str:
    found = db.execute("SELECT %s::text[]::text AS t", (values,)).fetchone()
    assert found is not None
    return str(found["t"])


def test_the_names_text_is_postgresqls_for_hostile_names(db: Any) -> None:
    assert array_text(HOSTILE) == _pg_text(db, HOSTILE)
    for name in HOSTILE:
        assert array_text([name]) == _pg_text(db, [name]), repr(name)


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    st.lists(
        st.text(
            st.one_of(
                st.sampled_from(list(' \t\n\r\v\f{},"\\NULnul')),
                st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"),
            ),
            max_size=8,
        ),
        min_size=1,
        max_size=6,
    )
)
def test_the_names_text_is_postgresqls_for_any_names(db: Any, names: list[str]) -> None:
    assert array_text(names) == _pg_text(db, names)


def test_a_stored_rows_hash_is_the_formula_over_postgresqls_cast_of_the_names(
    client: Client, tmp_path: Path, dataset_name: str, db: Any
) -> None:
    # Given a file whose header names all need quoting or escaping in an array's text.
    # (A bare CR is refused as a line ending, even quoted, so that name stays out.)
    names = [n for n in HOSTILE if n.strip() and "\r" not in n]
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(names)
    values = [f"{dataset_name}-{i}" for i in range(len(names))]
    writer.writerow(values)
    job = import_bytes(client, tmp_path, out.getvalue().encode(), dataset_name)
    assert job["status"] == "completed", job["error_message"]

    # Then its stored row's hash is sha256 over PostgreSQL's own text of the sorted names
    # and of the values in that order.
    order = sorted(range(len(names)), key=lambda i: names[i])
    expected = db.execute(
        "SELECT sha256(convert_to(%s::text[]::text || %s::text[]::text, 'UTF8')) AS h",
        ([names[i] for i in order], [values[i] for i in order]),
    ).fetchone()["h"]
    stored = db.execute(
        "SELECT row_hash FROM dsa_core.rows WHERE data->>'plain' = %s", (values[0],)
    ).fetchall()
    assert [bytes(s["row_hash"]) for s in stored] == [bytes(expected)]


def test_the_hash_statement_builds_each_rows_array_once(db: Any) -> None:
    from psycopg import sql

    from sluiceway import load

    # Given a range's raw table
    columns = ["b", "a", "c"]
    with db.transaction():
        db.execute(
            "CREATE TEMP TABLE hash_plan_raw (ord bigint, c1 text, c2 text, c3 text) ON COMMIT DROP"
        )
        db.execute("INSERT INTO hash_plan_raw VALUES (1, 'x', 'y', 'z')")
        statement = load.hash_rows(
            sql.Identifier("hash_plan_raw"),
            sql.Identifier("hash_plan_hashed"),
            columns,
            key=sql.SQL("NULL"),
        ).as_string(db)
        select = "SELECT " + statement.split(" AS SELECT ", 1)[1]

        # When PostgreSQL plans its SELECT, then the values' array is built in one place:
        # for the hash and for the stored vals alike, not once for each
        plan = [r["QUERY PLAN"] for r in db.execute("EXPLAIN (VERBOSE) " + select).fetchall()]
        built = sum(line.count("ARRAY[") for line in plan if "Output:" in line)
        assert built == 1, plan

        # and the hash is still the formula over the names' and the values' text
        db.execute(statement)
        row = db.execute(
            "SELECT h.row_hash = sha256(convert_to(%s::text[]::text || %s::text[]::text, "
            "'UTF8')) AS same, h.vals FROM hash_plan_hashed h",
            (["a", "b", "c"], ["y", "x", "z"]),
        ).fetchone()
        assert row == {"same": True, "vals": ["y", "x", "z"]}
