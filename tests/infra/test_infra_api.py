"""The HTTP API: a throttled, logged proxy to the api function."""

from __future__ import annotations

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
