"""The import pipeline: an upload's object-created event starts the import state machine."""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, cast

from aws_cdk import ArnFormat, Duration, Stack
from aws_cdk import aws_events as events
from aws_cdk import aws_events_targets as targets
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_logs as logs
from aws_cdk import aws_s3 as s3
from aws_cdk import aws_sqs as sqs
from aws_cdk import aws_stepfunctions as sfn
from constructs import Construct

from sluiceway import names

from .checks import acknowledge, token_of
from .constants import STATEMACHINES_DIR, UPLOADS_PREFIX, WORK_PREFIX

ASL_PATH = STATEMACHINES_DIR / f"{names.IMPORT_STATE_MACHINE}.asl.json"
_SUBSTITUTION = re.compile(r"\$\{(\w+)\}")


def functions_in_definition(asl: str, path: Path = ASL_PATH) -> dict[str, str]:
    """The ``${...}`` variables of an ASL document, each mapped to its function's name."""
    by_variable = {variable: name for name, variable in names.FUNCTIONS.items()}
    variables = set(_SUBSTITUTION.findall(asl))
    unknown = sorted(variables - by_variable.keys())
    if unknown:
        raise ValueError(f"{path} uses {unknown}, which names.FUNCTIONS does not define")
    return {variable: by_variable[variable] for variable in sorted(variables)}


def allow_distributed_map_runs(scope: Construct, state_machine: sfn.StateMachine) -> None:
    """A Distributed Map runs its items as child executions of this very state machine.

    As in the Step Functions guide ("IAM policies for using Distributed Map states") and CDK's
    own DistributedMap state: start executions of its own state machine; describe, stop and
    redrive executions, both ``execution:<name>:*`` (CDK's grant) and the children's
    ``execution:<name>/<map run label>:*``. A separate policy, because the state machine's
    ARN in its own role's default policy would be a circular dependency.
    """
    stack = Stack.of(scope)
    policy = iam.Policy(scope, "DistributedMapPolicy")
    state_machine.role.attach_inline_policy(policy)
    state_machine.grant_start_execution(policy)
    executions = stack.format_arn(
        service="states",
        resource="execution",
        resource_name=state_machine.state_machine_name,
        arn_format=ArnFormat.COLON_RESOURCE_NAME,
    )
    policy.add_statements(
        iam.PolicyStatement(
            actions=[
                "states:DescribeExecution",
                "states:StopExecution",
                "states:RedriveExecution",
            ],
            resources=[f"{executions}:*", f"{executions}/*"],
        )
    )
    spelled = "arn:<AWS::Partition>:states:<AWS::Region>:<AWS::AccountId>:execution:" + (
        token_of(state_machine, "Name")
    )
    reason = "Execution names are made at run time; limited to this state machine's own."
    acknowledge(
        policy,
        {
            f"AwsSolutions-IAM5[Resource::{spelled}:*]": reason,
            f"AwsSolutions-IAM5[Resource::{spelled}/*]": reason,
        },
    )


def asl_state_machine(
    scope: Construct,
    path: Path,
    *,
    bucket: s3.IBucket,
    functions: Mapping[str, lambda_.IFunction],
    log_name: str,
    item_lists: str,
) -> sfn.StateMachine:
    """A state machine from the ASL file at ``path`` (the file the local runtime runs), with
    logging and tracing on, allowed to invoke exactly the functions it names, to read its Map's
    item lists under work/ (``item_lists`` says whose), and to run its Distributed Maps."""
    stack = Stack.of(scope)
    used = functions_in_definition(path.read_text(), path)
    state_machine = sfn.StateMachine(
        scope,
        "StateMachine",
        state_machine_type=sfn.StateMachineType.STANDARD,
        definition_body=sfn.DefinitionBody.from_file(str(path)),
        definition_substitutions={
            variable: functions[name].function_arn for variable, name in used.items()
        },
        logs=sfn.LogOptions(
            destination=logs.LogGroup(
                scope,
                "Logs",
                # Vended-log names keep the account's log resource policy small.
                log_group_name=f"/aws/vendedlogs/states/{stack.stack_name}-{log_name}",
                retention=logs.RetentionDays.ONE_MONTH,
            ),
            level=sfn.LogLevel.ALL,
            include_execution_data=True,
        ),
        tracing_enabled=True,
    )
    role = state_machine.role
    # The definition invokes the unqualified ARNs, so no `:*` version wildcard is needed.
    role.add_to_principal_policy(
        iam.PolicyStatement(
            actions=["lambda:InvokeFunction"],
            resources=[functions[name].function_arn for name in used.values()],
        )
    )
    # The Distributed Maps' ItemReader reads the item lists the planner writes to work/.
    role.add_to_principal_policy(
        iam.PolicyStatement(
            actions=["s3:GetObject"], resources=[bucket.arn_for_objects(f"{WORK_PREFIX}*")]
        )
    )
    allow_distributed_map_runs(scope, state_machine)
    acknowledge(
        scope,
        {
            "AwsSolutions-IAM5[Resource::*]": "CloudWatch Logs delivery and X-Ray actions "
            "support no resource-level permissions.",
            f"AwsSolutions-IAM5[Resource::{token_of(bucket)}/{WORK_PREFIX}*]": "ItemReader "
            f"reads {item_lists} whose keys are made per job, all under work/.",
        },
    )
    return state_machine


class ImportPipeline(Construct):
    """statemachines/import.asl.json on Step Functions: the file the local runtime runs."""

    def __init__(
        self,
        scope: Construct,
        id: str,
        *,
        bucket: s3.IBucket,
        functions: Mapping[str, lambda_.IFunction],
    ) -> None:
        super().__init__(scope, id)
        self.state_machine = asl_state_machine(
            self,
            ASL_PATH,
            bucket=bucket,
            functions=functions,
            log_name="import",
            item_lists="range lists",
        )
        self.rule = self._start_on_upload(bucket)

    def _start_on_upload(self, bucket: s3.IBucket) -> events.Rule:
        pattern = names.object_created_pattern(bucket.bucket_name, UPLOADS_PREFIX)
        # An event that cannot start an execution would otherwise vanish with the upload's import.
        self.dead_letters = dead_letters = sqs.Queue(
            self,
            "UnstartedImports",
            enforce_ssl=True,
            encryption=sqs.QueueEncryption.SQS_MANAGED,
            retention_period=Duration.days(14),
        )
        acknowledge(
            dead_letters,
            {"AwsSolutions-SQS3": "This queue is the dead-letter queue of the rule's target."},
        )
        return events.Rule(
            self,
            "StartImportOnUpload",
            description="Start an import when an object is created under the uploads prefix",
            event_pattern=events.EventPattern(
                source=cast(list[str], pattern["source"]),
                detail_type=cast(list[str], pattern["detail-type"]),
                detail=cast(dict[str, Any], pattern["detail"]),
            ),
            targets=[
                targets.SfnStateMachine(
                    self.state_machine,
                    dead_letter_queue=dead_letters,
                    retry_attempts=10,
                    max_event_age=Duration.hours(6),
                )
            ],
        )
