"""The OpenAPI document: served by the API, checked into the repo, and the two agree."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import urllib3

from sluiceway.api import openapi_json

CHECKED_IN = Path(__file__).resolve().parents[2] / "docs" / "openapi.json"


def test_the_checked_in_document_is_current() -> None:
    assert json.loads(CHECKED_IN.read_text()) == json.loads(openapi_json()), (
        "docs/openapi.json is stale: run `.venv/bin/sluiceway openapi > docs/openapi.json`"
    )


def test_the_api_serves_its_document_and_swagger_ui_without_a_token(stack: Any) -> None:
    served = urllib3.request("GET", stack.api_url + "/openapi.json")
    assert served.status == 200
    document = served.json()
    assert document["info"]["title"] == "sluiceway"
    assert {"/uploads", "/uploads/s3/multipart", "/jobs/{job_id}"} <= set(document["paths"])
    assert document["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"
    ui = urllib3.request("GET", stack.api_url + "/docs")
    assert ui.status == 200
    assert b"swagger" in ui.data.lower()
