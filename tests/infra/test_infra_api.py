"""The HTTP API: a throttled, logged proxy to the api function, behind a Cognito authorizer."""

from __future__ import annotations

import json
from typing import Any

import pytest

from infra_support import Synthesized

pytestmark = pytest.mark.infra


def test_stage_is_throttled_logged_and_traced(synthesized: Synthesized) -> None:
    _, stage = synthesized.only("AWS::ApiGateway::Stage")

    properties = stage["Properties"]
    [settings] = properties["MethodSettings"]
    assert settings["ThrottlingRateLimit"] > 0
    assert settings["ThrottlingBurstLimit"] > 0
    assert settings["DataTraceEnabled"] is False
    assert properties["AccessLogSetting"]["DestinationArn"]
    assert "$context.requestId" in properties["AccessLogSetting"]["Format"]
    assert properties["TracingEnabled"] is True


def test_every_route_goes_to_the_api_function(synthesized: Synthesized) -> None:
    methods = synthesized.resources("AWS::ApiGateway::Method").values()

    assert methods
    for method in methods:
        integration = method["Properties"]["Integration"]
        assert integration["Type"] == "AWS_PROXY"
        target = integration["Uri"]["Fn::Join"][1][-2]["Fn::GetAtt"][0]
        assert target.startswith("FunctionsApi")


def _methods(synthesized: Synthesized) -> dict[str, dict[str, Any]]:
    """ "<path> <verb>" -> method properties ("/" for the root, "/{proxy+}" for everything)."""
    resources = synthesized.resources("AWS::ApiGateway::Resource")
    found = {}
    for method in synthesized.resources("AWS::ApiGateway::Method").values():
        properties = method["Properties"]
        resource = properties["ResourceId"]
        path = (
            "/"
            if "Fn::GetAtt" in resource
            else "/" + (resources[resource["Ref"]]["Properties"]["PathPart"])
        )
        found[f"{path} {properties['HttpMethod']}"] = properties
    return found


def test_every_route_but_the_public_ones_needs_a_cognito_id_token(
    synthesized: Synthesized,
) -> None:
    from sluiceway.api import PUBLIC_ROUTES

    authorizer_id, authorizer = synthesized.only("AWS::ApiGateway::Authorizer")
    pool_id, _ = synthesized.only("AWS::Cognito::UserPool")
    methods = _methods(synthesized)

    assert authorizer["Properties"]["Type"] == "COGNITO_USER_POOLS"
    assert authorizer["Properties"]["ProviderARNs"] == [{"Fn::GetAtt": [pool_id, "Arn"]}]
    assert authorizer["Properties"]["IdentitySource"] == "method.request.header.Authorization"
    public = {f"{path} GET" for path in PUBLIC_ROUTES}
    assert public <= set(methods)
    assert {"/ ANY", "/{proxy+} ANY"} <= set(methods)
    for route, method in methods.items():
        if route in public:
            assert method["AuthorizationType"] == "NONE", route
        else:
            assert method["AuthorizationType"] == "COGNITO_USER_POOLS", route
            assert method["AuthorizerId"] == {"Ref": authorizer_id}, route


def test_the_public_routes_are_the_ones_the_function_serves_without_a_token() -> None:
    from sluiceway.api import PUBLIC_ROUTES
    from sluiceway_infra.api import PUBLIC_PATHS

    assert set(PUBLIC_PATHS) == set(PUBLIC_ROUTES)


def test_users_are_invited_and_sign_in_with_a_second_factor(synthesized: Synthesized) -> None:
    _, pool = synthesized.only("AWS::Cognito::UserPool")
    _, client = synthesized.only("AWS::Cognito::UserPoolClient")

    properties = pool["Properties"]
    assert properties["AdminCreateUserConfig"]["AllowAdminCreateUserOnly"] is True
    assert properties["MfaConfiguration"] == "ON"
    assert properties["EnabledMfas"] == ["SOFTWARE_TOKEN_MFA"]
    assert properties["Policies"]["PasswordPolicy"]["MinimumLength"] >= 12
    assert pool["DeletionPolicy"] == "Retain"
    # The CLI's client: no secret to keep, password sign-in from a terminal, no OAuth redirects.
    client_properties = client["Properties"]
    assert client_properties["GenerateSecret"] is False
    assert "ALLOW_USER_PASSWORD_AUTH" in client_properties["ExplicitAuthFlows"]
    assert "AllowedOAuthFlows" not in client_properties


def test_gateway_refusals_use_the_apis_error_shape(synthesized: Synthesized) -> None:
    responses = {
        r["Properties"]["ResponseType"]: r["Properties"]
        for r in synthesized.resources("AWS::ApiGateway::GatewayResponse").values()
    }

    unauthorized = responses["UNAUTHORIZED"]
    assert unauthorized["StatusCode"] == "401"
    body = json.loads(unauthorized["ResponseTemplates"]["application/json"])
    assert body["error"] == "unauthorized"
    assert "Bearer" in body["message"]
    assert responses["THROTTLED"]["StatusCode"] == "429"


def test_the_sign_in_ids_are_stack_outputs(synthesized: Synthesized) -> None:
    outputs = synthesized.template.to_json()["Outputs"]
    pool_id, _ = synthesized.only("AWS::Cognito::UserPool")
    client_id, _ = synthesized.only("AWS::Cognito::UserPoolClient")

    assert outputs["UserPoolId"]["Value"] == {"Ref": pool_id}
    assert outputs["UserPoolClientId"]["Value"] == {"Ref": client_id}
