"""Every statemachines/*.asl.json parses in moto's interpreter with exactly the variables CDK gives.

The local stack executes these very files with moto; on AWS, CloudFormation substitutes the
state machine's DefinitionSubstitutions into them. A variable the file uses but CDK does not
provide would reach Step Functions as a literal ``${...}``; one CDK provides but the file does not
use is a wire to nothing. Both fail here, before any deploy.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from infra_support import REPO_ROOT, Synthesized

pytestmark = pytest.mark.infra

ASL_FILES = sorted((REPO_ROOT / "statemachines").glob("*.asl.json"))
_VARIABLE = re.compile(r"\$\{(\w+)\}")
ACCOUNT, REGION = "123456789012", "us-east-1"


def _parse(definition: str) -> None:
    """moto's ASL parser, the one its create_state_machine and the local stack's executions use.

    Called directly, not through ``mock_aws``: entering and leaving ``mock_aws`` resets every
    moto backend of this process, and the session's embedded stack (started by an earlier test
    directory) keeps its buckets and queues in those very backends.
    """
    from moto.stepfunctions.parser.asl.parse.asl_parser import AmazonStateLanguageParser

    AmazonStateLanguageParser.parse(definition)


def _deployed(synthesized: Synthesized) -> dict[Path, dict[str, Any]]:
    """ASL file -> the properties of the state machine that deploys it."""
    found: dict[Path, dict[str, Any]] = {}
    for body in synthesized.resources("AWS::StepFunctions::StateMachine").values():
        properties = body["Properties"]
        key = properties["DefinitionS3Location"]["Key"]
        text = (synthesized.assembly_dir / f"asset.{key}").read_text()
        [path] = [p for p in ASL_FILES if p.read_text() == text]
        found[path] = properties
    return found


def _stand_in(synthesized: Synthesized, variable: str, value: Any) -> str:
    """What CloudFormation would put for ``value``, shaped like the real thing."""
    resources = synthesized.template.to_json()["Resources"]
    if isinstance(value, dict) and "Fn::GetAtt" in value:
        logical_id = value["Fn::GetAtt"][0]
    elif isinstance(value, dict) and "Ref" in value:
        logical_id = value["Ref"]
    else:
        return str(value)
    kind = resources[logical_id]["Type"]
    if kind == "AWS::Lambda::Function":
        return f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:{logical_id}"
    if kind == "AWS::StepFunctions::StateMachine":
        return f"arn:aws:states:{REGION}:{ACCOUNT}:stateMachine:{logical_id}"
    if kind == "AWS::S3::Bucket":
        return logical_id.lower()
    return f"{variable}-{logical_id}"


def test_every_asl_file_is_deployed(synthesized: Synthesized) -> None:
    assert ASL_FILES
    assert sorted(_deployed(synthesized)) == ASL_FILES


@pytest.mark.parametrize("path", ASL_FILES, ids=lambda p: p.name)
def test_variables_are_exactly_the_substitutions_cdk_provides(
    synthesized: Synthesized, path: Path
) -> None:
    used = set(_VARIABLE.findall(path.read_text()))
    provided = set(_deployed(synthesized)[path]["DefinitionSubstitutions"])

    assert used - provided == set(), f"{path.name} uses variables CDK does not provide"
    assert provided - used == set(), f"CDK provides variables {path.name} does not use"


@pytest.mark.parametrize("path", ASL_FILES, ids=lambda p: p.name)
def test_the_substituted_definition_parses_in_motos_interpreter(
    synthesized: Synthesized, path: Path
) -> None:
    substitutions = _deployed(synthesized)[path]["DefinitionSubstitutions"]
    definition = _VARIABLE.sub(
        lambda m: _stand_in(synthesized, m.group(1), substitutions[m.group(1)]), path.read_text()
    )

    assert "${" not in definition
    _parse(definition)  # raises ASLParserException on what moto's interpreter cannot run


def test_the_interpreter_refuses_a_definition_it_cannot_run() -> None:
    # What makes the test above worth something: moto's parser does reject bad ASL.
    from moto.stepfunctions.parser.asl.parse.asl_parser import ASLParserException

    broken = '{"StartAt": "A", "States": {"A": {"Type": "Task", "Resource": 7, "End": true}}}'
    with pytest.raises(ASLParserException):
        _parse(broken)
