"""A check of ours for the schemathesis run: every 4xx answer is the API's JSON error shape."""

from __future__ import annotations

import json
from typing import Any

import schemathesis


@schemathesis.check
def errors_are_json(ctx: Any, response: Any, case: Any) -> bool | None:
    if not 400 <= response.status_code < 500:
        return None
    content_type = response.headers.get("Content-Type") or response.headers.get("content-type")
    content_type = content_type[0] if isinstance(content_type, list) else content_type
    assert content_type, f"{response.status_code} answered without a Content-Type"
    assert content_type.startswith("application/json"), (
        f"{response.status_code} answered with Content-Type {content_type!r}, not JSON"
    )
    body = json.loads(response.content)
    assert isinstance(body, dict), f"{response.status_code} body is not an object: {body!r}"
    assert isinstance(body.get("error"), str), f"{response.status_code} body has no error code"
    assert body.get("message"), f"{response.status_code} body has no message"
    return True
