"""The benchmark scripts still run (on tiny data), so their figures can always be re-measured."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_import_vs_copy_runs_end_to_end_on_a_small_file(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "import_vs_copy.py"), "--rows", "2000"],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "RATIO import / COPY:" in done.stdout


def test_formats_bench_runs_end_to_end_on_small_files(tmp_path: Path) -> None:
    done = subprocess.run(
        [
            sys.executable,
            str(ROOT / "bench" / "formats.py"),
            "--rows",
            "300",
            "--xlsx-rows",
            "50",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "x CSV" in done.stdout
    assert "xlsx:" in done.stdout
