"""Where an export's time goes, and what other layouts of a commit's rows would save.

Usage: python bench/export_layouts.py [--rows 1000000] [--part-rows 500000]

Imports N rows of the generated CSV (bench/import_vs_copy.py's file) through the pipeline on a
fresh embedded stack, then:
  1. exports the commit to CSV parts twice through the API and counts the CPU seconds of each
     process group meanwhile: PostgreSQL (postmaster and backends), this process (the stack:
     moto's S3, the API), and the worker processes (the export parts);
  2. on one backend, COPYs one part of R rows out in each shape of reading it:
     - ``probes``: what export_part.py runs for a small share of the store (the part's rows
       sorted by hash, each probed in row_store, sorted back by row number);
     - ``probes, unordered slice``: the same from a copy of commit_row_range without its
       ORDER BY (the probe shape sorts by hash anyway);
     - ``hash join``: export_part.py's shape for a large share of the store;
     - ``probes in row order``: no sorts, each row probed where it comes;
     - ``leaf payload``: a prototype layout where each leaf keeps its rows' values (built
       here, after the import, into a table of its own), read leaf by leaf, never probing
       row_store;
     and COPY TO STDOUT of R rows of a plain table of the same rows, the baseline.
The last lines are each shape's seconds and ratio to the baseline.
"""

from __future__ import annotations

import argparse
import contextlib
import time
from pathlib import Path

import psutil
import psycopg
from export_profile import _plain_table, _timed, imported_stack
from export_vs_copy import _positions, export_parts

RANGE = "dsa_core.commit_row_range(%(c)s, %(f)s, %(t)s)"
SLICE = "bench_row_slice(%(c)s, %(f)s, %(t)s)"
PAYLOAD = """
SELECT {fields}
FROM dsa_core.commits c
JOIN dsa_core.commit_chunks k ON k.commit_key = c.commit_key
JOIN dsa_core.leaf_lists ll ON ll.list_hash = k.list_hash
CROSS JOIN LATERAL (SELECT ll.leaf_hashes || ''::bytea AS hs,
                           ll.leaf_ends || '{{}}'::int[] AS ends OFFSET 0) m
CROSS JOIN LATERAL (
    SELECT substring(m.hs FROM (j - 1) * 32 + 1 FOR 32) AS leaf_hash,
           coalesce(m.ends[j - 1], 0) AS leaf_start, m.ends[j] AS leaf_end, j
    FROM generate_series(1, ll.leaf_count) j) le
JOIN bench_payload l ON l.leaf_hash = le.leaf_hash
CROSS JOIN LATERAL generate_series(
    greatest(1, %(f)s - k.row_offset - le.leaf_start),
    least(l.n::bigint, %(t)s - 1 - k.row_offset - le.leaf_start)) i
WHERE c.commit_id = %(c)s
  AND k.row_offset + k.row_count >= %(f)s AND k.row_offset + 1 < %(t)s
  AND k.row_offset + le.leaf_end >= %(f)s AND k.row_offset + le.leaf_start + 1 < %(t)s
ORDER BY k.row_offset, le.j, i
"""


def _cpu(home: Path) -> dict[str, float]:
    """CPU seconds so far of the stack's PostgreSQL, this process, and its worker children."""

    def own(p: psutil.Process) -> float:
        with contextlib.suppress(psutil.Error):
            t = p.cpu_times()
            return t.user + t.system
        return 0.0

    postmaster = psutil.Process(int((home / "pg" / "postmaster.pid").read_text().split()[0]))
    postgres = [postmaster, *postmaster.children(recursive=True)]
    pg_pids = {p.pid for p in postgres}
    me = psutil.Process()
    workers = [p for p in me.children(recursive=True) if p.pid not in pg_pids]
    # a backend that has exited (a part's own connection) counts in the postmaster's children
    reaped = postmaster.cpu_times()
    reaped_seconds = reaped.children_user + reaped.children_system
    return {
        "postgres": sum(own(p) for p in postgres) + reaped_seconds,
        "stack": own(me),
        "workers": sum(own(p) for p in workers),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--part-rows", type=int, default=500_000)
    args = parser.parse_args()
    with imported_stack(args.rows) as (stack, client, path, imported):
        home = stack.settings.home
        cid = imported["commit_id"]
        for n in (1, 2):
            before = _cpu(home)
            seconds = export_parts(client, "bench", None)[0]
            after = _cpu(home)
            spent = ", ".join(f"{k} {after[k] - before[k]:.2f}" for k in before)
            print(f"export {n} of {imported['rows']:,} rows: {seconds:.2f} s; CPU s: {spent}")

        fields = ", ".join(f"s.vals[{i}]" for i in _positions())
        by_hash = (
            "SELECT {fields} FROM (SELECT row_number, row_hash FROM {src} ORDER BY row_hash "
            "OFFSET 0) r CROSS JOIN LATERAL (SELECT s.vals FROM dsa_core.row_store s "
            "WHERE s.row_hash = r.row_hash OFFSET 0) s ORDER BY r.row_number"
        )
        shapes = {
            "probes": by_hash.format(fields=fields, src=RANGE),
            "probes, unordered slice": by_hash.format(fields=fields, src=SLICE),
            "hash join": f"SELECT {fields} FROM {RANGE} r JOIN dsa_core.row_store s "
            "ON s.row_hash = r.row_hash ORDER BY r.row_number",
            "probes in row order": f"SELECT {fields} FROM (SELECT row_number, row_hash "
            f"FROM {RANGE} OFFSET 0) r CROSS JOIN LATERAL (SELECT s.vals "
            "FROM dsa_core.row_store s WHERE s.row_hash = r.row_hash OFFSET 0) s",
            "leaf payload": PAYLOAD.format(
                fields=", ".join(f"l.vals[i][{p}]" for p in _positions())
            ),
        }
        params = {"c": cid, "f": 1, "t": args.part_rows + 1}
        with psycopg.connect(stack.database_url, autocommit=True) as conn:
            _plain_table(conn, path)
            conn.execute("SET max_parallel_workers_per_gather = 0")  # one backend, as a part
            source = conn.execute(
                "SELECT pg_get_functiondef('dsa_core.commit_row_range'::regproc)"
            ).fetchone()
            assert source is not None
            conn.execute(
                str(source[0])
                .replace("dsa_core.commit_row_range", "bench_row_slice")
                .replace("ORDER BY 1", "")
            )
            started = time.perf_counter()
            conn.execute(
                "CREATE TABLE bench_payload AS SELECT l.leaf_hash, l.row_count AS n, "
                "array_agg(s.vals ORDER BY i) AS vals FROM dsa_core.row_leaves l "
                "CROSS JOIN generate_series(1, l.row_count) i "
                "JOIN dsa_core.row_store s "
                "ON s.row_hash = substring(l.row_hashes FROM (i - 1) * 32 + 1 FOR 32) "
                "GROUP BY l.leaf_hash, l.row_count"
            )
            conn.execute("ALTER TABLE bench_payload ADD PRIMARY KEY (leaf_hash)")
            conn.execute("VACUUM ANALYZE bench_payload")
            built = time.perf_counter() - started
            sizes = conn.execute(
                "SELECT pg_total_relation_size('bench_payload'), "
                "pg_total_relation_size('dsa_core.row_store')"
            ).fetchone()
            assert sizes is not None
            print(
                f"leaf payload built in {built:.2f} s: {sizes[0] / 1e6:.0f} MB, "
                f"beside row_store's {sizes[1] / 1e6:.0f} MB"
            )
            expected = conn.execute(shapes["probes"], {**params, "t": 2001}).fetchall()
            results = {}
            for name, query in shapes.items():
                same = conn.execute(query, {**params, "t": 2001}).fetchall() == expected
                copy = f"COPY ({query}) TO STDOUT (FORMAT csv)"
                runs = [_timed(conn, copy, params) for _ in range(3)]
                results[name] = (min(runs), runs, same)
            baseline = min(
                _timed(
                    conn,
                    "COPY (SELECT * FROM bench_plain LIMIT %(n)s) TO STDOUT (FORMAT csv)",
                    {"n": args.part_rows},
                )
                for _ in range(3)
            )
    print(f"one part of {args.part_rows:,} rows on one backend, best of 3 (all 3):")
    for name, (best, runs, same) in results.items():
        listed = " / ".join(f"{r:.2f}" for r in runs)
        print(
            f"  {name}: {best:.2f} s ({listed}), {best / baseline:.1f}x the plain table; "
            f"the same rows in order: {same}"
        )
    print(f"RATIO baseline COPY TO STDOUT of {args.part_rows:,} plain rows: {baseline:.2f} s")


if __name__ == "__main__":
    main()
