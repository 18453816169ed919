"""schemathesis against the OpenAPI document, with a valid token: no 5xx, and every 4xx the
API's JSON error (our own check, in schemathesis_hooks.py)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from sluiceway import auth


def test_no_request_the_schema_allows_makes_the_api_fail(stack: Any, db: Any) -> None:
    cli = shutil.which("schemathesis") or str(Path(sys.executable).parent / "schemathesis")
    if not Path(cli).exists():
        pytest.skip("schemathesis is not installed (it is in the dev extra)")
    # An owner of its own: the stateful phase then starts from what it creates itself, not
    # from whatever the suite's earlier tests left in flight (one run of the whole suite saw two
    # 5xx that way, and the next did not: see the issue 9 note).
    token = auth.create_token(db, "schemathesis")
    done = subprocess.run(
        [
            cli,
            "run",
            f"{stack.api_url}/openapi.json",
            "-H",
            f"Authorization: Bearer {token}",
            "--checks",
            "not_a_server_error,errors_are_json",
            "--max-examples",
            "25",
            "--seed",
            "7",
            "--no-color",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env=os.environ
        | {
            "SCHEMATHESIS_HOOKS": "schemathesis_hooks",
            "PYTHONPATH": os.pathsep.join(
                [str(Path(__file__).parent), os.environ.get("PYTHONPATH", "")]
            ),
        },
        check=False,
    )
    failures = done.stdout.find("FAILURES")
    assert done.returncode == 0, done.stdout[failures : failures + 6000] or done.stdout[-4000:]
