"""What every Lambda entry point shares: structured logs with the request id, one call in."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from aws_lambda_powertools import Logger
from aws_lambda_powertools.utilities.typing import LambdaContext

logger = Logger(service="sluiceway")

Handler = Callable[[dict[str, Any], LambdaContext], Any]


def lambda_handler(step: Callable[[dict[str, Any]], dict[str, Any]]) -> Handler:
    """Wrap one pipeline step as a Lambda handler."""

    @logger.inject_lambda_context(clear_state=True)
    def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
        if isinstance(event, dict) and event.get("job_id"):
            logger.append_keys(job_id=event["job_id"])
        return step(event)

    return handler


def api_handler() -> Handler:
    """The HTTP API's handler (API Gateway REST proxy events)."""
    from .api import handle

    @logger.inject_lambda_context(clear_state=True)
    def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
        return handle(event, context)

    return handler
