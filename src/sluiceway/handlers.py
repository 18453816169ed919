"""What every Lambda entry point shares: structured JSON logs with a correlation id, one call in.

Each pipeline step logs one line when it ends (its name, seconds, outcome) with the job id as
its correlation id, so every line of one import, from every function, can be found by that id;
API requests carry API Gateway's request id. Events and headers are never logged: they hold
tokens and presigned URLs.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import psycopg
from aws_lambda_powertools import Logger
from aws_lambda_powertools.logging import correlation_paths
from aws_lambda_powertools.utilities.typing import LambdaContext

from .errors import DatabaseUnavailable, SluicewayError
from .memory import fix_mmap_threshold
from .settings import get_settings

logger = Logger(service="sluiceway")
fix_mmap_threshold()  # every process that runs a handler (Lambda's, the stack's, its workers)

Handler = Callable[[dict[str, Any], LambdaContext], Any]


def _job_of(document: Any) -> str | None:
    return (
        str(document["job_id"]) if isinstance(document, dict) and document.get("job_id") else None
    )


def lambda_handler(step: Callable[[dict[str, Any]], dict[str, Any]]) -> Handler:
    """Wrap one pipeline step as a Lambda handler."""
    name = step.__name__

    @logger.inject_lambda_context(clear_state=True)
    def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
        logger.setLevel(get_settings().log_level)
        job_id = _job_of(event)
        if job_id:
            logger.set_correlation_id(job_id)
            logger.append_keys(job_id=job_id)
        started = time.perf_counter()
        try:
            try:
                result = step(event)
            except psycopg.OperationalError as exc:
                # the connection broke (a restart, a failover, a network blip): a retry on a
                # new connection is what the state machine does with DatabaseUnavailable
                raise DatabaseUnavailable(
                    f"The database connection failed during {name}: {exc}".strip()
                ) from exc
        except SluicewayError as exc:
            seconds = round(time.perf_counter() - started, 3)
            logger.warning(
                f"{name} failed: {exc.message}",
                extra={"step": name, "error": exc.code, "seconds": seconds},
            )
            raise
        except Exception:
            seconds = round(time.perf_counter() - started, 3)
            logger.exception(
                f"{name} failed unexpectedly", extra={"step": name, "seconds": seconds}
            )
            raise
        if not job_id and _job_of(result):  # the planner finds the job from the S3 event
            logger.set_correlation_id(_job_of(result))
            logger.append_keys(job_id=_job_of(result))
        logger.info(
            f"{name} done",
            extra={"step": name, "seconds": round(time.perf_counter() - started, 3)},
        )
        return result

    return handler


def api_handler() -> Handler:
    """The HTTP API's handler (API Gateway REST proxy events)."""
    from .api import handle

    @logger.inject_lambda_context(
        clear_state=True, correlation_id_path=correlation_paths.API_GATEWAY_REST
    )
    def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
        logger.setLevel(get_settings().log_level)
        return handle(event, context)

    return handler
