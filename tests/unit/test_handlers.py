"""Every step logs one JSON line with the job as its correlation id; failures say what failed."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from typing import Any

import pytest

from sluiceway.errors import MalformedFile
from sluiceway.handlers import lambda_handler, logger
from sluiceway.local.lambdas import LocalContext
from sluiceway.settings import Settings, configure

JOB = "6f1c2a4e-0000-4000-8000-000000000001"


@pytest.fixture
def logs() -> Iterator[io.StringIO]:
    """What the Powertools logger writes (its handler keeps the stdout it started with)."""
    configure(Settings(log_level="INFO"))
    out = io.StringIO()
    previous = logger.registered_handler.setStream(out)  # type: ignore[attr-defined]
    yield out
    logger.registered_handler.setStream(previous)  # type: ignore[attr-defined]
    configure(None)


def _lines(out: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in out.getvalue().splitlines()]


def load_range(event: dict[str, Any]) -> dict[str, Any]:
    if event.get("bad"):
        raise MalformedFile("data.csv: line 4 (byte 16) has 2 field(s); the header has 3.")
    return {"job_id": event["job_id"], "rows": 3}


def test_a_step_logs_one_json_line_correlated_by_its_job(
    logs: io.StringIO,
) -> None:
    handler = lambda_handler(load_range)

    handler({"job_id": JOB, "token": "slw_secret"}, LocalContext(function_name="load_chunk"))

    [line] = _lines(logs)
    assert line["level"] == "INFO"
    assert line["message"] == "load_range done"
    assert line["correlation_id"] == JOB
    assert line["job_id"] == JOB
    assert line["step"] == "load_range"
    assert line["function_name"] == "load_chunk"
    assert "slw_secret" not in json.dumps(line)  # the event is never logged


def test_a_failed_step_logs_what_was_wrong_and_raises(logs: io.StringIO) -> None:
    handler = lambda_handler(load_range)

    with pytest.raises(MalformedFile):
        handler({"job_id": JOB, "bad": True}, LocalContext(function_name="load_chunk"))

    [line] = _lines(logs)
    assert line["level"] == "WARNING"
    assert "line 4 (byte 16)" in line["message"]
    assert line["error"] == "malformed_file"
    assert line["correlation_id"] == JOB


def plan(event: dict[str, Any]) -> dict[str, Any]:
    return {"job_id": JOB, "ranges": 2}  # found from the object in the S3 event


def test_the_planner_is_correlated_by_the_job_it_found(logs: io.StringIO) -> None:
    handler = lambda_handler(plan)

    handler({"detail": {"object": {"key": "uploads/x.csv"}}}, LocalContext(function_name="plan"))

    [line] = _lines(logs)
    assert line["correlation_id"] == JOB
    assert line["message"] == "plan done"
