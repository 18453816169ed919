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


def test_export_vs_copy_runs_end_to_end_on_a_small_dataset(tmp_path: Path) -> None:
    done = subprocess.run(
        [
            sys.executable,
            str(ROOT / "bench" / "export_vs_copy.py"),
            *("--rows", "2000", "--memory-rows", "3000"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "identical to the commit's COPY: True" in done.stdout
    assert "the same lines as the plain table's COPY: True" in done.stdout
    assert done.stdout.strip().splitlines()[-1].startswith("RATIO export / COPY TO:")
