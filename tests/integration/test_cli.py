"""The CLI, as a user runs it: import, log, export, jobs; and one command with no stack running."""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import psycopg
import pytest
from click.testing import CliRunner
from tests.conftest import standalone_env

from sluiceway.cli import cli
from sluiceway.client import ApiError
from sluiceway.local.stack import free_port

DATA = 'id,name,note\n1,Ann,"hello, world"\n2,Bob,"two\nlines"\n3,Cy,""\n'


def _postgres_running(pgdata: Path) -> bool:
    import psutil

    return any(
        str(pgdata) in " ".join(p.info["cmdline"] or [])
        for p in psutil.process_iter(["name", "cmdline"])
        if p.info["name"] == "postgres"
    )


def run(stack: Any, *args: str) -> Any:
    result = CliRunner().invoke(
        cli, ["--api", stack.api_url, "--token", stack.local_token, *args], catch_exceptions=False
    )
    return result


def test_import_log_export_round_trip(stack: Any, tmp_path: Path, dataset_name: str) -> None:
    src = tmp_path / "people.csv"
    src.write_text(DATA, newline="")

    first = run(
        stack, "import", str(src), "--dataset", dataset_name, "--chunk-size", "16", "--json"
    )
    assert first.exit_code == 0, first.output
    one = json.loads(first.stdout)
    assert one["rows"] == 3
    assert one["bytes"] == len(DATA.encode())
    assert one["parent_commit_id"] is None
    assert set(one) >= {
        "job_id",
        "dataset",
        "commit_id",
        "parent_commit_id",
        "rows",
        "bytes",
        "seconds",
    }

    # the same file cut at other byte offsets: the same lists, so no commit
    same = json.loads(run(stack, "import", str(src), "-d", dataset_name, "--json").stdout)
    assert same["unchanged"] is True
    assert same["parent_commit_id"] is None

    src.write_text(DATA + "4,Di,new\n", newline="")
    second = json.loads(run(stack, "import", str(src), "-d", dataset_name, "--json").stdout)
    assert second["unchanged"] is False
    assert second["parent_commit_id"] == one["commit_id"]

    log = json.loads(run(stack, "log", dataset_name, "--json").stdout)
    assert [c["commit_id"] for c in log] == [second["commit_id"], one["commit_id"]]

    out = tmp_path / "back.csv"
    exported = run(
        stack,
        "export",
        dataset_name,
        "--format",
        "csv",
        "--out",
        str(out),
        "--commit",
        one["commit_id"],
        "--json",
    )
    assert exported.exit_code == 0, exported.output
    with out.open(newline="") as b:  # the first commit's rows, not main's
        assert list(csv.reader(io.StringIO(DATA))) == list(csv.reader(b))

    jsonl = tmp_path / "back.jsonl"
    run(stack, "export", dataset_name, "--format", "jsonl", "--out", str(jsonl))
    assert [json.loads(line) for line in jsonl.read_text().splitlines()] == [
        {"id": "1", "name": "Ann", "note": "hello, world"},
        {"id": "2", "name": "Bob", "note": "two\nlines"},
        {"id": "3", "name": "Cy", "note": ""},
        {"id": "4", "name": "Di", "note": "new"},
    ]
    array = tmp_path / "back.json"
    run(stack, "export", dataset_name, "--format", "json", "--out", str(array))
    assert [r["name"] for r in json.loads(array.read_text())] == ["Ann", "Bob", "Cy", "Di"]
    # keys come back in the file's column order, not jsonb's
    assert list(json.loads(array.read_text())[0]) == ["id", "name", "note"]


def test_jobs_list_and_show(stack: Any, tmp_path: Path, dataset_name: str) -> None:
    src = tmp_path / "a.csv"
    src.write_text("a\n1\n")
    job_id = json.loads(run(stack, "import", str(src), "-d", dataset_name, "--json").stdout)[
        "job_id"
    ]
    listed = json.loads(run(stack, "jobs", "list", "--json").stdout)
    assert job_id in [j["job_id"] for j in listed]
    shown = json.loads(run(stack, "jobs", "show", job_id, "--json").stdout)
    assert shown["status"] == "completed"
    assert shown["progress"]["rows_done"] == 1
    assert shown["progress"]["percent"] == 100.0
    assert "rows_per_second" in shown["progress"]


def test_failed_import_exits_non_zero_with_the_reason(
    stack: Any, tmp_path: Path, dataset_name: str
) -> None:
    src = tmp_path / "bad.csv"
    src.write_text("a,b\n1,2\n3,4,5\n")
    result = run(stack, "import", str(src), "-d", dataset_name)
    assert result.exit_code == 1
    assert "bad.csv" in result.output
    assert "line 3" in result.output


def test_export_of_unknown_dataset_is_a_clear_error(stack: Any, tmp_path: Path) -> None:
    result = CliRunner().invoke(
        cli,
        [
            *("--api", stack.api_url, "--token", stack.local_token),
            "export",
            "nope-nothing",
            "--out",
            str(tmp_path / "x"),
        ],
    )
    assert result.exit_code != 0
    assert "No dataset 'nope-nothing'" in str(result.exception or result.output)


def test_one_command_starts_its_own_stack(tmp_path: Path) -> None:
    # Given no running stack and no --api: the command starts the embedded stack itself
    src = tmp_path / "solo.csv"
    src.write_text("x,y\n1,2\n3,4\n")
    env = standalone_env(tmp_path)
    done = subprocess.run(
        [sys.executable, "-m", "sluiceway", "import", str(src), "--dataset", "solo", "--json"],
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert json.loads(done.stdout)["rows"] == 2
    assert (tmp_path / "home" / "pg" / "PG_VERSION").exists()


def test_database_url_and_s3_endpoint_replace_the_embedded_ones(stack: Any, tmp_path: Path) -> None:
    # Given a PostgreSQL (the session stack's) and an S3 endpoint (a separate moto server
    # process) that the command does not run itself
    s3_port = str(free_port())
    s3 = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", s3_port],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        import time

        import boto3

        client = boto3.client(
            "s3",
            endpoint_url=f"http://127.0.0.1:{s3_port}",
            region_name="us-east-1",
            aws_access_key_id="k",
            aws_secret_access_key="s",
        )
        for _ in range(100):
            try:
                client.create_bucket(Bucket="external-bucket")
                break
            except Exception:
                time.sleep(0.1)
        src = tmp_path / "ext.csv"
        src.write_text("k,v\na,1\nb,2\nc,3\n")
        env = {k: v for k, v in os.environ.items() if k not in ("SLUICEWAY_API", "MOTO_PORT")}
        env |= {
            "SLUICEWAY_HOME": str(tmp_path / "unused-home"),
            "DATABASE_URL": stack.database_url,
            "AWS_ENDPOINT_URL_S3": f"http://127.0.0.1:{s3_port}",
            "AWS_ACCESS_KEY_ID": "k",
            "AWS_SECRET_ACCESS_KEY": "s",
            "SLUICEWAY_STORAGE__BUCKET": "external-bucket",
        }
        # When a command runs without a stack
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "sluiceway",
                "import",
                str(src),
                "--dataset",
                "external",
                "--json",
            ],
            env=env,
            capture_output=True,
            text=True,
            timeout=240,
            check=False,
        )
        # Then the file went to that S3 and the rows to that database, and no embedded
        # PostgreSQL was started
        assert done.returncode == 0, done.stderr[-2000:]
        result = json.loads(done.stdout)
        assert result["rows"] == 3
        keys = [o["Key"] for o in client.list_objects_v2(Bucket="external-bucket")["Contents"]]
        assert any(k.endswith("/ext.csv") for k in keys)
        assert not (tmp_path / "unused-home" / "pg").exists()
        with psycopg.connect(stack.database_url) as conn:
            found = conn.execute(
                "SELECT row_count FROM dsa_core.commits WHERE commit_id = %s",
                (result["commit_id"],),
            ).fetchone()
        assert found == (3,)
    finally:
        s3.terminate()
        s3.wait(10)


@pytest.mark.parametrize("stop_signal", ["SIGINT", "SIGTERM"])
def test_up_prints_its_endpoints_serves_the_api_and_stops_on_ctrl_c(
    tmp_path: Path, stop_signal: str
) -> None:
    import signal

    import urllib3

    port = free_port()
    env = standalone_env(tmp_path)
    proc = subprocess.Popen(
        [sys.executable, "-m", "sluiceway", "up", "--port", str(port)],
        env=env,
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert proc.stderr is not None
        lines = []
        while not any(line.startswith("PostgreSQL") for line in lines):
            line = proc.stderr.readline()
            assert line, "up exited before printing its endpoints: " + "".join(lines)
            lines.append(line)
        text = "".join(lines)
        assert f"http://127.0.0.1:{port}" in text
        assert "S3         http://127.0.0.1:" in text
        assert "postgresql://" in text
        health = urllib3.request("GET", f"http://127.0.0.1:{port}/health").json()
        assert health["database"] == "ok"
        assert health["storage"] == "ok"
        proc.send_signal(getattr(signal, stop_signal))
        assert proc.wait(timeout=60) == 0
        assert not _postgres_running(tmp_path / "home" / "pg")
    finally:
        if proc.poll() is None:
            proc.kill()


def test_odd_and_long_column_names_round_trip(
    stack: Any, tmp_path: Path, dataset_name: str
) -> None:
    long_name = "a very long column name " * 5  # past PostgreSQL's 63-byte identifiers
    header = ["id", long_name.strip(), 'quote"d', "semi;colon", "Ünïcode", "'; DROP TABLE x; --"]
    src = tmp_path / "odd.csv"
    with src.open("w", newline="") as f:
        csv.writer(f).writerows([header, ["1", "2", "3", "4", "5", "6"]])
    assert run(stack, "import", str(src), "-d", dataset_name).exit_code == 0
    out = tmp_path / "odd-back.csv"
    assert run(stack, "export", dataset_name, "--out", str(out)).exit_code == 0
    with out.open(newline="") as f:
        assert list(csv.reader(f)) == [header, ["1", "2", "3", "4", "5", "6"]]


def test_get_dataset_shows_its_head_and_columns(
    stack: Any, tmp_path: Path, dataset_name: str
) -> None:
    src = tmp_path / "d.csv"
    src.write_text("x,y\n1,2\n")
    done = json.loads(run(stack, "import", str(src), "-d", dataset_name, "--json").stdout)
    from sluiceway.client import Client

    shown = Client(stack.api_url, token=stack.local_token).call("GET", f"/datasets/{dataset_name}")
    assert shown["head_commit_id"] == done["commit_id"]
    assert shown["columns"] == ["x", "y"]
    assert shown["row_count"] == 1


def test_history_commands_as_a_user_types_them(
    stack: Any, tmp_path: Path, dataset_name: str
) -> None:
    def ok(*args: str) -> Any:
        result = run(stack, *args)
        assert result.exit_code == 0, result.output
        return result

    def js(*args: str) -> Any:
        return json.loads(ok(*args, "--json").stdout)

    base, fix = tmp_path / "base.csv", tmp_path / "fix.csv"
    base.write_text("id,v\n1,a\n2,b\n", newline="")
    fix.write_text("id,v\n2,B\n3,c\n", newline="")
    first = js("import", str(base), "-d", dataset_name)
    second = js("import", str(fix), "-d", dataset_name, "--mode", "upsert", "--key", "id")
    assert second["changes"] == {"added": 1, "removed": 0, "changed": 1}
    again = js("import", str(fix), "-d", dataset_name, "--mode", "upsert", "--key", "id")
    assert again["unchanged"] is True
    assert (
        "no commit was made"
        in ok("import", str(fix), "-d", dataset_name, "--mode", "upsert", "--key", "id").stdout
    )

    log = js("log", dataset_name)
    assert [c["kind"] for c in log] == ["upsert", "replace"]
    assert "+1 -0 ~1" in ok("log", dataset_name).stdout
    diff = js("diff", dataset_name)
    assert (diff["added"], diff["changed"]) == (1, 1)
    assert "~1 changed" in ok("diff", dataset_name, first["commit_id"], "main").stdout
    rows = js("rows", dataset_name, "--commit", first["commit_id"])
    assert [r["data"]["v"] for r in rows["rows"]] == ["a", "b"]

    assert js("branch", dataset_name, "dev")["commit_id"] == second["commit_id"]
    assert {r["name"] for r in js("branch", dataset_name)} == {"main", "dev"}
    js(
        "import",
        str(base),
        "-d",
        dataset_name,
        "--mode",
        "upsert",
        "--key",
        "id",
        "--branch",
        "dev",
    )
    assert js("merge", dataset_name, "dev")["result"] == "fast-forward"
    reverted = js("revert", dataset_name, "main")
    assert reverted["changes"] == {"added": 0, "removed": 0, "changed": 1}
    assert js("reset", dataset_name, "--to", first["commit_id"])["commit_id"] == first["commit_id"]
    js("branch", dataset_name, "dev", "--delete")
    assert js("gc", dataset_name, "--keep", "1")["commits_dropped"] >= 3
    with pytest.raises(ApiError, match="first commit"):  # main is at the first commit now
        run(stack, "revert", dataset_name, "main")
