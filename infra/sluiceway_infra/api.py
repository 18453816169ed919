"""The HTTP API: API Gateway REST API proxying every route to the ``api`` function."""

from __future__ import annotations

from aws_cdk import aws_apigateway as apigw
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_logs as logs
from constructs import Construct

from .checks import acknowledge

STAGE_NAME = "v1"
# Per-stage limits for the whole API; raise them with the account's quota, not per route.
THROTTLE_RATE_PER_SECOND = 50
THROTTLE_BURST = 100


class Api(Construct):
    """Routes, validation and authentication live in the function (src/sluiceway/api.py)."""

    def __init__(self, scope: Construct, id: str, *, handler: lambda_.IFunction) -> None:
        super().__init__(scope, id)
        access_logs = logs.LogGroup(self, "AccessLogs", retention=logs.RetentionDays.ONE_MONTH)
        self.rest_api = apigw.LambdaRestApi(
            self,
            "RestApi",
            handler=handler,
            proxy=True,
            description="sluiceway HTTP API",
            endpoint_types=[apigw.EndpointType.REGIONAL],
            # Access logging needs the account-wide API Gateway role to write to CloudWatch Logs.
            cloud_watch_role=True,
            deploy_options=apigw.StageOptions(
                stage_name=STAGE_NAME,
                throttling_rate_limit=THROTTLE_RATE_PER_SECOND,
                throttling_burst_limit=THROTTLE_BURST,
                access_log_destination=apigw.LogGroupLogDestination(access_logs),
                access_log_format=apigw.AccessLogFormat.json_with_standard_fields(
                    caller=True,
                    http_method=True,
                    ip=True,
                    protocol=True,
                    request_time=True,
                    resource_path=True,
                    response_length=True,
                    status=True,
                    user=True,
                ),
                logging_level=apigw.MethodLoggingLevel.ERROR,
                # Request bodies may carry presigned URLs and dataset names: keep them out of logs.
                data_trace_enabled=False,
                metrics_enabled=True,
                tracing_enabled=True,
            ),
        )
        acknowledge(
            self,
            {
                "AwsSolutions-APIG2": "A proxy integration has no per-route models; the api "
                "function validates every request body with pydantic.",
                "AwsSolutions-APIG3": "No WAF web ACL in the Foundation stack: stage throttling "
                "bounds abuse; attach a web ACL per deployment where the API is public.",
                "AwsSolutions-APIG4": "Authentication is the api function's job: the browser "
                "uploader sends a same-origin cookie, other callers a Bearer token; an API "
                "Gateway authorizer cannot serve both on one proxy route.",
                "AwsSolutions-COG4": "No Cognito user pool: see AwsSolutions-APIG4.",
                "AwsSolutions-IAM4[Policy::arn:<AWS::Partition>:iam::aws:policy/service-role/"
                "AmazonAPIGatewayPushToCloudWatchLogs]": "AWS managed policy of the account-wide "
                "role API Gateway uses to write access logs.",
            },
        )
