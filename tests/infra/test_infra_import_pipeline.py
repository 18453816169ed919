"""The import state machine: the very ASL file, wired to the functions and started by uploads."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

from infra_support import REPO_ROOT, Synthesized
from sluiceway import names

pytestmark = pytest.mark.infra

ASL_PATH = REPO_ROOT / "statemachines" / f"{names.IMPORT_STATE_MACHINE}.asl.json"


def _state_machine(synthesized: Synthesized) -> dict[str, Any]:
    return synthesized.state_machine("import")[1]["Properties"]


def _function_ids(synthesized: Synthesized) -> dict[str, str]:
    """Function name -> logical id."""
    return {
        name: lid
        for lid, body in synthesized.resources("AWS::Lambda::Function").items()
        for name in names.FUNCTIONS
        if body["Properties"].get("Description", "").startswith(f"sluiceway {name} ")
    }


def _deployed_definition(synthesized: Synthesized) -> str:
    """The definition file the stack uploads (DefinitionBody.from_file makes it an asset)."""
    key = _state_machine(synthesized)["DefinitionS3Location"]["Key"]
    return (synthesized.assembly_dir / f"asset.{key}").read_text()


def test_the_deployed_definition_is_the_asl_file_itself(synthesized: Synthesized) -> None:
    assert _deployed_definition(synthesized) == ASL_PATH.read_text()


def test_every_substitution_resolves_to_its_function(synthesized: Synthesized) -> None:
    substitutions = _state_machine(synthesized)["DefinitionSubstitutions"]
    ids = _function_ids(synthesized)

    # Given what CloudFormation will do: replace each ${Variable} by its substitution.
    def substitute(match: re.Match[str]) -> str:
        value = substitutions[match.group(1)]
        return f"arn-of:{value['Fn::GetAtt'][0]}"

    resolved = re.sub(r"\$\{(\w+)\}", substitute, _deployed_definition(synthesized))

    # Then: nothing is left to substitute, and each variable names its own function.
    assert "${" not in resolved
    json.loads(resolved)
    for variable, value in substitutions.items():
        [name] = [n for n, v in names.FUNCTIONS.items() if v == variable]
        assert value == {"Fn::GetAtt": [ids[name], "Arn"]}, variable


def test_logging_and_tracing_are_on(synthesized: Synthesized) -> None:
    state_machine = _state_machine(synthesized)

    assert state_machine["LoggingConfiguration"]["Level"] == "ALL"
    assert state_machine["TracingConfiguration"] == {"Enabled": True}
    assert state_machine["StateMachineType"] == "STANDARD"


def _role_statements(synthesized: Synthesized) -> list[dict[str, Any]]:
    role = _state_machine(synthesized)["RoleArn"]["Fn::GetAtt"][0]
    return [
        statement
        for policy in synthesized.resources("AWS::IAM::Policy").values()
        if {"Ref": role} in policy["Properties"]["Roles"]
        for statement in policy["Properties"]["PolicyDocument"]["Statement"]
    ]


def _actions(statement: dict[str, Any]) -> set[str]:
    actions = statement["Action"]
    return {actions} if isinstance(actions, str) else set(actions)


def test_role_invokes_exactly_the_functions_the_definition_uses(
    synthesized: Synthesized,
) -> None:
    ids = _function_ids(synthesized)
    used = set(re.findall(r"\$\{(\w+)\}", ASL_PATH.read_text()))
    expected = sorted(ids[n] for n, variable in names.FUNCTIONS.items() if variable in used)

    invoked = sorted(
        resource["Fn::GetAtt"][0]
        for statement in _role_statements(synthesized)
        if "lambda:InvokeFunction" in _actions(statement)
        for resource in statement["Resource"]
    )

    assert invoked == expected
    assert ids["api"] not in invoked


def test_role_reads_item_lists_under_work_and_runs_child_executions(
    synthesized: Synthesized,
) -> None:
    statements = _role_statements(synthesized)
    state_machine_id = synthesized.state_machine("import")[0]

    [reader] = [s for s in statements if _actions(s) == {"s3:GetObject"}]
    assert reader["Resource"]["Fn::Join"][1][-1] == "/work/*"
    [start] = [s for s in statements if _actions(s) == {"states:StartExecution"}]
    assert start["Resource"] == {"Ref": state_machine_id}
    assert any(
        {"states:DescribeExecution", "states:StopExecution"} <= _actions(s) for s in statements
    )


def test_uploads_start_an_import(synthesized: Synthesized) -> None:
    _, rule = synthesized.only("AWS::Events::Rule")
    bucket_id = next(
        lid
        for lid in synthesized.resources("AWS::S3::Bucket")
        if lid.startswith("StorageDataBucket")
    )
    state_machine_id = synthesized.state_machine("import")[0]

    pattern = rule["Properties"]["EventPattern"]
    bucket_name: Any = {"Ref": bucket_id}  # what the bucket's name is in the template
    assert pattern == names.object_created_pattern(bucket_name, "uploads/")
    [target] = rule["Properties"]["Targets"]
    assert target["Arn"] == {"Ref": state_machine_id}
    assert "DeadLetterConfig" in target
