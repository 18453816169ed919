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


def test_the_load_run_runs_on_a_few_clients(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "load.py"), "--clients", "3", "--seconds", "2"],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "RESULT sign p99" in done.stdout
    assert "5xx: 0;" in done.stdout, done.stdout
