"""The upload page in real headless Chromium against the embedded stack.

``tests/e2e/upload.mjs`` drives the page with playwright-core (installed in web/ by
``make web``, which ``make test`` runs first); this test generates the file, runs the driver and
checks through the API that the upload became a commit. Without Chromium, Node.js or a built
page the tests skip and say why.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from sluiceway.client import Client

MiB = 1024 * 1024
HERE = Path(__file__).resolve().parent
WEB = HERE.parents[1] / "web"
DRIVER = HERE / "upload.mjs"
ROWS = 150_000  # about 12.6 MiB: three parts of 5 MiB


def _browser() -> tuple[str, str]:
    """Node.js and Chromium, or a skip that says what is missing."""
    node = shutil.which("node")
    chromium = os.environ.get("SLUICEWAY_CHROMIUM") or shutil.which("chromium")
    missing = []
    if not node:
        missing.append("Node.js (`node`)")
    if not chromium:
        missing.append("Chromium (Debian package `chromium`; .ci/run installs it)")
    if not (WEB / "node_modules" / "playwright-core").is_dir():
        missing.append("web/node_modules/playwright-core (run `make web`)")
    if not (WEB / "dist" / "index.html").is_file():
        missing.append("the built page web/dist (run `make web`)")
    if missing:
        pytest.skip("browser tests need " + ", ".join(missing))
    assert node
    assert chromium
    return node, chromium


def _csv(path: Path, rows: int) -> Path:
    path.write_bytes(
        b"id,text\n" + b"".join(f'{i},"row {i}, padded {"x" * 60}"\n'.encode() for i in range(rows))
    )
    return path


def _drive(url: str, dataset: str, file: Path, *, reload: bool = False) -> dict[str, Any]:
    node, chromium = _browser()
    args = {"url": url, "dataset": dataset, "file": str(file), "reload": reload}
    run = subprocess.run(
        [node, str(DRIVER), json.dumps({**args, "chromium": chromium})],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    lines = run.stdout.strip().splitlines()
    assert lines, f"the driver printed nothing (exit {run.returncode}): {run.stderr[-3000:]}"
    result: dict[str, Any] = json.loads(lines[-1])
    report = json.dumps(result, indent=1)[-6000:]
    assert "error" not in result, report
    assert run.returncode == 0, report
    return result


def _check_commit(client: Client, dataset: str, result: dict[str, Any]) -> None:
    assert result["status"] == "completed", result
    commits = client.call("GET", f"/datasets/{dataset}/commits")["commits"]
    assert [c["commit_id"] for c in commits] == [result["commit"]]
    assert commits[0]["row_count"] == ROWS
    assert commits[0]["columns"] == ["id", "text"]


def test_the_page_uploads_a_multipart_file_and_shows_its_commit(
    stack: Any, client: Client, dataset_name: str, tmp_path: Path
) -> None:
    _browser()
    file = _csv(tmp_path / "page.csv", ROWS)
    assert 10 * MiB < file.stat().st_size <= 15 * MiB
    result = _drive(f"{stack.api_url}/app/", dataset_name, file)
    _check_commit(client, dataset_name, result)
    # three 5 MiB parts went straight to S3, each signed by the API
    assert sorted(p["part"] for p in result["s3"] if p["status"] == 200) == [1, 2, 3]
    created = [
        c for c in result["api"] if c["method"] == "POST" and c["path"] == "/uploads/s3/multipart"
    ]
    assert len(created) == 1


def test_a_reload_mid_upload_resumes_where_it_stopped(
    stack: Any, client: Client, dataset_name: str, tmp_path: Path
) -> None:
    _browser()
    file = _csv(tmp_path / "resume.csv", ROWS)
    result = _drive(f"{stack.api_url}/app/", dataset_name, file, reload=True)
    _check_commit(client, dataset_name, result)
    sent = [(p["load"], p["part"]) for p in result["s3"] if p["status"] == 200]
    assert sent[0] == (0, 1), result["s3"]  # one part in S3 before the reload
    assert sorted(sent[1:]) == [(1, 2), (1, 3)], result["s3"]  # then only the others
    assert (1, 1) not in [(p["load"], p["part"]) for p in result["s3"]], "part 1 sent again"
    reloaded = [c for c in result["api"] if c["load"] == 1]
    # the reloaded page asked S3 (through the API) which parts it has, and started no new upload
    assert any(
        c["method"] == "GET"
        and "/uploads/s3/multipart/" in c["path"]
        and "?key=" in c["path"]
        and c["path"].split("?")[0].count("/") == 4
        for c in reloaded
    ), reloaded
    assert not [
        c for c in reloaded if c["method"] == "POST" and c["path"] == "/uploads/s3/multipart"
    ]
