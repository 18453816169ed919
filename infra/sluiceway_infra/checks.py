"""cdk-nag, wired the cdk-nag 3.x way: rule packs are CDK policy-validation plugins.

Findings are fixed where the resource is made, or acknowledged there with a reason through
:func:`acknowledge` (CDK's ``Validations.of(scope).acknowledge``, which replaced v2's
``NagSuppressions``). An acknowledgment on a construct covers everything beneath it. cdk-nag 3
matches finding ids exactly, e.g. ``AwsSolutions-IAM5[Resource::*]``, not by rule prefix.
"""

from __future__ import annotations

from collections.abc import Mapping

from aws_cdk import Acknowledgment, CfnResource, Stack, Stage, Validations
from cdk_nag import AwsSolutionsChecks, NagPack
from constructs import IConstruct


def nag_packs(scope: IConstruct) -> list[NagPack]:
    """The rule packs the app is checked against (also run by tests/infra)."""
    return [AwsSolutionsChecks(scope, verbose=True)]


def add_checks(stage: Stage) -> None:
    """Check every stack of ``stage`` at synthesis: an unacknowledged finding fails it."""
    Validations.of(stage).add_plugins(*nag_packs(stage))


def acknowledge(scope: IConstruct, reasons: Mapping[str, str]) -> None:
    """Acknowledge cdk-nag findings on ``scope`` and below: finding id -> why it is acceptable."""
    Validations.of(scope).acknowledge(
        *(Acknowledgment(id=rule, reason=reason) for rule, reason in reasons.items())
    )


def token_of(resource: IConstruct, attribute: str = "Arn") -> str:
    """How a finding id spells an attribute of ``resource``: ``<LogicalId.Attribute>``."""
    cfn = resource.node.default_child
    assert isinstance(cfn, CfnResource), f"{resource.node.path} has no CloudFormation resource"
    stack = Stack.of(resource)
    return f"<{stack.resolve(stack.get_logical_id(cfn))}.{attribute}>"
