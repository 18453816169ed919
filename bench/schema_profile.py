"""What a range's schema profile and rule check cost, against the COPY that fills the range.

Usage: python bench/schema_profile.py [--rows N]

Writes N rows of sluiceway.sample's 8 mixed columns (integers, numbers, booleans, timestamps,
text with commas, quotes and newlines), starts an embedded PostgreSQL of its own, and times,
on the same temporary table of text columns the load uses: COPY of the CSV, the profile query
every range runs (:func:`sluiceway.schema.profile_query`), and the rule check of a range whose
import declares two typed columns (:func:`sluiceway.rules.violations_query`). Prints seconds
and each step's ratio to the COPY. Run it with the load average beside its figures.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import psycopg
from psycopg import sql
from psycopg.rows import dict_row

from sluiceway import db, rules, schema
from sluiceway.local.stack import start_embedded_postgres
from sluiceway.sample import COLUMNS, write_csv


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=1_000_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        source = write_csv(Path(tmp) / "rows.csv", args.rows)
        server, url = start_embedded_postgres(Path(tmp) / "home")
        table = sql.Identifier("sluiceway_raw")
        idents = [sql.Identifier(f"c{i}") for i in range(1, len(COLUMNS) + 1)]
        checked = rules.Rules.model_validate(
            {
                "columns": {
                    "id": {"type": "integer", "nullable": False},
                    "amount": {"type": "number"},
                }
            }
        )
        with psycopg.connect(url, autocommit=True, row_factory=dict_row) as conn:
            db.room_for_temp_tables(conn)
            conn.execute(
                sql.SQL(
                    "CREATE TEMP TABLE {} (ord bigint GENERATED ALWAYS AS IDENTITY, {})"
                ).format(table, sql.SQL(", ").join(sql.SQL("{} text").format(c) for c in idents))
            )
            started = time.perf_counter()
            with (
                conn.cursor() as cur,
                cur.copy(
                    sql.SQL("COPY {} ({}) FROM STDIN (FORMAT csv, HEADER)").format(
                        table, sql.SQL(", ").join(idents)
                    )
                ) as copy,
                source.open("rb") as f,
            ):
                while block := f.read(1 << 20):
                    copy.write(block)
            copied = time.perf_counter() - started

            started = time.perf_counter()
            found = schema.profile(conn, table, COLUMNS)
            profiled = time.perf_counter() - started
            types = [schema.type_of_mask(found["columns"][c]["mask"]) for c in COLUMNS]

            query = rules.violations_query(table, COLUMNS, checked)
            assert query is not None
            started = time.perf_counter()
            broken = conn.execute(query).fetchall()
            ruled = time.perf_counter() - started
        server.cleanup() if hasattr(server, "cleanup") else None
    load = os.getloadavg()[0]
    print(f"rows {args.rows:,} x {len(COLUMNS)} columns; load average {load:.2f}")
    print(f"inferred: {dict(zip(COLUMNS, types, strict=True))}; rule breaks {len(broken)}")
    print(f"COPY into the raw table   {copied:7.2f} s")
    print(f"profile (every range)     {profiled:7.2f} s  {profiled / copied:5.2f}x COPY")
    print(f"rule check, 2 columns     {ruled:7.2f} s  {ruled / copied:5.2f}x COPY")


if __name__ == "__main__":
    main()
