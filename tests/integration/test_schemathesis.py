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


def test_no_request_the_schema_allows_makes_the_api_fail(stack: Any) -> None:
    cli = shutil.which("schemathesis") or str(Path(sys.executable).parent / "schemathesis")
    if not Path(cli).exists():
        pytest.skip("schemathesis is not installed (it is in the dev extra)")
    done = subprocess.run(
        [
            cli,
            "run",
            f"{stack.api_url}/openapi.json",
            "-H",
            f"Authorization: Bearer {stack.local_token}",
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
    assert done.returncode == 0, done.stdout[-4000:]
