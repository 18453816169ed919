"""On AWS a Cognito authorizer vouches for the caller: its claims.sub is the owner, no token."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

from tests.conftest import import_bytes

from sluiceway import api
from sluiceway.client import Client


def _cognito_event(path: str, sub: str) -> dict[str, Any]:
    """A REST proxy event as API Gateway sends it after its Cognito authorizer let it through."""
    return {
        "resource": "/{proxy+}",
        "path": path,
        "httpMethod": "GET",
        "headers": {"Authorization": "Bearer eyJ-an-id-token-API-Gateway-already-checked"},
        "multiValueHeaders": {},
        "queryStringParameters": None,
        "multiValueQueryStringParameters": None,
        "pathParameters": {"proxy": path.lstrip("/")},
        "stageVariables": None,
        "requestContext": {
            "resourcePath": "/{proxy+}",
            "httpMethod": "GET",
            "path": f"/v1{path}",
            "stage": "v1",
            "requestId": str(uuid.uuid4()),
            "authorizer": {"claims": {"sub": sub, "email": "someone@example.com"}},
        },
        "body": None,
        "isBase64Encoded": False,
    }


def test_the_authorizers_subject_is_the_owner(
    stack: Any, client: Client, tmp_path: Path, dataset_name: str
) -> None:
    # Given a dataset of the local owner
    import_bytes(client, tmp_path, b"a\n1\n", dataset_name)

    # When API Gateway passes on a Cognito user's claims (a JWT, not a sluiceway token)
    mine = api.handle(_cognito_event(f"/datasets/{dataset_name}", "local"), None)
    stranger = api.handle(_cognito_event(f"/datasets/{dataset_name}", str(uuid.uuid4())), None)
    listed = api.handle(_cognito_event("/datasets", str(uuid.uuid4())), None)

    # Then the subject is who asks: the owner sees the dataset, a stranger gets 404 and an
    # empty list, and nobody is asked for a sluiceway token.
    assert mine["statusCode"] == 200, mine["body"]
    assert json.loads(mine["body"])["name"] == dataset_name
    assert stranger["statusCode"] == 404
    assert json.loads(stranger["body"])["error"] == "not_found"
    assert listed["statusCode"] == 200
    assert json.loads(listed["body"])["datasets"] == []
