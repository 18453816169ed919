"""The one private moto method the local runtime replaces still exists and still routes."""

from __future__ import annotations

import inspect
import json
from typing import Any

import moto
from moto.awslambda.models import LambdaFunction

from sluiceway.local import lambdas


def test_moto_is_the_pinned_version() -> None:
    # the seam replaces a private method: a moto upgrade must be a deliberate change
    assert moto.__version__ == "5.2.5"


def test_moto_still_calls_invoke_lambda_with_the_event() -> None:
    source = inspect.getsource(LambdaFunction.invoke)
    assert "self._invoke_lambda(event=" in source
    assert list(inspect.signature(LambdaFunction._invoke_lambda).parameters) == ["self", "event"]


def test_a_lambda_invoke_through_moto_runs_our_handler(stack: Any) -> None:
    # Given the stack's moto server with our functions registered
    client = stack.moto_client("lambda")
    # When the refresh handler is invoked the way the state machine invokes it
    response = client.invoke(FunctionName="refresh_search", Payload=json.dumps({"job_id": "x"}))
    # Then our handler ran: it echoes its state back, and the search view was refreshed
    assert "FunctionError" not in response
    assert json.loads(response["Payload"].read()) == {"job_id": "x"}


def test_a_failing_handler_reports_its_error_type_like_lambda() -> None:
    ok, result = lambdas.invoke("plan_import", {"detail": {}})
    assert not ok
    assert result["errorType"] == "ValidationError"
    assert result["errorMessage"]
