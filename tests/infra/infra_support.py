"""What the infra tests share: the synthesized app and ways to look into it."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from aws_cdk import App
    from aws_cdk.assertions import Template

    from sluiceway_infra.stack import SluicewayStack

REPO_ROOT = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class Synthesized:
    app: App
    stack: SluicewayStack
    template: Template
    template_path: Path
    assembly_dir: Path

    def resources(self, resource_type: str) -> dict[str, dict[str, Any]]:
        """Logical id -> resource, for every resource of one CloudFormation type."""
        return dict(self.template.find_resources(resource_type))

    def state_machine(self, name: str) -> tuple[str, dict[str, Any]]:
        """The logical id and body of the state machine deploying statemachines/<name>.asl.json."""
        text = (REPO_ROOT / "statemachines" / f"{name}.asl.json").read_text()
        found = [
            (lid, body)
            for lid, body in self.resources("AWS::StepFunctions::StateMachine").items()
            if (
                self.assembly_dir / f"asset.{body['Properties']['DefinitionS3Location']['Key']}"
            ).read_text()
            == text
        ]
        assert len(found) == 1, f"expected one state machine deploying {name}.asl.json"
        return found[0]

    def only(self, resource_type: str) -> tuple[str, dict[str, Any]]:
        """The logical id and body of the one resource of ``resource_type``."""
        found = self.resources(resource_type)
        assert len(found) == 1, f"expected one {resource_type}, found {sorted(found)}"
        return next(iter(found.items()))
