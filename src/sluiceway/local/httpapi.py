"""Serve the API's Lambda handler on localhost, the way API Gateway would call it.

Each HTTP request becomes an API Gateway REST proxy event for ``functions/api/handler.py``;
its response becomes the HTTP response. The handler cannot tell it is not on AWS.
"""

from __future__ import annotations

import base64
import json
import math
import multiprocessing
import sys
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from .. import db
from ..api import COOKIE
from ..names import REPO_ROOT
from ..settings import Settings, ThrottleSettings, configure
from .lambdas import LocalContext, _handler_module

MAX_BODY_BYTES = 10 * 1024 * 1024  # API Gateway's own payload limit
# One request at a time through the API handler in any one process, as one Lambda container
# runs one invocation at a time. Powertools' resolver keeps the current event on its class
# (BaseRouter) and the route's context on the app: two requests at once in one process saw
# each other's (a KeyError at best, the other caller's principal at worst). Requests run in
# parallel only in processes of their own (:class:`ApiWorkers`), like Lambda's containers.
_ONE_INVOCATION = threading.Lock()

Invoke = Callable[[dict[str, Any]], dict[str, Any]]


def invoke_api(event: dict[str, Any]) -> dict[str, Any]:
    """Run the API's Lambda handler on one event, in this process, one request at a time."""
    try:
        with _ONE_INVOCATION:
            result: dict[str, Any] = _handler_module("api").handler(
                event, LocalContext(function_name="api")
            )
        return result
    finally:
        db.release_thread()  # a thread per client connection: give its database one back


def _api_worker_init(settings: Settings) -> None:
    from .. import storage

    configure(settings)
    # imported and made before the first request, not during it
    _handler_module("api")
    storage.s3_client(settings)


class ApiWorkers:
    """The API handler in ``count`` processes of its own, as Lambda runs it in containers:
    each process runs one request at a time (a process pool's worker takes one task at a
    time, and :func:`invoke_api` holds the lock besides), so no request ever shares the
    resolver's class-level state with another; requests in different processes run in
    parallel, outside the stack's own process (moto, the HTTP server) and its GIL."""

    def __init__(self, settings: Settings, count: int) -> None:
        self.settings, self.count = settings, count
        self._lock = threading.Lock()
        self.pool = self._start()

    def _start(self) -> ProcessPoolExecutor:
        pool = ProcessPoolExecutor(
            max_workers=self.count,
            mp_context=multiprocessing.get_context("spawn"),
            initializer=_api_worker_init,
            initargs=(self.settings,),
        )
        # start them now, and be ready when the stack says so: spawning a process and
        # importing the API take a second or more, which the first requests would wait out
        for started in [pool.submit(int) for _ in range(self.count)]:
            started.result()
        return pool

    def __call__(self, event: dict[str, Any]) -> dict[str, Any]:
        pool = self.pool
        try:
            return pool.submit(invoke_api, event).result()
        except BrokenProcessPool:
            # a worker died (killed, out of memory): this request fails (502, which clients
            # retry), and the next ones run in new workers, as Lambda replaces a container
            with self._lock:
                if self.pool is pool:
                    self.pool = self._start()
            raise

    def close(self) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)


WEB_DIST = REPO_ROOT / "web" / "dist"
_CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".json": "application/json",
    ".svg": "image/svg+xml",
    ".map": "application/json",
}


class TokenBuckets:
    """One token bucket per caller: ``take`` spends a token, or says how long until one.

    Buckets that have filled up again are the same as no bucket, so they are dropped when
    there are many: a caller inventing a new token per request costs memory only briefly.
    """

    MAX_BUCKETS = 10_000

    def __init__(
        self, settings: ThrottleSettings, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.rate, self.burst, self.clock = settings.rate_per_second, float(settings.burst), clock
        self._buckets: dict[str, tuple[float, float]] = {}  # caller -> (tokens, when)
        self._lock = threading.Lock()

    def _level(self, key: str, now: float) -> float:
        tokens, when = self._buckets.get(key, (self.burst, now))
        return min(self.burst, tokens + (now - when) * self.rate)

    def take(self, key: str) -> float:
        """0 if the caller may go ahead (one token spent), else the seconds to wait."""
        with self._lock:
            now = self.clock()
            tokens = self._level(key, now)
            if tokens < 1:
                self._buckets[key] = (tokens, now)
                return (1 - tokens) / self.rate
            self._buckets[key] = (tokens - 1, now)
            if len(self._buckets) > self.MAX_BUCKETS:
                full = [k for k in self._buckets if self._level(k, now) >= self.burst]
                for k in full:
                    del self._buckets[k]
            return 0.0


def caller_key(headers: dict[str, str], client_ip: str) -> str:
    """Who a request counts against: its credentials when it sends any, else its address."""
    return headers.get("authorization") or headers.get("cookie") or f"ip:{client_ip}"


def to_event(
    method: str, target: str, headers: dict[str, str], body: bytes, client_ip: str
) -> dict[str, Any]:
    """An API Gateway REST (v1) proxy event for one HTTP request."""
    parts = urlsplit(target)
    query = parse_qs(parts.query, keep_blank_values=True)
    try:
        text, is_b64 = body.decode("utf-8"), False
    except UnicodeDecodeError:
        text, is_b64 = base64.b64encode(body).decode(), True
    return {
        "resource": parts.path,
        "path": parts.path,
        "httpMethod": method,
        "headers": headers,
        "multiValueHeaders": {k: [v] for k, v in headers.items()},
        "queryStringParameters": {k: v[-1] for k, v in query.items()} or None,
        "multiValueQueryStringParameters": query or None,
        "pathParameters": None,
        "stageVariables": None,
        "requestContext": {
            "resourcePath": parts.path,
            "httpMethod": method,
            "path": parts.path,
            "stage": "local",
            "requestId": str(uuid.uuid4()),
            "identity": {"sourceIp": client_ip},
        },
        "body": text if body else None,
        "isBase64Encoded": is_b64,
    }


class _Handler(BaseHTTPRequestHandler):
    server_version = "sluiceway-local"
    protocol_version = "HTTP/1.1"
    # Headers and body go out as two writes; with Nagle's algorithm on, the body waits for
    # the client's delayed ACK of the headers: 40 ms added to every response.
    disable_nagle_algorithm = True

    def log_message(self, format: str, *args: Any) -> None:
        return  # the API logs through Powertools; keep the terminal for the CLI

    def _serve_page(self) -> bool:
        """The upload page (web/dist) under /app/, with the local owner's token as a cookie."""
        path = urlsplit(self.path).path
        if self.command != "GET" or not (path == "/app" or path.startswith("/app/")):
            return False
        server: _Server = self.server  # type: ignore[assignment]
        relative = path[len("/app/") :] or "index.html"
        target = (WEB_DIST / relative).resolve()
        if not target.is_relative_to(WEB_DIST.resolve()) or not target.is_file():
            body = f"No page {path}: build it with `make web` (make demo does).".encode()
            self._reply(404, {"content-type": "text/plain; charset=utf-8"}, body)
            return True
        headers = {"content-type": _CONTENT_TYPES.get(target.suffix, "application/octet-stream")}
        if server.page_token:
            headers["set-cookie"] = (
                f"{COOKIE}={server.page_token}; Path=/; HttpOnly; SameSite=Strict"
            )
        self._reply(200, headers, target.read_bytes())
        return True

    def _throttled(self) -> bool:
        """429 (as API Gateway's stage throttle answers) when this caller is over its rate."""
        server: _Server = self.server  # type: ignore[assignment]
        headers = {k.lower(): v for k, v in self.headers.items()}
        wait = server.buckets.take(caller_key(headers, self.client_address[0]))
        if not wait:
            return False
        body = {"error": "throttled", "message": "Too many requests: slow down and retry."}
        # drain what the caller sent, so the connection stays usable for its retry
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_BODY_BYTES:
            self.close_connection = True  # not worth reading: the client sends it again anyway
        elif length:
            self.rfile.read(length)
        self._reply(
            429,
            {"content-type": "application/json", "retry-after": str(max(1, math.ceil(wait)))},
            json.dumps(body).encode(),
        )
        return True

    def _serve(self) -> None:
        if self._throttled() or self._serve_page():
            return
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_BODY_BYTES:
            self._reply(
                413,
                {"content-type": "application/json"},
                json.dumps({"error": "too_large", "message": "Request body over 10 MiB."}).encode(),
            )
            return
        body = self.rfile.read(length) if length else b""
        headers = {k.lower(): v for k, v in self.headers.items()}
        event = to_event(self.command, self.path, headers, body, self.client_address[0])
        server: _Server = self.server  # type: ignore[assignment]
        try:
            result = server.invoke(event)
        except Exception as exc:  # API Gateway answers 502 when a Lambda fails
            failure = {"error": "internal_error", "message": f"The API failed: {exc}"}
            self._reply(502, {"content-type": "application/json"}, json.dumps(failure).encode())
            return
        payload = result.get("body") or ""
        data = base64.b64decode(payload) if result.get("isBase64Encoded") else payload.encode()
        out_headers = {k.lower(): v for k, v in (result.get("headers") or {}).items()}
        for k, values in (result.get("multiValueHeaders") or {}).items():
            out_headers[k.lower()] = ", ".join(values)
        self._reply(int(result.get("statusCode", 500)), out_headers, data)

    def _reply(self, status: int, headers: dict[str, str], data: bytes) -> None:
        self.send_response(status)
        for k, v in headers.items():
            if k not in ("content-length", "connection"):
                self.send_header(k, v)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def __getattr__(self, name: str) -> Any:
        # every method (GET ... TRACE, QUERY, anything) goes to the API, which answers what
        # API Gateway would: 404 JSON for a route or method it does not have
        if name.startswith("do_"):
            return self._serve
        raise AttributeError(name)


class _Server(ThreadingHTTPServer):
    page_token: str = ""
    # socketserver's default backlog is 5: the sixth client connecting at once was reset
    request_queue_size = 128
    buckets: TokenBuckets
    invoke: Invoke = staticmethod(invoke_api)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # a browser that reloads or closes mid-response is not an error worth a traceback
        if isinstance(sys.exc_info()[1], (BrokenPipeError, ConnectionResetError)):
            return
        super().handle_error(request, client_address)


class LocalApiServer:
    """The API on http://127.0.0.1:PORT in a background thread (and the upload page at /app/)."""

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        page_token: str = "",
        throttle: ThrottleSettings | None = None,
        invoke: Invoke | None = None,
    ) -> None:
        self.httpd = _Server((host, port), _Handler)
        self.httpd.page_token = page_token
        if invoke is not None:
            self.httpd.invoke = invoke
        self.httpd.buckets = TokenBuckets(throttle or ThrottleSettings())
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(
            target=self.httpd.serve_forever, name="sluiceway-api", daemon=True
        )

    @property
    def url(self) -> str:
        host, port = self.httpd.server_address[:2]
        return f"http://{host!s}:{port}"

    def start(self) -> LocalApiServer:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
