"""The sluiceway stack: composes the constructs in the order data flows through them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from aws_cdk import CfnOutput, Stack
from constructs import Construct

from .api import Api
from .constants import (
    CONTEXT_ALARM_EMAIL,
    CONTEXT_CORS_ALLOWED_ORIGINS,
    CONTEXT_DATA_KMS_KEY_ARN,
    CONTEXT_DATABASE_FUNCTION_CONCURRENCY,
    CONTEXT_EXISTING_DATABASE_SECRET_ARN,
    CONTEXT_FUNCTIONS_DIR,
    CONTEXT_LAYER_DIR,
    CONTEXT_MAP_CONCURRENCY,
    CONTEXT_REUSE_BLOCKS,
    FUNCTIONS_DIR,
    LAYER_BUILD_DIR,
)
from .database import Database
from .export_pipeline import ExportPipeline
from .functions import DEFAULT_MAP_CONCURRENCY, Functions
from .import_pipeline import ImportPipeline
from .migrations import Migrations
from .network import Network
from .operations import Operations, tag_components
from .storage import Storage


def context_flag(key: str, value: Any, default: bool = False) -> bool:
    """A yes/no context value: a JSON boolean from cdk.json, or ``true``/``false`` from
    ``-c key=value``; anything else is refused, so a typo is not read as the default."""
    if value is None:
        return default
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("true", "1", "yes", "on"):
        return True
    if text in ("false", "0", "no", "off"):
        return False
    raise ValueError(f"Context {key!r} must be true or false, not {value!r}.")


class SluicewayStack(Stack):
    """Upload to the bucket -> EventBridge -> import state machine -> Lambdas -> PostgreSQL
    -> export state machine (on demand, on a schedule, or after a commit) -> the bucket."""

    def __init__(self, scope: Construct, id: str, **kwargs: Any) -> None:
        super().__init__(
            scope,
            id,
            description="sluiceway: datasets in and out of PostgreSQL through S3",
            **kwargs,
        )
        context = self.node.try_get_context

        storage = Storage(
            self,
            "Storage",
            cors_allowed_origins=context(CONTEXT_CORS_ALLOWED_ORIGINS) or ["*"],
            kms_key_arn=context(CONTEXT_DATA_KMS_KEY_ARN),
        )
        network = Network(self, "Network")
        database = Database(
            self,
            "Database",
            network=network,
            existing_secret_arn=context(CONTEXT_EXISTING_DATABASE_SECRET_ARN),
        )
        functions = Functions(
            self,
            "Functions",
            code_dir=Path(context(CONTEXT_FUNCTIONS_DIR) or FUNCTIONS_DIR),
            layer_build_dir=Path(context(CONTEXT_LAYER_DIR) or LAYER_BUILD_DIR),
            bucket=storage.bucket,
            network=network,
            database=database,
            map_concurrency=int(context(CONTEXT_MAP_CONCURRENCY) or DEFAULT_MAP_CONCURRENCY),
            database_concurrency=int(context(CONTEXT_DATABASE_FUNCTION_CONCURRENCY) or 0) or None,
            reuse_blocks=context_flag(CONTEXT_REUSE_BLOCKS, context(CONTEXT_REUSE_BLOCKS)),
        )
        Migrations(
            self,
            "Migrations",
            function=functions.by_name["migrate"],
            after=database.ready,
            before=[f for name, f in functions.by_name.items() if name != "migrate"],
        )
        pipeline = ImportPipeline(
            self, "ImportPipeline", bucket=storage.bucket, functions=functions.by_name
        )
        exports = ExportPipeline(
            self, "ExportPipeline", bucket=storage.bucket, functions=functions.by_name
        )
        api_function = functions.by_name["api"]
        api_function.add_environment(
            "SLUICEWAY_IMPORT_STATE_MACHINE_ARN", pipeline.state_machine.state_machine_arn
        )
        pipeline.state_machine.grant_start_execution(api_function)
        exports.allow_scheduling(api_function)
        exports.allow_start(functions.by_name["commit_import"])  # a dataset's commit exports
        api = Api(self, "Api", handler=api_function)

        Operations(
            self,
            "Operations",
            functions=functions.by_name,
            state_machines={"import": pipeline.state_machine, "export": exports.state_machine},
            dead_letter_queues={"unstarted-imports": pipeline.dead_letters},
            database=database,
            api=api.rest_api,
            alarm_email=context(CONTEXT_ALARM_EMAIL),
        )
        tag_components(self)

        CfnOutput(self, "ApiUrl", value=api.rest_api.url)
        CfnOutput(self, "DataBucketName", value=storage.bucket.bucket_name)
        CfnOutput(self, "ImportStateMachineArn", value=pipeline.state_machine.state_machine_arn)
        CfnOutput(self, "ExportStateMachineArn", value=exports.state_machine.state_machine_arn)
