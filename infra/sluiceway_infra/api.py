"""The HTTP API: API Gateway REST API, behind a Cognito authorizer, proxying to ``api``."""

from __future__ import annotations

import json

from aws_cdk import CfnOutput, Duration
from aws_cdk import aws_apigateway as apigw
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_logs as logs
from constructs import Construct

from .checks import acknowledge
from .users import Users

STAGE_NAME = "v1"
# Per-stage limits for the whole API; raise them with the account's quota, not per route.
THROTTLE_RATE_PER_SECOND = 50
THROTTLE_BURST = 100
# Served without a token, as src/sluiceway/api.py's PUBLIC_ROUTES are (a test keeps them equal).
PUBLIC_PATHS = ("/health", "/openapi.json", "/docs")


class Api(Construct):
    """API Gateway checks the caller's Cognito ID token on every route but the public ones, and
    passes its claims on; the function takes ``claims.sub`` as the owner (``api.handle``).

    Routes, validation and ownership live in the function (src/sluiceway/api.py). Everything
    goes to it through ``ANY /`` and ``ANY /{proxy+}``, which need the token; the public routes
    have their own ``GET`` methods without it.
    """

    def __init__(self, scope: Construct, id: str, *, handler: lambda_.IFunction) -> None:
        super().__init__(scope, id)
        self.users = Users(self, "Users")
        access_logs = logs.LogGroup(self, "AccessLogs", retention=logs.RetentionDays.ONE_MONTH)
        self.rest_api = apigw.LambdaRestApi(
            self,
            "RestApi",
            handler=handler,
            proxy=False,
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
        self.authorizer = apigw.CognitoUserPoolsAuthorizer(
            self,
            "Authorizer",
            cognito_user_pools=[self.users.pool],
            # A job poll every second must not cost a token check each; ID tokens live 1 hour.
            results_cache_ttl=Duration.minutes(5),
        )
        signed_in = apigw.MethodOptions(
            authorizer=self.authorizer, authorization_type=apigw.AuthorizationType.COGNITO
        )
        root = self.rest_api.root
        root.add_method(
            "ANY", authorizer=self.authorizer, authorization_type=apigw.AuthorizationType.COGNITO
        )
        root.add_proxy(any_method=True, default_method_options=signed_in)
        for path in PUBLIC_PATHS:
            root.add_resource(path.strip("/")).add_method(
                "GET", authorization_type=apigw.AuthorizationType.NONE
            )
        # API Gateway's own refusals in the API's error shape ({"error", "message"}).
        for response_type, status, code, message in (
            (
                apigw.ResponseType.UNAUTHORIZED,
                "401",
                "unauthorized",
                "Missing or invalid token: send 'Authorization: Bearer <Cognito ID token>'.",
            ),
            (apigw.ResponseType.ACCESS_DENIED, "403", "forbidden", "$context.error.message"),
            (
                apigw.ResponseType.THROTTLED,
                "429",
                "throttled",
                "Too many requests: slow down and retry.",
            ),
        ):
            self.rest_api.add_gateway_response(
                f"{code.title()}Response",
                type=response_type,
                status_code=status,
                templates={
                    "application/json": json.dumps({"error": code, "message": message}),
                },
            )
        CfnOutput(scope, "UserPoolId", value=self.users.pool.user_pool_id)
        CfnOutput(scope, "UserPoolClientId", value=self.users.client.user_pool_client_id)
        acknowledge(
            self,
            {
                "AwsSolutions-APIG2": "A proxy integration has no per-route models; the api "
                "function validates every request body with pydantic.",
                "AwsSolutions-APIG3": "No WAF web ACL in the Foundation stack: stage throttling "
                "bounds abuse; attach a web ACL per deployment where the API is public.",
                "AwsSolutions-APIG4": "Only the public routes (/health, /openapi.json, /docs) "
                "have no authorizer: a health check and the API's description.",
                "AwsSolutions-COG4": "Only the public routes use no Cognito authorizer: see "
                "AwsSolutions-APIG4.",
                "AwsSolutions-IAM4[Policy::arn:<AWS::Partition>:iam::aws:policy/service-role/"
                "AmazonAPIGatewayPushToCloudWatchLogs]": "AWS managed policy of the account-wide "
                "role API Gateway uses to write access logs.",
            },
        )
