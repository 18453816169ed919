"""Schema inference and evolution: an import records its columns' types; a later import whose
columns differ is accepted as evolution or refused, as the dataset's rule says."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import psycopg
import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tests.conftest import import_bytes, main_commit

from sluiceway.cli import cli
from sluiceway.client import Client

Conn = psycopg.Connection[dict[str, Any]]

TYPED = (
    b"id,price,ok,day,at,name,maybe,big\n"
    b"1,2.5,true,2024-01-02,2024-01-02T03:04:05Z,Ann,7,12345678901234567890123\n"
    b"2,-3,false,2024-02-29,2024-01-02 03:04,Bob,,1\n"
    b'3,1e3,yes,2023-12-31,2024-01-02,"C, y",9,2\n'
)
EXPECTED = [
    {"name": "id", "type": "integer", "nullable": False},
    {"name": "price", "type": "number", "nullable": False},
    {"name": "ok", "type": "boolean", "nullable": False},
    {"name": "day", "type": "date", "nullable": False},
    {"name": "at", "type": "timestamp", "nullable": False},
    {"name": "name", "type": "text", "nullable": False},
    {"name": "maybe", "type": "integer", "nullable": True},
    {"name": "big", "type": "number", "nullable": False},  # beyond bigint, still a double
]


def _schema(client: Client, dataset: str) -> Any:
    return client.call("GET", f"/datasets/{dataset}")["schema"]


def _completed(job: dict[str, Any]) -> dict[str, Any]:
    assert job["status"] == "completed", job["error_message"]
    return job


@pytest.mark.parametrize("chunk_bytes", [None, 1, 40])
def test_an_import_records_its_columns_and_their_types(
    client: Client, tmp_path: Path, dataset_name: str, chunk_bytes: int | None
) -> None:
    # When a CSV of typed columns is imported, whole or cut into many ranges
    job = _completed(import_bytes(client, tmp_path, TYPED, dataset_name, chunk_bytes=chunk_bytes))
    # Then the dataset (and the job's summary) show each column's type and nullability
    assert _schema(client, dataset_name) == EXPECTED
    assert job["output_summary"]["schema"] == EXPECTED


def test_values_that_only_look_typed_stay_text(
    client: Client, tmp_path: Path, dataset_name: str
) -> None:
    # PostgreSQL's own inputs accept these, the shapes do not: they are not numbers or dates
    # ... and a ZIP code column keeps its leading zeros: codes, not integers
    data = b"a,b,c,d,zip\n1_000,today,0x1F,2024-02-30,02134\n2,2024-01-01,3,2024-01-01,10001\n"
    _completed(import_bytes(client, tmp_path, data, dataset_name))
    assert [c["type"] for c in _schema(client, dataset_name)] == ["text"] * 5


def test_json_lines_keep_numbers_and_booleans_typed(
    client: Client, tmp_path: Path, dataset_name: str
) -> None:
    data = b'{"n": 1, "x": 1.5, "b": true, "s": "z"}\n{"n": 2, "x": 2, "b": false, "s": null}\n'
    _completed(import_bytes(client, tmp_path, data, dataset_name, filename="d.jsonl"))
    assert _schema(client, dataset_name) == [
        {"name": "n", "type": "integer", "nullable": False},
        {"name": "x", "type": "number", "nullable": False},
        {"name": "b", "type": "boolean", "nullable": False},
        {"name": "s", "type": "text", "nullable": True},
    ]


def test_append_widens_types_and_a_column_only_one_side_has_is_nullable(
    client: Client, tmp_path: Path, dataset_name: str
) -> None:
    _completed(import_bytes(client, tmp_path, b"id,v\n1,2\n", dataset_name))
    _completed(import_bytes(client, tmp_path, b"id,v,w\n2,2.5,x\n", dataset_name, mode="append"))
    assert _schema(client, dataset_name) == [
        {"name": "id", "type": "integer", "nullable": False},
        {"name": "v", "type": "number", "nullable": False},
        {"name": "w", "type": "text", "nullable": True},
    ]


def _set_rules(client: Client, dataset: str, rules: dict[str, Any]) -> None:
    client.call("PUT", f"/datasets/{dataset}/rules", rules)


def test_add_columns_accepts_a_new_column_as_nullable(
    client: Client, tmp_path: Path, dataset_name: str
) -> None:
    # Given a dataset whose rule accepts new columns
    _completed(import_bytes(client, tmp_path, b"id,name\n1,a\n2,b\n", dataset_name))
    _set_rules(client, dataset_name, {"schema_changes": "add_columns"})
    # When a file with one more column replaces its rows
    _completed(import_bytes(client, tmp_path, b"id,name,email\n3,c,c@x\n", dataset_name))
    # Then the new column is in the schema, nullable (the older rows have no value there)
    assert _schema(client, dataset_name) == [
        {"name": "id", "type": "integer", "nullable": False},
        {"name": "name", "type": "text", "nullable": False},
        {"name": "email", "type": "text", "nullable": True},
    ]


@pytest.mark.parametrize(
    ("policy", "data", "said"),
    [
        ("add_columns", b"id\n3\n", "removed column(s) 'name'"),
        ("add_columns", b"id,name\nx,c\n", "type change(s): 'id' is text in the file, integer in"),
        ("add_columns", b"id,name\n3,\n", "empty values in column(s) that had none: 'name'"),
        ("reject", b"id,name,email\n3,c,c@x\n", "added column(s) 'email' (text)"),
    ],
)
def test_a_schema_change_the_rule_refuses_fails_and_main_stays(
    client: Client,
    db: Conn,
    tmp_path: Path,
    dataset_name: str,
    policy: str,
    data: bytes,
    said: str,
) -> None:
    _completed(import_bytes(client, tmp_path, b"id,name\n1,a\n2,b\n", dataset_name))
    before = main_commit(db, dataset_name)
    _set_rules(client, dataset_name, {"schema_changes": policy})

    job = import_bytes(client, tmp_path, data, dataset_name, filename="next.csv")

    assert job["status"] == "failed"
    message = job["error_message"]
    assert message.startswith("next.csv: its columns differ from the schema of dataset"), message
    assert f"(schema_changes: {policy})" in message
    assert said in message, message
    assert main_commit(db, dataset_name) == before


def test_a_narrower_type_fits_and_an_import_rule_overrides_the_dataset_rule(
    client: Client, tmp_path: Path, dataset_name: str
) -> None:
    _completed(import_bytes(client, tmp_path, b"id,v\n1,2.5\n", dataset_name))
    _set_rules(client, dataset_name, {"schema_changes": "reject"})
    # integers fit a number column: no difference
    _completed(import_bytes(client, tmp_path, b"id,v\n2,3\n", dataset_name))
    assert _schema(client, dataset_name)[1] == {"name": "v", "type": "number", "nullable": False}
    # the import's own rule wins over the dataset's
    _completed(
        import_bytes(
            client, tmp_path, b"id,w\n3,x\n", dataset_name, rules={"schema_changes": "allow"}
        )
    )
    assert [c["name"] for c in _schema(client, dataset_name)] == ["id", "w"]


def test_the_cli_shows_the_schema_and_sets_rules(
    stack: Any, client: Client, tmp_path: Path, dataset_name: str
) -> None:
    _completed(import_bytes(client, tmp_path, TYPED, dataset_name))

    def run(*args: str) -> Any:
        result = CliRunner().invoke(
            cli, ["--api", stack.api_url, "--token", stack.local_token, *args]
        )
        assert result.exit_code == 0, result.output
        return result

    shown = json.loads(run("schema", dataset_name, "--json").stdout)
    assert shown == {"dataset": dataset_name, "schema": EXPECTED}
    assert "timestamp" in run("schema", dataset_name).stdout

    rules = {"min_records": 2, "columns": {"id": {"type": "integer", "nullable": False}}}
    set_ = json.loads(run("rules", dataset_name, "--set", json.dumps(rules), "--json").stdout)
    assert set_["rules"] == rules
    assert client.call("GET", f"/datasets/{dataset_name}")["rules"] == rules
    assert json.loads(run("rules", dataset_name, "--clear", "--json").stdout)["rules"] == {}


def test_a_merge_commit_has_the_union_of_both_sides_schemas(
    client: Client, tmp_path: Path, dataset_name: str
) -> None:
    def upsert(data: bytes, **more: Any) -> None:
        _completed(
            import_bytes(client, tmp_path, data, dataset_name, mode="upsert", key=["id"], **more)
        )

    upsert(b"id,score\n1,10\n2,20\n")
    client.call("POST", f"/datasets/{dataset_name}/refs", {"name": "dev"})
    upsert(b"id,score\n1,10.5\n", branch="dev")  # dev: a fractional score
    upsert(b"id,score\n3,30\n")  # main: another integer
    merged = client.call("POST", f"/datasets/{dataset_name}/merge", {"source": "dev"})
    assert merged["result"] == "merged"
    assert _schema(client, dataset_name) == [
        {"name": "id", "type": "integer", "nullable": False},
        {"name": "score", "type": "number", "nullable": False},
    ]


MASKS = {
    "1": 7, "0": 7, "12": 3, "-5": 3, "+7": 3, " 8 ": 3,
    "9223372036854775807": 3, "9223372036854775808": 2, "12345678901234567890": 2,
    "1.5": 2, ".5": 2, "-1e3": 2, "1e400": 0, "1" * 400: 0, "1_000": 0, "0x1F": 0,
    "NaN": 0, "Infinity": 0, "true": 4, "N": 4, "Yes": 4, "maybe": 0,
    "2024-02-29": 24, "2023-02-29": 0, "2024-13-01": 0, "0000-01-01": 0, "2024-01-31": 24,
    "2024-04-31": 0, "2024-01-02T03:04:05Z": 16, "2024-01-02 03:04": 16,
    "2024-01-02T03:04:05.123456789+05:30": 16, "2024-01-02T25:00": 0, "2023-02-29T00:00": 0,
    "today": 0, "epoch": 0, "Jan 2 2024": 0,
    "007": 0, "-01": 0, "00": 0, "00.5": 0, "02134": 0, "0.5": 2, "-0.25": 2, "+0": 3, "0e3": 2,
}  # fmt: skip


def test_what_each_value_fits(db: Conn) -> None:
    from psycopg import sql

    from sluiceway import schema

    query = sql.SQL("SELECT v, {} AS mask FROM unnest(%s::text[]) AS t(v)").format(
        schema.fit_mask(sql.Identifier("v"))
    )
    found = {r["v"]: r["mask"] for r in db.execute(query, (list(MASKS),)).fetchall()}
    assert found == MASKS


def test_the_sample_pass_reads_only_its_rows_and_the_profile_does_not_depend_on_them(
    db: Conn,
) -> None:
    from psycopg import sql

    from sluiceway import schema

    # Given a range's raw table of 20,000 rows whose first thousand are all integers, and a
    # later one that is not (a sample of the first rows guesses wrong for column c1).
    table = sql.Identifier("sluiceway_sample_test")
    with db.transaction():
        db.execute(
            sql.SQL(
                "CREATE TEMP TABLE {} ON COMMIT DROP AS SELECT g AS ord, g::text AS c1, "
                "CASE WHEN g % 3 = 0 THEN '' ELSE 'x' || g END AS c2 "
                "FROM generate_series(1, 20000) g"
            ).format(table)
        )
        db.execute(sql.SQL("UPDATE {} SET c1 = 'n/a' WHERE ord = 15000").format(table))
        # When the sample pass runs, its scan stops after the sample's rows.
        plan = db.execute(
            sql.SQL("EXPLAIN (ANALYZE, FORMAT JSON) {}").format(schema._masks(table, 2))
        ).fetchone()
        assert plan is not None
        scans: list[dict[str, Any]] = []

        def walk(node: dict[str, Any]) -> None:
            if node["Node Type"] == "Seq Scan":
                scans.append(node)
            for child in node.get("Plans", []):
                walk(child)

        doc = plan["QUERY PLAN"]
        walk((json.loads(doc) if isinstance(doc, str) else doc)[0]["Plan"])
        read = [s["Actual Rows"] + s.get("Rows Removed by Filter", 0) for s in scans]
        assert read == [schema.SAMPLE_ROWS]
        # And the profile is exact all the same: c1 is text for the one value, c2 has empties.
        found = schema.profile(db, table, ["c1", "c2"])
    assert found == {
        "rows": 20000,
        "columns": {"c1": {"nullable": False, "mask": 0}, "c2": {"nullable": True, "mask": 0}},
    }


_VALUES = [*MASKS, "", None, "1", "0", "true", "12", "2.5", "2024-01-02", "x"]


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    width=st.integers(1, 23),
    rows=st.lists(st.lists(st.sampled_from(_VALUES), min_size=23, max_size=23), max_size=12),
    sample_rows=st.integers(1, 4),
)
def test_the_packed_profile_is_each_columns_and_of_masks_and_its_empties(
    db: Conn,
    monkeypatch: pytest.MonkeyPatch,
    width: int,
    rows: list[list[str | None]],
    sample_rows: int,
) -> None:
    """Against the definition, value by value: a column is nullable if a value is empty, and
    its mask is the AND of its non-empty values' full masks (None: no such value). Up to 23
    columns (three codes of nine), with a sample of a few rows, so the cheap tests it picks
    are often wrong for the later rows."""
    from psycopg import sql

    from sluiceway import load, schema

    monkeypatch.setattr(schema, "SAMPLE_ROWS", sample_rows)
    names = [f"c{i}" for i in range(1, width + 1)]
    table = sql.Identifier("packed_profile")
    with db.transaction():
        db.execute(load.create_raw_table(table, width))
        with db.cursor().copy(
            sql.SQL("COPY {} ({}) FROM STDIN").format(
                table, sql.SQL(", ").join(map(sql.Identifier, names))
            )
        ) as copy:
            for row in rows:
                copy.write_row(row[:width])
        found = schema.profile(db, table, names)
        expected: dict[str, Any] = {}
        for n in names:
            c = sql.Identifier(n)
            one = db.execute(
                sql.SQL(
                    "SELECT coalesce(bool_or({empty}), false) AS nullable, "
                    "bit_and({mask}) FILTER (WHERE NOT {empty}) AS mask FROM {t}"
                ).format(empty=schema.is_empty(c), mask=schema.fit_mask(c), t=table)
            ).fetchone()
            assert one is not None
            expected[n] = {"nullable": one["nullable"], "mask": one["mask"]}
    assert found == {"rows": len(rows), "columns": expected}


def test_an_import_of_many_columns_types_each_of_them(client: Client, tmp_path: Path) -> None:
    """Columns past the ninth are packed into a second code: each keeps its own type."""
    header = [f"k{i:02d}" for i in range(1, 13)]
    kinds = ["1", "2.5", "true", "2024-01-02", "2024-01-02T03:04Z", "x"] * 2
    body = ",".join(header) + "\n" + ",".join(kinds) + "\n" + ",".join(kinds[:-1]) + ",\n"
    _completed(import_bytes(client, tmp_path, body.encode(), "wide", filename="wide.csv"))
    types = ["integer", "number", "boolean", "date", "timestamp", "text"] * 2
    assert _schema(client, "wide") == [
        {"name": n, "type": t, "nullable": n == "k12"} for n, t in zip(header, types, strict=True)
    ]


def _leaf_table_csv(salt: str, changed: dict[int, str]) -> bytes:
    """3,000 rows: id, qty (digits), note (empty in every 50th row, else with ``salt``: rows
    no other test stores), flag; ``changed``: rows whose qty becomes that text."""
    lines = ["id,qty,note,flag"]
    for i in range(1, 3001):
        note = "" if i % 50 == 0 else f"note {i} {salt}"
        lines.append(f"{i},{changed.get(i, str(i % 97))},{note},{'true' if i % 3 else 'false'}")
    return ("\n".join(lines) + "\n").encode()


def _range_profiles(db: Conn, job_id: str) -> list[dict[str, Any]]:
    rows = db.execute(
        "SELECT profile FROM dsa_jobs.import_chunks WHERE job_id = %s ORDER BY chunk_no",
        (job_id,),
    ).fetchall()
    return [r["profile"] for r in rows]


def _commit_leaf_profiles(db: Conn, commit_id: str) -> list[Any]:
    rows = db.execute(
        "SELECT l.profile FROM dsa_core.commits c "
        "JOIN dsa_core.commit_chunks cc ON cc.commit_key = c.commit_key "
        "JOIN dsa_core.leaf_lists ll ON ll.list_hash = cc.list_hash "
        "CROSS JOIN LATERAL generate_series(1, ll.leaf_count) j "
        "JOIN dsa_core.row_leaves l "
        "  ON l.leaf_hash = substring(ll.leaf_hashes FROM (j - 1) * 32 + 1 FOR 32) "
        "WHERE c.commit_id = %s",
        (commit_id,),
    ).fetchall()
    return [r["profile"] for r in rows]


@pytest.mark.parametrize("chunk_bytes", [None, 16_000])
@pytest.mark.parametrize("forget", [False, True])
def test_a_reimport_profiles_only_its_new_leaves_and_finds_the_same_schema(
    client: Client,
    db: Conn,
    tmp_path: Path,
    dataset_name: str,
    chunk_bytes: int | None,
    forget: bool,
) -> None:
    """A re-import that finds most of its rows stored tests only the values of the leaves it
    did not find stored, and folds the stored leaves' profiles: the unchanged rows still say
    ``note`` is nullable, the changed ones that ``qty`` is text now. ``forget``: the stored
    leaves have no profile (stored before leaves kept one), so every row is tested again."""
    first = _completed(
        import_bytes(
            client,
            tmp_path / "a",
            _leaf_table_csv(dataset_name, {}),
            dataset_name,
            chunk_bytes=chunk_bytes,
        )
    )
    # every row tested, but those of blocks of bytes found stored (sluiceway.blocks: the rows
    # with no salt are the same in every test's file)
    for r in db.execute(
        "SELECT profile, coalesce(reused_rows, 0) AS reused FROM dsa_jobs.import_chunks "
        "WHERE job_id = %s",
        (first["job_id"],),
    ).fetchall():
        assert r["profile"]["tested_rows"] + r["reused"] == r["profile"]["rows"]
    commit = main_commit(db, dataset_name)
    assert commit is not None
    profiles = _commit_leaf_profiles(db, commit)
    # only the leaves that stitching rebuilt at the ranges' seams have none
    assert sum(p is None for p in profiles) <= 4 * (len(_range_profiles(db, first["job_id"])) - 1)
    if forget:  # as migration 0014 left a block whose leaf had none (when imports use blocks)
        for table in ("row_leaves", "block_leaves"):
            db.execute(
                f"UPDATE dsa_core.{table} SET profile = NULL WHERE profile IS NOT NULL AND "
                "leaf_hash IN (SELECT substring(ll.leaf_hashes FROM (j - 1) * 32 + 1 FOR 32) "
                "FROM dsa_core.commits c JOIN dsa_core.commit_chunks cc USING (commit_key) "
                "JOIN dsa_core.leaf_lists ll ON ll.list_hash = cc.list_hash "
                "CROSS JOIN LATERAL generate_series(1, ll.leaf_count) j WHERE c.commit_id = %s)",
                (commit,),
            )
    again = _completed(
        import_bytes(
            client,
            tmp_path / "b",
            _leaf_table_csv(dataset_name, {1234: "n/a", 2345: "7"}),
            dataset_name,
            chunk_bytes=chunk_bytes,
        )
    )
    ranges = _range_profiles(db, again["job_id"])
    tested, rows = sum(p["tested_rows"] for p in ranges), sum(p["rows"] for p in ranges)
    assert rows == 3000
    if forget:  # but for the ranges' edge leaves, cut apart from the commit's (tree.stitch)
        assert tested >= rows - 2 * 16 * len(ranges)
    else:
        assert 0 < tested < rows / 4  # the new leaves' rows, and the seams'
    assert _schema(client, dataset_name) == [
        {"name": "id", "type": "integer", "nullable": False},
        {"name": "qty", "type": "text", "nullable": False},
        {"name": "note", "type": "text", "nullable": True},
        {"name": "flag", "type": "boolean", "nullable": False},
    ]
    if not forget:  # the leaves it stored keep their profiles for the next one (leaves
        # found stored without one are left as they are: see migration 0012)
        profiles = _commit_leaf_profiles(db, main_commit(db, dataset_name) or "")
        assert sum(p is None for p in profiles) <= 4 * (len(ranges) - 1)
