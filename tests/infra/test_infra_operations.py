"""Operations: alarms on what breaks, notified through one encrypted topic; a dashboard; tags."""

from __future__ import annotations

import json
from typing import Any

import pytest

from infra_support import Synthesized
from sluiceway import names

pytestmark = pytest.mark.infra


def _function_ids(synthesized: Synthesized) -> dict[str, str]:
    return {
        name: lid
        for lid, body in synthesized.resources("AWS::Lambda::Function").items()
        for name in names.FUNCTIONS
        if body["Properties"].get("Description", "").startswith(f"sluiceway {name} ")
    }


def _alarms(synthesized: Synthesized) -> list[dict[str, Any]]:
    return [a["Properties"] for a in synthesized.resources("AWS::CloudWatch::Alarm").values()]


def _watched(alarm: dict[str, Any]) -> list[tuple[str, str, Any]]:
    """(namespace, metric, first dimension's value) of every metric the alarm reads."""
    if "MetricName" in alarm:
        return [(alarm["Namespace"], alarm["MetricName"], alarm["Dimensions"][0]["Value"])]
    return [
        (m["Namespace"], m["MetricName"], m["Dimensions"][0]["Value"])
        for m in (q["MetricStat"]["Metric"] for q in alarm["Metrics"] if "MetricStat" in q)
    ]


def _topic_id(synthesized: Synthesized) -> str:
    return synthesized.only("AWS::SNS::Topic")[0]


def test_every_alarm_notifies_the_topic(synthesized: Synthesized) -> None:
    alarms = _alarms(synthesized)

    assert len(alarms) >= 2 * len(names.FUNCTIONS) + 3
    for alarm in alarms:
        assert alarm["AlarmActions"] == [{"Ref": _topic_id(synthesized)}], alarm
        assert alarm["TreatMissingData"] == "notBreaching"
        assert alarm["AlarmDescription"]


def test_each_function_has_an_error_and_a_throttle_alarm(synthesized: Synthesized) -> None:
    watched = [w for alarm in _alarms(synthesized) for w in _watched(alarm)]

    for name, lid in _function_ids(synthesized).items():
        assert ("AWS/Lambda", "Errors", {"Ref": lid}) in watched, name
        assert ("AWS/Lambda", "Throttles", {"Ref": lid}) in watched, name


def test_failed_and_timed_out_imports_raise_an_alarm(synthesized: Synthesized) -> None:
    state_machine = {"Ref": synthesized.state_machine("import")[0]}

    [alarm] = [
        a
        for a in _alarms(synthesized)
        if ("AWS/States", "ExecutionsFailed", state_machine) in _watched(a)
    ]
    assert ("AWS/States", "ExecutionsTimedOut", state_machine) in _watched(alarm)
    assert alarm["Threshold"] == 1
    assert alarm["ComparisonOperator"] == "GreaterThanOrEqualToThreshold"


def test_an_event_in_the_dead_letter_queue_raises_an_alarm(synthesized: Synthesized) -> None:
    _, rule = synthesized.only("AWS::Events::Rule")
    [target] = rule["Properties"]["Targets"]
    queue_id = target["DeadLetterConfig"]["Arn"]["Fn::GetAtt"][0]

    [alarm] = [
        a
        for a in _alarms(synthesized)
        if (
            "AWS/SQS",
            "ApproximateNumberOfMessagesVisible",
            {"Fn::GetAtt": [queue_id, "QueueName"]},
        )
        in _watched(a)
    ]
    assert alarm["Threshold"] == 1


def test_database_connections_near_the_limit_raise_an_alarm(synthesized: Synthesized) -> None:
    cluster = {"Ref": synthesized.only("AWS::RDS::DBCluster")[0]}

    [alarm] = [
        a
        for a in _alarms(synthesized)
        if ("AWS/RDS", "DatabaseConnections", cluster) in _watched(a)
    ]
    assert 0 < alarm["Threshold"] < 5000  # Aurora's ceiling for max_connections


def test_the_topic_is_encrypted_with_a_key_cloudwatch_may_use(synthesized: Synthesized) -> None:
    _, topic = synthesized.only("AWS::SNS::Topic")
    key_id, key = synthesized.only("AWS::KMS::Key")
    _, topic_policy = synthesized.only("AWS::SNS::TopicPolicy")

    assert topic["Properties"]["KmsMasterKeyId"] == {"Fn::GetAtt": [key_id, "Arn"]}
    assert key["Properties"]["EnableKeyRotation"] is True
    [cloudwatch] = [
        s
        for s in key["Properties"]["KeyPolicy"]["Statement"]
        if s["Principal"].get("Service") == "cloudwatch.amazonaws.com"
    ]
    assert {"kms:Decrypt", "kms:GenerateDataKey*"} <= set(cloudwatch["Action"])
    [deny] = topic_policy["Properties"]["PolicyDocument"]["Statement"]
    assert deny["Effect"] == "Deny"
    assert deny["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}


def test_the_dashboard_shows_import_throughput_and_the_database(
    synthesized: Synthesized,
) -> None:
    _, dashboard = synthesized.only("AWS::CloudWatch::Dashboard")
    parts = dashboard["Properties"]["DashboardBody"]["Fn::Join"][1]
    # The references CloudFormation fills in, spelled as what they point at.
    body = "".join(p if isinstance(p, str) else json.dumps(p).replace('"', "'") for p in parts)
    ids = _function_ids(synthesized)
    state_machine = synthesized.state_machine("import")[0]
    cluster = synthesized.only("AWS::RDS::DBCluster")[0]

    assert f'"ExecutionsStarted","StateMachineArn","{{\'Ref\': \'{state_machine}\'}}' in body
    assert f'"Invocations","FunctionName","{{\'Ref\': \'{ids["load_chunk"]}\'}}' in body
    assert "MiB / s" in body
    assert f'"DatabaseConnections","DBClusterIdentifier","{{\'Ref\': \'{cluster}\'}}' in body
    assert '"type":"alarm"' in body


def test_every_tagged_resource_names_its_project_and_component(
    synthesized: Synthesized,
) -> None:
    by_type: dict[str, set[str]] = {}
    for lid, body in synthesized.template.to_json()["Resources"].items():
        tags = body.get("Properties", {}).get("Tags")
        if not isinstance(tags, list):
            continue
        values = {t["Key"]: t["Value"] for t in tags}
        assert values.get("project") == "sluiceway", lid
        assert values.get("component"), lid
        by_type.setdefault(body["Type"], set()).add(values["component"])

    assert by_type["AWS::Lambda::Function"] >= {"functions"}
    assert by_type["AWS::S3::Bucket"] == {"storage"}
    assert by_type["AWS::StepFunctions::StateMachine"] == {"import-pipeline", "export-pipeline"}
    assert by_type["AWS::RDS::DBCluster"] == {"database"}
    assert by_type["AWS::EC2::VPC"] == {"network"}
    assert by_type["AWS::CloudWatch::Alarm"] == {"operations"}
    assert by_type["AWS::ApiGateway::RestApi"] == {"api"}
