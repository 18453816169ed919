"""Migrations on deploy: a custom resource that runs the ``migrate`` function.

CloudFormation sends an Update to a custom resource only when its properties change, so the
resource carries a hash of the migration files: a deploy that adds or edits a migration applies
it, and one that does not skips the call (yoyo would find nothing pending anyway).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path

from aws_cdk import CustomResource
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_logs as logs
from aws_cdk import custom_resources as cr
from constructs import Construct, IDependable

from .checks import acknowledge, token_of
from .constants import MIGRATIONS_DIR

RESOURCE_TYPE = "Custom::Migrations"


def migrations_hash(directory: Path = MIGRATIONS_DIR) -> str:
    """sha256 over every migration file's name and bytes, in name order."""
    digest = hashlib.sha256()
    for path in sorted(directory.glob("*.sql")):
        digest.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


class Migrations(Construct):
    """Applies pending migrations once the database is up and before the other functions change.

    ``after`` are the constructs the database is ready after (cluster, proxy); ``before`` are
    the functions that must not run new code on an old schema: CloudFormation updates them only
    once the migrations have been applied.
    """

    def __init__(
        self,
        scope: Construct,
        id: str,
        *,
        function: lambda_.IFunction,
        after: Sequence[IDependable],
        before: Sequence[Construct],
    ) -> None:
        super().__init__(scope, id)
        provider = cr.Provider(
            self,
            "Provider",
            on_event_handler=function,
            log_group=logs.LogGroup(self, "ProviderLogs", retention=logs.RetentionDays.ONE_MONTH),
        )
        self.resource = CustomResource(
            self,
            "Resource",
            service_token=provider.service_token,
            resource_type=RESOURCE_TYPE,
            properties={"MigrationsHash": migrations_hash()},
        )
        for dependency in after:
            self.resource.node.add_dependency(dependency)
        for construct in before:
            construct.node.add_dependency(self.resource)
        acknowledge(
            provider,
            {
                "AwsSolutions-IAM4[Policy::arn:<AWS::Partition>:iam::aws:policy/service-role/"
                "AWSLambdaBasicExecutionRole]": "AWS managed policy: writes the provider "
                "framework function's logs.",
                f"AwsSolutions-IAM5[Resource::{token_of(function)}:*]": "CDK's grant to invoke "
                "any version of the migrate function, and that function alone.",
            },
        )
