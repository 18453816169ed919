"""A record over the size limit is refused before anything loads, with a clear message."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tests.conftest import import_bytes

from sluiceway.client import Client


def test_an_unclosed_quote_that_runs_on_is_refused_early(
    client: Client, db: Any, tmp_path: Path, dataset_name: str, stack: Any
) -> None:
    # Given a file whose third line opens a quote that is never closed, far past the limit
    limit = stack.settings.imports.max_record_bytes
    body = b'a,b\n1,2\n3,"never closed\n' + b"x,y\n" * ((limit + (2 << 20)) // 4)
    # When it is imported in small ranges
    job = import_bytes(client, tmp_path, body, dataset_name, chunk_bytes=1 << 20)
    # Then the job fails naming the limit and the likely cause, and nothing was committed
    assert job["status"] == "failed"
    assert f"longer than {limit:,} bytes" in job["error_message"]
    assert "never closed" in job["error_message"]
    assert db.execute(
        "SELECT count(*) AS n FROM dsa_core.datasets WHERE name = %s", (dataset_name,)
    ).fetchone() == {"n": 0}
