"""The export pipeline: statemachines/export.asl.json, and EventBridge Scheduler for schedules."""

from __future__ import annotations

from collections.abc import Mapping

from aws_cdk import Stack
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_logs as logs
from aws_cdk import aws_s3 as s3
from aws_cdk import aws_scheduler as scheduler
from aws_cdk import aws_stepfunctions as sfn
from constructs import Construct

from sluiceway import names
from sluiceway.settings import ExportSettings

from .checks import acknowledge, token_of
from .constants import STATEMACHINES_DIR, WORK_PREFIX
from .import_pipeline import allow_distributed_map_runs, functions_in_definition

ASL_PATH = STATEMACHINES_DIR / f"{names.EXPORT_STATE_MACHINE}.asl.json"
SCHEDULE_GROUP = ExportSettings().schedule_group


class ExportPipeline(Construct):
    """The export state machine (the file the local runtime runs), and what schedules need:
    a schedule group and the role EventBridge Scheduler starts executions as."""

    def __init__(
        self,
        scope: Construct,
        id: str,
        *,
        bucket: s3.IBucket,
        functions: Mapping[str, lambda_.IFunction],
    ) -> None:
        super().__init__(scope, id)
        stack = Stack.of(self)
        used = functions_in_definition(ASL_PATH.read_text(), ASL_PATH)

        self.state_machine = sfn.StateMachine(
            self,
            "StateMachine",
            state_machine_type=sfn.StateMachineType.STANDARD,
            definition_body=sfn.DefinitionBody.from_file(str(ASL_PATH)),
            definition_substitutions={
                variable: functions[name].function_arn for variable, name in used.items()
            },
            logs=sfn.LogOptions(
                destination=logs.LogGroup(
                    self,
                    "Logs",
                    log_group_name=f"/aws/vendedlogs/states/{stack.stack_name}-export",
                    retention=logs.RetentionDays.ONE_MONTH,
                ),
                level=sfn.LogLevel.ALL,
                include_execution_data=True,
            ),
            tracing_enabled=True,
        )
        role = self.state_machine.role
        role.add_to_principal_policy(
            iam.PolicyStatement(
                actions=["lambda:InvokeFunction"],
                resources=[functions[name].function_arn for name in used.values()],
            )
        )
        # The Map's ItemReader reads the part lists plan_export writes to work/.
        role.add_to_principal_policy(
            iam.PolicyStatement(
                actions=["s3:GetObject"], resources=[bucket.arn_for_objects(f"{WORK_PREFIX}*")]
            )
        )
        allow_distributed_map_runs(self, self.state_machine)
        acknowledge(
            self,
            {
                "AwsSolutions-IAM5[Resource::*]": "CloudWatch Logs delivery and X-Ray actions "
                "support no resource-level permissions.",
                f"AwsSolutions-IAM5[Resource::{token_of(bucket)}/{WORK_PREFIX}*]": "ItemReader "
                "reads part lists whose keys are made per export, all under work/.",
            },
        )

        # Scheduled exports: the API creates one schedule per dataset schedule in this group;
        # each starts this state machine as this role, with {"schedule_id": ...} as input.
        self.schedule_group = scheduler.CfnScheduleGroup(
            self, "ScheduleGroup", name=f"{stack.stack_name}-{SCHEDULE_GROUP}"
        )
        self.scheduler_role = iam.Role(
            self,
            "SchedulerRole",
            assumed_by=iam.ServicePrincipal(
                "scheduler.amazonaws.com",
                conditions={"StringEquals": {"aws:SourceAccount": stack.account}},
            ),
            description="EventBridge Scheduler starts scheduled exports as this role",
        )
        self.state_machine.grant_start_execution(self.scheduler_role)

    def allow_scheduling(self, function: lambda_.Function) -> None:
        """Let ``function`` (the API) create and delete schedules that start this pipeline."""
        stack = Stack.of(self)
        group = self.schedule_group.name
        assert group is not None
        function.add_environment(
            "SLUICEWAY_EXPORT_STATE_MACHINE_ARN", self.state_machine.state_machine_arn
        )
        function.add_environment("SLUICEWAY_EXPORTS__SCHEDULE_GROUP", group)
        function.add_environment(
            "SLUICEWAY_EXPORTS__SCHEDULER_ROLE_ARN", self.scheduler_role.role_arn
        )
        self.state_machine.grant_start_execution(function)
        schedules = stack.format_arn(
            service="scheduler", resource="schedule", resource_name=f"{group}/*"
        )
        function.add_to_role_policy(
            iam.PolicyStatement(
                actions=[
                    "scheduler:CreateSchedule",
                    "scheduler:UpdateSchedule",
                    "scheduler:DeleteSchedule",
                    "scheduler:GetSchedule",
                ],
                resources=[schedules],
            )
        )
        function.add_to_role_policy(
            iam.PolicyStatement(
                actions=["iam:PassRole"],
                resources=[self.scheduler_role.role_arn],
                conditions={"StringEquals": {"iam:PassedToService": "scheduler.amazonaws.com"}},
            )
        )
        acknowledge(
            function,
            {
                "AwsSolutions-IAM5[Resource::arn:<AWS::Partition>:scheduler:<AWS::Region>:"
                f"<AWS::AccountId>:schedule/{group}/*]": "Schedules are made per dataset at run "
                "time, all in this stack's schedule group.",
            },
        )

    def allow_start(self, function: lambda_.Function) -> None:
        """Let ``function`` (the import's commit) start exports of new commits."""
        function.add_environment(
            "SLUICEWAY_EXPORT_STATE_MACHINE_ARN", self.state_machine.state_machine_arn
        )
        self.state_machine.grant_start_execution(function)
