"""The local API's front door: it throttles each caller as API Gateway's stage does on AWS
(429 JSON with Retry-After, and the client waits and sends the request again), and replaces
an API worker process that died, as Lambda replaces a container."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
import urllib3

from sluiceway.client import Client
from sluiceway.local.httpapi import LocalApiServer, TokenBuckets
from sluiceway.settings import ThrottleSettings


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_bucket_allows_its_burst_then_one_request_per_refill() -> None:
    clock = Clock()
    buckets = TokenBuckets(ThrottleSettings(rate_per_second=2, burst=3), clock)

    assert [buckets.take("a") for _ in range(3)] == [0, 0, 0]
    assert buckets.take("a") == pytest.approx(0.5)  # the fourth waits for half a second
    assert buckets.take("b") == 0  # another caller has a bucket of its own
    clock.now += 0.5
    assert buckets.take("a") == 0
    assert buckets.take("a") == pytest.approx(0.5)
    clock.now += 60  # a long pause refills to the burst, never beyond it
    assert [buckets.take("a") for _ in range(4)][-1] == pytest.approx(0.5)


def test_full_buckets_are_forgotten_when_there_are_many(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = Clock()
    monkeypatch.setattr(TokenBuckets, "MAX_BUCKETS", 10)
    buckets = TokenBuckets(ThrottleSettings(rate_per_second=1, burst=1), clock)
    for n in range(10):
        buckets.take(f"invented-token-{n}")
    clock.now += 5  # every one of them has refilled
    buckets.take("one-more")
    buckets.take("and-another")
    assert len(buckets._buckets) <= 2
    assert buckets.take("and-another") == pytest.approx(1.0)  # a live bucket is kept


@pytest.fixture
def throttled_api(stack: Any) -> Iterator[Callable[[float], str]]:
    """Second front doors to the session's API with a tight throttle: one request, then
    ``rate`` a second."""
    servers: list[LocalApiServer] = []

    def start(rate: float) -> str:
        throttle = ThrottleSettings(rate_per_second=rate, burst=1)
        servers.append(LocalApiServer(throttle=throttle).start())
        return servers[-1].url

    yield start
    for server in servers:
        server.stop()


def test_a_caller_over_its_rate_gets_429_json_with_retry_after(
    throttled_api: Callable[[float], str], stack: Any
) -> None:
    api = throttled_api(0.01)  # a token every 100 s: none comes back during this test
    auth = {"authorization": f"Bearer {stack.local_token}"}

    def get(path: str, headers: dict[str, str] | None = None) -> Any:
        # retries=False: urllib3 by default waits out a 429's Retry-After and asks again
        return urllib3.request("GET", api + path, headers=headers, retries=False)

    assert get("/jobs?limit=1", auth).status == 200

    refused = get("/jobs?limit=1", auth)

    assert refused.status == 429
    assert refused.json() == {
        "error": "throttled",
        "message": "Too many requests: slow down and retry.",
    }
    assert refused.headers["Retry-After"] == "100"
    # a caller without credentials counts by its address, apart from the token's bucket
    assert get("/health").status == 200
    # and even a bad token is throttled before it is checked, as API Gateway does
    bad = {"authorization": "Bearer slw_guess"}
    assert get("/jobs", bad).status == 401
    assert get("/jobs", bad).status == 429


def test_the_client_waits_out_a_429_and_sends_the_request_again(
    throttled_api: Callable[[float], str], stack: Any, dataset_name: str
) -> None:
    client = Client(throttled_api(2), token=stack.local_token)
    client.call("GET", "/jobs?limit=1")  # spends the burst

    # a POST too: a throttled request never reached the API, so resending it is safe
    created = client.call(
        "POST", "/uploads", {"dataset": dataset_name, "filename": "a.csv", "size": 4}
    )

    assert created["upload_id"]
    client.call("DELETE", f"/uploads/{created['upload_id']}")


def test_a_killed_api_worker_is_replaced_and_requests_go_on(stack: Any) -> None:
    import os
    import signal

    workers = stack._api_workers
    if workers is None:
        pytest.skip("the stack runs its API in its own process")
    client = Client(stack.api_url, token=stack.local_token)
    assert client.call("GET", "/datasets") is not None
    # Given an API worker process that dies (killed, out of memory)
    pid = next(iter(workers.pool._processes))
    os.kill(pid, signal.SIGKILL)
    # Then the requests after it are answered by new workers (one may get a 502, which the
    # client retries), and the dead one is not among them
    for _ in range(5):
        assert "datasets" in client.call("GET", "/datasets")
    assert pid not in workers.pool._processes
