"""Lambda tasks of the local state machine, dispatched to our own handlers.

moto runs Lambda code only in Docker. Its Step Functions interpreter invokes Lambda over
HTTP; moto's Lambda backend then calls ``LambdaFunction._invoke_lambda``. That one private
method is replaced here (moto is pinned; tests/integration/test_local_seam.py guards it) so the
invocation runs ``functions/<name>/handler.py`` itself: CPU-heavy ones in worker processes,
the rest in the calling thread.
"""

from __future__ import annotations

import importlib.util
import json
import multiprocessing
import traceback
import uuid
from concurrent.futures import Executor, ProcessPoolExecutor
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

from .. import db
from ..names import FUNCTIONS, FUNCTIONS_DIR, WORKER_FUNCTIONS
from ..settings import Settings, configure

_modules: dict[str, ModuleType] = {}


@dataclass
class LocalContext:
    """The parts of the Lambda context object that handlers and Powertools read."""

    function_name: str
    aws_request_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    function_version: str = "$LATEST"
    memory_limit_in_mb: int = 1024
    log_group_name: str = "/aws/lambda/local"
    log_stream_name: str = "local"

    @property
    def invoked_function_arn(self) -> str:
        return f"arn:aws:lambda:us-east-1:123456789012:function:{self.function_name}"

    def get_remaining_time_in_millis(self) -> int:
        return 900_000


def _handler_module(name: str) -> ModuleType:
    module = _modules.get(name)
    if module is None:
        if name not in FUNCTIONS:
            raise KeyError(f"No function {name!r}")
        path = FUNCTIONS_DIR / name / "handler.py"
        spec = importlib.util.spec_from_file_location(f"sluiceway_function_{name}", path)
        assert spec is not None
        assert spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        _modules[name] = module
    return module


def invoke(name: str, payload: Any) -> tuple[bool, Any]:
    """Run one handler like the Lambda runtime does: (succeeded, result or error document)."""
    try:
        result = _handler_module(name).handler(payload, LocalContext(function_name=name))
        return True, result
    except Exception as exc:
        return False, {
            "errorType": type(exc).__name__,
            "errorMessage": getattr(exc, "message", None) or str(exc),
            "stackTrace": traceback.format_exception(exc),
        }
    finally:
        db.release_thread()  # moto runs each task on a thread of its own


def _worker_init(settings: Settings) -> None:
    configure(settings)


def _warm_up() -> None:
    """Import the worker functions' handlers (and with them sluiceway, psycopg, boto3)."""
    for name in WORKER_FUNCTIONS:
        _handler_module(name)


class LambdaRuntime:
    """Routes moto's Lambda invocations to our handlers."""

    def __init__(self, settings: Settings, workers: int) -> None:
        self.settings = settings
        self.pool: Executor = ProcessPoolExecutor(
            max_workers=workers,
            mp_context=multiprocessing.get_context("spawn"),
            initializer=_worker_init,
            initargs=(settings,),
        )
        # Start every worker now, while the stack starts, not in the first import's first Map:
        # spawning a worker and importing the handlers costs it about 2 s of CPU
        # (bench/README.md). Not waited for: the futures only make the processes exist.
        for _ in range(workers):
            self.pool.submit(_warm_up)

    def run(self, name: str, payload: Any) -> tuple[bool, Any]:
        if name not in WORKER_FUNCTIONS:
            return invoke(name, payload)
        try:
            return self.pool.submit(invoke, name, payload).result()
        except Exception as exc:
            return False, {"errorType": "Lambda.ServiceException", "errorMessage": repr(exc)}

    def close(self) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)


_runtime: LambdaRuntime | None = None


def _invoke_lambda(self: Any, event: str | None = None) -> tuple[str, bool, str]:
    """Replacement for moto's ``LambdaFunction._invoke_lambda``: (payload, errored, logs)."""
    if _runtime is None:
        raise RuntimeError("The local Lambda runtime is not running.")
    payload = json.loads(event) if isinstance(event, str) and event else (event or {})
    ok, result = _runtime.run(self.function_name, payload)
    return json.dumps(result, default=str), not ok, ""


def install(runtime: LambdaRuntime | None) -> None:
    """Route moto's Lambda invocations in this process to ``runtime`` (None: stop routing)."""
    global _runtime  # noqa: PLW0603 - moto's backend is process-wide, so is the route
    from moto.awslambda.models import LambdaFunction

    _runtime = runtime
    LambdaFunction._invoke_lambda = _invoke_lambda  # type: ignore[method-assign]
