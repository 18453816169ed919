"""Operations: alarms that notify an SNS topic, and one dashboard.

The code emits no custom metrics (no Powertools ``Metrics`` anywhere in src/sluiceway), so
throughput is read from what AWS publishes by itself: Step Functions executions, and the
``load_chunk`` invocations, one per byte range of ``imports.chunk_bytes`` (64 MiB by default).
Rows per second would need the code to publish them; the dashboard says so in its text.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from aws_cdk import Duration, Stack, Tags
from aws_cdk import aws_apigateway as apigw
from aws_cdk import aws_cloudwatch as cw
from aws_cdk import aws_cloudwatch_actions as cw_actions
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_sns as sns
from aws_cdk import aws_sns_subscriptions as subscriptions
from aws_cdk import aws_sqs as sqs
from aws_cdk import aws_stepfunctions as sfn
from constructs import Construct

from sluiceway.settings import ImportSettings, MiB

from .constants import SERVICE_NAME
from .database import Database

PERIOD = Duration.minutes(5)
# Aurora PostgreSQL sets max_connections to LEAST(DBInstanceClassMemory / 9531392, 5000); at
# the cluster's 16 ACU (32 GiB) that is about 3,600. Alarm at roughly 80% of it.
DATABASE_CONNECTIONS_ALARM = 2800
CHUNK_MIB = ImportSettings().chunk_bytes // MiB


def _title(name: str) -> str:
    return "".join(part.title() for part in name.replace("-", "_").split("_"))


class Operations(Construct):
    """Every alarm goes to :attr:`topic` (subscribe an address with context ``alarmEmail``)."""

    def __init__(
        self,
        scope: Construct,
        id: str,
        *,
        functions: Mapping[str, lambda_.IFunction],
        state_machines: Mapping[str, sfn.IStateMachine],
        dead_letter_queues: Mapping[str, sqs.IQueue],
        database: Database,
        api: apigw.RestApi,
        alarm_email: str | None = None,
    ) -> None:
        super().__init__(scope, id)
        # A customer-managed key: CloudWatch cannot publish to a topic encrypted with the AWS
        # managed SNS key, whose policy cannot be changed to let it in.
        key = kms.Key(
            self,
            "AlarmsKey",
            description="sluiceway alarm topic",
            enable_key_rotation=True,
        )
        key.grant(
            iam.ServicePrincipal("cloudwatch.amazonaws.com"), "kms:Decrypt", "kms:GenerateDataKey*"
        )
        self.topic = sns.Topic(
            self, "Alarms", display_name="sluiceway alarms", master_key=key, enforce_ssl=True
        )
        if alarm_email:
            self.topic.add_subscription(subscriptions.EmailSubscription(alarm_email))
        self.alarms: list[cw.Alarm] = []

        for name, machine in state_machines.items():
            not_succeeded = cw.MathExpression(
                expression="failed + timedOut",
                using_metrics={
                    "failed": machine.metric_failed(period=PERIOD, statistic="Sum"),
                    "timedOut": machine.metric_timed_out(period=PERIOD, statistic="Sum"),
                },
                label=f"{name} executions failed or timed out",
                period=PERIOD,
            )
            self._alarm(
                f"{_title(name)}ExecutionsFailed",
                not_succeeded,
                f"An {name} execution failed or timed out: its job says why; the execution's "
                "history in the Step Functions console shows the failed state.",
            )
        for name, function in functions.items():
            self._alarm(
                f"{_title(name)}Errors",
                function.metric_errors(period=PERIOD, statistic="Sum"),
                f"The {name} function raised. A bad file also ends in an error the job "
                "reports; look for ones that are not MalformedFile in its log group.",
            )
            self._alarm(
                f"{_title(name)}Throttles",
                function.metric_throttles(period=PERIOD, statistic="Sum"),
                f"The {name} function was throttled: the account's or its own concurrency "
                "limit was reached; Step Functions retries, but imports slow down.",
            )
        for name, queue in dead_letter_queues.items():
            self._alarm(
                f"{_title(name)}DeadLetters",
                queue.metric_approximate_number_of_messages_visible(
                    period=PERIOD, statistic="Maximum"
                ),
                f"Events are waiting in the {name} dead-letter queue: an upload whose import "
                "never started. Each message is the event; start the import again from it.",
            )
        if database.cluster is not None:
            self._alarm(
                "DatabaseConnections",
                database.cluster.metric_database_connections(period=PERIOD, statistic="Maximum"),
                "PostgreSQL is near its connection limit: lower the Map concurrency or raise "
                "the cluster's maximum ACU.",
                threshold=DATABASE_CONNECTIONS_ALARM,
            )
        self._alarm(
            "ApiServerErrors",
            api.metric_server_error(period=PERIOD, statistic="Sum"),
            "The API answered 5xx: see the api function's log group.",
        )

        self.dashboard = cw.Dashboard(self, "Dashboard", default_interval=Duration.days(1))
        self.dashboard.add_widgets(
            cw.TextWidget(
                markdown=(
                    "# sluiceway\nThroughput from AWS metrics: executions per state machine, "
                    f"and byte ranges loaded (one `load_chunk` call per range of up to "
                    f"{CHUNK_MIB} MiB by default). The code publishes no row counts; a job's "
                    "rows are in `GET /jobs/{id}`."
                ),
                width=24,
                height=2,
            )
        )
        for name, machine in state_machines.items():
            self.dashboard.add_widgets(
                cw.GraphWidget(
                    title=f"{name}: executions per 5 minutes",
                    left=[
                        machine.metric_started(period=PERIOD, statistic="Sum"),
                        machine.metric_succeeded(period=PERIOD, statistic="Sum"),
                        machine.metric_failed(period=PERIOD, statistic="Sum"),
                    ],
                    width=12,
                ),
                cw.GraphWidget(
                    title=f"{name}: execution time",
                    left=[
                        machine.metric_time(period=PERIOD, statistic="p50"),
                        machine.metric_time(period=PERIOD, statistic="p90"),
                    ],
                    width=12,
                ),
            )
        if "load_chunk" in functions:
            ranges = functions["load_chunk"].metric_invocations(period=PERIOD, statistic="Sum")
            self.dashboard.add_widgets(
                cw.GraphWidget(
                    title="import throughput: MiB loaded per second (at most, from ranges)",
                    left=[
                        cw.MathExpression(
                            expression=f"ranges * {CHUNK_MIB} / PERIOD(ranges)",
                            using_metrics={"ranges": ranges},
                            label=f"ranges x {CHUNK_MIB} MiB / s",
                            period=PERIOD,
                        )
                    ],
                    right=[ranges],
                    width=24,
                )
            )
        self.dashboard.add_widgets(
            cw.GraphWidget(
                title="function errors",
                left=[f.metric_errors(period=PERIOD, statistic="Sum") for f in functions.values()],
                width=8,
            ),
            cw.GraphWidget(
                title="function throttles",
                left=[
                    f.metric_throttles(period=PERIOD, statistic="Sum") for f in functions.values()
                ],
                width=8,
            ),
            cw.GraphWidget(
                title="function duration p90",
                left=[
                    f.metric_duration(period=PERIOD, statistic="p90") for f in functions.values()
                ],
                width=8,
            ),
        )
        database_widgets: list[cw.IWidget] = [
            cw.GraphWidget(
                title="API requests and errors",
                left=[
                    api.metric_count(period=PERIOD, statistic="Sum"),
                    api.metric_client_error(period=PERIOD, statistic="Sum"),
                    api.metric_server_error(period=PERIOD, statistic="Sum"),
                ],
                width=8,
            )
        ]
        if database.cluster is not None:
            cluster = database.cluster
            database_widgets += [
                cw.GraphWidget(
                    title="database connections",
                    left=[cluster.metric_database_connections(period=PERIOD, statistic="Maximum")],
                    left_annotations=[
                        cw.HorizontalAnnotation(value=DATABASE_CONNECTIONS_ALARM, label="alarm")
                    ],
                    width=8,
                ),
                cw.GraphWidget(
                    title="database capacity (ACU) and CPU",
                    left=[cluster.metric_serverless_database_capacity(period=PERIOD)],
                    right=[cluster.metric_cpu_utilization(period=PERIOD)],
                    width=8,
                ),
            ]
        self.dashboard.add_widgets(*database_widgets)
        self.dashboard.add_widgets(
            cw.AlarmStatusWidget(title="alarms", alarms=list(self.alarms), width=24)
        )

    def _alarm(
        self, id: str, metric: cw.IMetric, description: str, *, threshold: float = 1
    ) -> None:
        alarm = cw.Alarm(
            self,
            id,
            metric=metric,
            threshold=threshold,
            evaluation_periods=1,
            comparison_operator=cw.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
            # No executions or invocations is not trouble.
            treat_missing_data=cw.TreatMissingData.NOT_BREACHING,
            alarm_description=description,
        )
        alarm.add_alarm_action(cw_actions.SnsAction(self.topic))
        self.alarms.append(alarm)


def tag_components(stack: Stack) -> None:
    """Tag every resource ``project=sluiceway`` and ``component=<construct>`` (for cost reports).

    The component is the id of the stack's child construct the resource is made in, in
    kebab case (``ImportPipeline`` -> ``import-pipeline``), so a new construct is tagged too.
    """
    # CDK's L1 for a proxy target group takes tags; CloudFormation's schema refuses them.
    untaggable = ["AWS::RDS::DBProxyTargetGroup"]
    Tags.of(stack).add("project", SERVICE_NAME, exclude_resource_types=untaggable)
    for child in stack.node.children:
        component = re.sub(r"(?<!^)(?=[A-Z])", "-", child.node.id).lower()
        Tags.of(child).add("component", component, exclude_resource_types=untaggable)
