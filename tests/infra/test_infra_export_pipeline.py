"""The export state machine: the very ASL file, least privilege, logs and traces, schedules."""

from __future__ import annotations

import re
from typing import Any

import pytest

from infra_support import REPO_ROOT, Synthesized
from sluiceway import names

pytestmark = pytest.mark.infra

ASL_PATH = REPO_ROOT / "statemachines" / f"{names.EXPORT_STATE_MACHINE}.asl.json"
EXPORT_FUNCTIONS = {"plan_export", "write_export_part", "finish_export", "fail_export"}


def _function_ids(synthesized: Synthesized) -> dict[str, str]:
    return {
        name: lid
        for lid, body in synthesized.resources("AWS::Lambda::Function").items()
        for name in names.FUNCTIONS
        if body["Properties"].get("Description", "").startswith(f"sluiceway {name} ")
    }


def _statements_of_role(synthesized: Synthesized, role_id: str) -> list[dict[str, Any]]:
    return [
        statement
        for policy in synthesized.resources("AWS::IAM::Policy").values()
        if {"Ref": role_id} in policy["Properties"]["Roles"]
        for statement in policy["Properties"]["PolicyDocument"]["Statement"]
    ]


def _actions(statement: dict[str, Any]) -> set[str]:
    actions = statement["Action"]
    return {actions} if isinstance(actions, str) else set(actions)


def _resources(statement: dict[str, Any]) -> list[Any]:
    found = statement["Resource"]
    return found if isinstance(found, list) else [found]


def test_the_definition_is_the_asl_file_wired_to_the_export_functions(
    synthesized: Synthesized,
) -> None:
    _, machine = synthesized.state_machine("export")
    properties = machine["Properties"]
    ids = _function_ids(synthesized)

    substitutions = properties["DefinitionSubstitutions"]
    assert set(substitutions) == set(re.findall(r"\$\{(\w+)\}", ASL_PATH.read_text()))
    assert {
        name for name, variable in names.FUNCTIONS.items() if variable in substitutions
    } == EXPORT_FUNCTIONS
    for variable, value in substitutions.items():
        [name] = [n for n, v in names.FUNCTIONS.items() if v == variable]
        assert value == {"Fn::GetAtt": [ids[name], "Arn"]}, variable


def test_logging_and_tracing_are_on(synthesized: Synthesized) -> None:
    properties = synthesized.state_machine("export")[1]["Properties"]

    assert properties["LoggingConfiguration"]["Level"] == "ALL"
    assert properties["TracingConfiguration"] == {"Enabled": True}
    assert properties["StateMachineType"] == "STANDARD"


def test_its_role_invokes_exactly_the_export_functions(synthesized: Synthesized) -> None:
    _, machine = synthesized.state_machine("export")
    role = machine["Properties"]["RoleArn"]["Fn::GetAtt"][0]
    ids = _function_ids(synthesized)
    statements = _statements_of_role(synthesized, role)

    invoked = sorted(
        r["Fn::GetAtt"][0]
        for s in statements
        if "lambda:InvokeFunction" in _actions(s)
        for r in _resources(s)
    )
    assert invoked == sorted(ids[n] for n in EXPORT_FUNCTIONS)
    [reader] = [s for s in statements if _actions(s) == {"s3:GetObject"}]
    assert reader["Resource"]["Fn::Join"][1][-1] == "/work/*"
    # nothing else of the bucket: the parts are written by the functions, not the machine
    assert not [s for s in statements if _actions(s) & {"s3:PutObject", "s3:DeleteObject"}]


def test_scheduler_role_can_only_start_the_export_state_machine(
    synthesized: Synthesized,
) -> None:
    machine_id, _ = synthesized.state_machine("export")
    [(role_id, role)] = [
        (lid, body)
        for lid, body in synthesized.resources("AWS::IAM::Role").items()
        if body["Properties"]["AssumeRolePolicyDocument"]["Statement"][0]["Principal"].get(
            "Service"
        )
        == "scheduler.amazonaws.com"
    ]
    [statement] = _statements_of_role(synthesized, role_id)

    assert _actions(statement) == {"states:StartExecution"}
    assert statement["Resource"] == {"Ref": machine_id}
    trust = role["Properties"]["AssumeRolePolicyDocument"]["Statement"][0]
    assert "aws:SourceAccount" in trust["Condition"]["StringEquals"]
    synthesized.only("AWS::Scheduler::ScheduleGroup")


def test_the_api_may_schedule_exports_and_pass_only_the_scheduler_role(
    synthesized: Synthesized,
) -> None:
    ids = _function_ids(synthesized)
    machine_id, _ = synthesized.state_machine("export")
    api = synthesized.resources("AWS::Lambda::Function")[ids["api"]]["Properties"]
    env = api["Environment"]["Variables"]
    role_id = api["Role"]["Fn::GetAtt"][0]
    statements = _statements_of_role(synthesized, role_id)

    assert env["SLUICEWAY_EXPORT_STATE_MACHINE_ARN"] == {"Ref": machine_id}
    assert "SLUICEWAY_EXPORTS__SCHEDULER_ROLE_ARN" in env
    [passing] = [s for s in statements if _actions(s) == {"iam:PassRole"}]
    assert passing["Condition"] == {
        "StringEquals": {"iam:PassedToService": "scheduler.amazonaws.com"}
    }
    [schedules] = [s for s in statements if "scheduler:CreateSchedule" in _actions(s)]
    assert schedules["Resource"]["Fn::Join"][1][-1].endswith(
        ":schedule/Sluiceway-sluiceway-exports/*"
    )
    assert any(
        "states:StartExecution" in _actions(s) and {"Ref": machine_id} in _resources(s)
        for s in statements
    )


def test_the_commit_step_may_start_exports_of_new_commits(synthesized: Synthesized) -> None:
    ids = _function_ids(synthesized)
    machine_id, _ = synthesized.state_machine("export")
    commit = synthesized.resources("AWS::Lambda::Function")[ids["commit_import"]]["Properties"]
    statements = _statements_of_role(synthesized, commit["Role"]["Fn::GetAtt"][0])

    assert commit["Environment"]["Variables"]["SLUICEWAY_EXPORT_STATE_MACHINE_ARN"] == {
        "Ref": machine_id
    }
    assert any(
        "states:StartExecution" in _actions(s) and {"Ref": machine_id} in _resources(s)
        for s in statements
    )
