"""The export pipeline: statemachines/export.asl.json, and EventBridge Scheduler for schedules."""

from __future__ import annotations

from collections.abc import Mapping

from aws_cdk import Stack
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_s3 as s3
from aws_cdk import aws_scheduler as scheduler
from constructs import Construct

from sluiceway import names
from sluiceway.settings import ExportSettings

from .checks import acknowledge
from .constants import STATEMACHINES_DIR
from .import_pipeline import asl_state_machine

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
        self.state_machine = asl_state_machine(
            self,
            ASL_PATH,
            bucket=bucket,
            functions=functions,
            log_name="export",
            item_lists="part lists",
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
