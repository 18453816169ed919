"""The benchmark scripts still run (on tiny data), so their figures can always be re-measured."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

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
    assert "RATIO import / COPY:" in _run(tmp_path, "import_vs_copy.py", "--rows", "2000")


def test_export_vs_copy_runs_end_to_end_on_a_small_dataset(tmp_path: Path) -> None:
    out = _run(tmp_path, "export_vs_copy.py", "--rows", "2000", "--memory-rows", "3000")
    assert "identical to the commit's COPY: True" in out
    assert "the same lines as the plain table's COPY: True" in out
    assert out.strip().splitlines()[-1].startswith("RATIO export / COPY TO:")


def test_the_load_run_runs_on_a_few_clients(tmp_path: Path) -> None:
    out = _run(tmp_path, "load.py", "--clients", "3", "--seconds", "2")
    assert "RESULT sign p99" in out
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
