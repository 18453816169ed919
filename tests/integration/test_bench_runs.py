"""The benchmark scripts still run (on tiny data), so their figures can always be re-measured."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from sluiceway import blocks

ROOT = Path(__file__).resolve().parents[2]


def _run(tmp_path: Path, script: str, *args: str) -> str:
    done = subprocess.run(
        [sys.executable, str(ROOT / "bench" / script), *args],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def test_import_vs_copy_runs_end_to_end_on_a_small_file(tmp_path: Path) -> None:
    out = _run(tmp_path, "import_vs_copy.py", "--rows", "2000")
    assert "RATIO import / COPY:" in out
    assert out.strip().splitlines()[-1].startswith("RATIO re-import (1% changed) / first import:")


def test_the_import_ladder_runs_every_step_of_a_range_on_two_backends(tmp_path: Path) -> None:
    out = _run(
        tmp_path,
        "import_ladder.py",
        *("--rows", "3000", "--runs", "1", "--waits", "--set", "wal_writer_delay=200ms"),
    )
    assert "server settings changed from the stack's: wal_writer_delay=200ms" in out
    for step in ("copy", "hash", "leaves", "store"):
        assert f"RESULT step {step}" in out
        assert f"  waits {step}" in out
    assert out.strip().splitlines()[-1].startswith("RATIO all four steps")


def test_the_floors_store_every_row_in_every_rung_and_read_them_back(tmp_path: Path) -> None:
    # the script stops if a rung stored another count of rows than the others, or if the rows
    # read back from the store are not the plain table's bytes
    out = _run(tmp_path, "floors.py", "--rows", "3000", "--runs", "1")
    assert "(3,000 rows, 30 new again)" in out  # every 100th row changed: 1% stored again
    for rung in ("logged", "keyed", "minimal", "again", "read"):
        assert f"RESULT rung {rung}" in out
    assert out.strip().splitlines()[-1].startswith("RATIO minimal (a durable, sha256-addressed")


def test_the_profile_paths_bench_runs_both_ways_at_every_share_of_changes(tmp_path: Path) -> None:
    out = _run(tmp_path, "profile_paths.py", "--rows", "3000", "--runs", "2")
    results = [line for line in out.splitlines() if line.startswith("RESULT ")]
    assert len(results) == 7
    assert "0.1% of rows changed" in results[0]
    assert results[-1].startswith("RESULT  50.0% of rows changed: inline ")
    assert results[-1].endswith("the range's first rows pick inline")


def test_the_block_reuse_prototypes_make_the_same_rows_as_load(tmp_path: Path) -> None:
    # the script stops unless every way gives the same rows in the same order
    out = _run(tmp_path, "block_reuse.py", "--rows", "3000", "--runs", "1")
    results = [line for line in out.splitlines() if line.startswith("RESULT ")]
    assert [r.split(":")[0] for r in results] == [
        "RESULT load.py",
        "RESULT row memo",
        "RESULT leaf blocks",
        "RESULT leaf blocks, COPY all",
    ]
    assert all("re-import / its first import" in r for r in results)
    assert "run 0 re-import, leaf blocks" in out


def test_the_leaf_cut_bench_cuts_the_same_leaves_both_ways(tmp_path: Path) -> None:
    out = _run(tmp_path, "leaf_cut.py", "--rows", "3000", "--runs", "2")
    assert "3,000 rows, " in out
    assert "leaves, the same both ways" in out
    assert "RESULT dense (pos 1..N): best " in out
    assert out.strip().splitlines()[-1].startswith("RATIO dense / numbered, best of each:")


def test_the_store_growth_bench_inserts_each_steps_rows_as_new(tmp_path: Path) -> None:
    out = _run(tmp_path, "store_growth.py", "--range-rows", "3000", "--steps", "3")
    lines = out.strip().splitlines()
    assert lines[0].startswith("step 0: into 0 stored rows")
    assert lines[2].startswith("step 2: into 6,000 stored rows")  # every step's rows were new
    assert "RESULT last step, into 6,000 stored rows: insert " in out
    assert lines[-1].startswith("RATIO insert a row, last step / first:")


def test_export_vs_copy_runs_end_to_end_on_a_small_dataset(tmp_path: Path) -> None:
    out = _run(tmp_path, "export_vs_copy.py", "--rows", "2000", "--memory-rows", "3000")
    assert "identical to the commit's COPY: True" in out
    assert "the same lines as the plain table's COPY: True" in out
    assert out.strip().splitlines()[-1].startswith("RATIO export / COPY TO:")


def test_the_load_run_runs_on_a_few_clients(tmp_path: Path) -> None:
    out = _run(tmp_path, "load.py", "--clients", "3", "--seconds", "2")
    assert "RESULT sign p99" in out
    assert "5xx: 0;" in out, out


def test_the_paced_load_run_spaces_its_clients_at_random(tmp_path: Path) -> None:
    out = _run(
        tmp_path,
        "load.py",
        "--clients",
        "3",
        "--seconds",
        "2",
        "--client-rate",
        "5",
        "--baseline-seconds",
        "1",
    )
    assert "clients: 3 (5 requests/s each, poisson arrivals)" in out, out
    assert "5xx: 0;" in out, out


def test_formats_bench_runs_end_to_end_on_small_files(tmp_path: Path) -> None:
    out = _run(tmp_path, "formats.py", "--rows", "300", "--xlsx-rows", "50")
    assert "x CSV" in out
    assert "xlsx:" in out


def test_versioning_bench_runs_end_to_end_on_small_files(tmp_path: Path) -> None:
    out = _run(
        tmp_path,
        "versioning.py",
        *("--rows", "3000,6000", "--block", "50", "--repeat", "1", "--scale-lists", "100"),
    )
    assert "delete block (50 rows)" in out
    assert "0% changed (10% file again)" in out
    assert "L = 100 (~" in out
    assert "diff time at 6,000 rows / at 3,000 rows (same change)" in out


def test_the_planner_bench_plans_a_large_synthetic_object_reading_few_bytes(
    tmp_path: Path,
) -> None:
    out = _run(tmp_path, "plan_big_object.py", "--size", "1GB", "--chunk-size", "64MiB")
    last = out.strip().splitlines()
    assert last[-2].startswith("RESULT plan seconds:")
    assert "16 raw ranges" in out
    read = int(last[-1].split("bytes read: ")[1].split(" ")[0].replace(",", ""))
    assert 0 < read < 10**9 // 100  # under 1% of the object


def test_the_1tb_simulation_plans_within_the_state_machine_limits(tmp_path: Path) -> None:
    # small: 20 GB in 256 MiB ranges runs the same planner, scans, fold and checks
    out = _run(tmp_path, "simulate_1tb.py", "--size", "20GB", "--map-concurrency", "8")
    assert "BROKEN" not in out
    assert out.strip().splitlines()[-1] == "RESULT within limits: True"


def test_the_1tb_simulation_says_when_a_limit_is_broken(tmp_path: Path) -> None:
    # 20 GB in 256 MiB ranges loading at 0.2 MiB/s: a range would outlast Lambda's 15 minutes
    done = subprocess.run(
        [
            *(sys.executable, str(ROOT / "bench" / "simulate_1tb.py")),
            *("--size", "20GB", "--load-mib-s", "0.2", "--map-concurrency", "8"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        cwd=tmp_path,
    )
    assert done.returncode == 1, done.stderr[-3000:]
    assert "check: one load range < 15 min of Lambda: BROKEN" in done.stdout
    assert "check: load results, if gathered, < 256 KiB: ok" in done.stdout
    assert done.stdout.strip().splitlines()[-1] == "RESULT within limits: False"


def test_the_scale_bench_runs_two_sizes(tmp_path: Path) -> None:
    out = _run(tmp_path, "import_scale.py", "--rows", "2000,4000", "--chunk-size", "64KiB")
    last = out.strip().splitlines()
    assert last[-2].startswith("RESULT 2,000 rows:")
    assert last[-1].startswith("RESULT 4,000 rows:")
    assert "x the 2,000-row import's" in last[-1]


def test_the_profile_script_reports_states_and_statements(tmp_path: Path) -> None:
    out = _run(
        tmp_path, "profile_import.py", *("--rows", "2000", "--chunk-size", "64KiB", "--top", "40")
    )
    assert "Load ranges in parallel" in out
    assert "INSERT INTO dsa_core.row_store" in out
    assert re.search(r"^WAL: [\d,]+ MB in [\d,]+ records, ", out, re.M)
    # the backends extended row_store (and its key) as they loaded the rows
    assert re.search(r"^  client backend +relation +normal +read .* extended +[1-9]", out, re.M)
    assert re.search(r"^  row_store +2,000 rows", out, re.M)
    assert re.search(r"^  block_leaves +[\d,]+ rows", out, re.M)
    assert re.search(r"^CPU s of the upload and the job: stack [\d.]+, workers", out, re.M)
    assert out.strip().splitlines()[-1].startswith("RESULT upload")


def test_the_block_cut_bench_cuts_the_whole_file_into_blocks(tmp_path: Path) -> None:
    out = _run(tmp_path, "block_cut.py", "--rows", "3000", "--runs", "1", "--piece", "4KiB")
    assert re.search(r"^cut in Python: [\d.]+ s \(\d+ MB/s\), [\d,]+ blocks$", out, re.M)
    assert re.search(
        r"^RESULT \d+\.\d\d records a block; cut in Python / floor: \d+\.\d\dx$", out, re.M
    )
    if blocks._native is not None:  # the C cut, checked to make the same blocks
        assert re.search(r"^cut in C: [\d.]+ s \(\d+ MB/s\), [\d,]+ blocks$", out, re.M)
        last = out.strip().splitlines()[-1]
        assert re.match(
            r"RESULT cut in C / floor: \d+\.\d\dx; cut in C / cut in Python: \d+\.\d\dx$", last
        )
    else:
        assert "cut in C: not built here" in out


def test_the_change_counts_bench_compares_memory_with_sql(tmp_path: Path) -> None:
    out = _run(tmp_path, "change_counts.py", "--rows", "3000", "--runs", "1")
    assert "{'added': 0, 'removed': 0, 'changed': 30}" in out
    last = out.strip().splitlines()[-1]
    assert re.match(r"RESULT change counts in memory / SQL diff: \d+\.\d\dx$", last)


def test_the_range_statements_bench_compares_the_two_insert_plans(tmp_path: Path) -> None:
    out = _run(tmp_path, "range_statements.py", "--range-rows", "2000", "--store-rows", "6000")
    assert "row_store holds 6,000 rows" in out
    last = out.strip().splitlines()[-1]
    assert last.startswith("RESULT insert of one range into 6,000 rows: planner's")
    assert "probes" in last


def test_the_export_profile_times_each_stage_of_one_part(tmp_path: Path) -> None:
    out = _run(tmp_path, "export_profile.py", "--rows", "2000", "--part-rows", "1000")
    assert "one part of 1,000 rows" in out
    assert "+ probe row_store in hash order:" in out
    assert out.strip().splitlines()[-1].startswith("RATIO part / plain COPY TO:")


def test_export_layouts_runs_on_a_small_dataset(tmp_path: Path) -> None:
    out = _run(tmp_path, "export_layouts.py", "--rows", "2000", "--part-rows", "1000")
    assert out.count("the same rows in order: True") == 5, out
    assert out.strip().splitlines()[-1].startswith("RATIO baseline COPY TO STDOUT")


def test_the_local_s3_bench_reads_back_what_it_wrote_with_and_without_the_patches(
    tmp_path: Path,
) -> None:
    out = _run(tmp_path, "local_s3.py", "--mib", "24", "--range-mib", "8")
    assert "run 1, moto shipped: part PUTs " in out
    assert "run 1, moto stack  : part PUTs " in out
    assert "RESULT moto stack: server " in out
    assert "RATIO ranged GETs (load), stack / as shipped:" in out
    assert out.strip().splitlines()[-1].startswith("RATIO whole GET, stack / as shipped:")
