"""The Lambda functions: one per directory of functions/, sharing two layers.

Each function's code asset is ``functions/<name>/`` (a thin ``handler.py``); the dependencies and
the sluiceway package come from the layers that ``layers/build.py`` builds without Docker.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from aws_cdk import Annotations, Duration, Stack
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_logs as logs
from aws_cdk import aws_s3 as s3
from constructs import Construct

from sluiceway import names
from sluiceway.settings import ImportSettings

from .checks import acknowledge, token_of
from .constants import SERVICE_NAME
from .database import Database
from .network import Network

# layers/build.py builds the dependency layer for exactly this runtime and architecture.
RUNTIME = lambda_.Runtime.PYTHON_3_12
ARCHITECTURE = lambda_.Architecture.ARM_64
HANDLER = "handler.handler"
ASSET_EXCLUDES = ["__pycache__", "*.pyc"]

# Functions that never touch objects get no grant on the bucket.
WITHOUT_BUCKET = frozenset({"migrate"})


# Each range load holds one database connection (through RDS Proxy) for up to 15 minutes, so
# the Map's concurrency is what one import asks of the database: 8 ranges at once keep even a
# 0.5 ACU Aurora (about 100 connections) serving a dozen imports; raise it with the cluster.
DEFAULT_MAP_CONCURRENCY: Final = ImportSettings().map_concurrency
# Several imports and exports at once multiply that. Context databaseFunctionConcurrency caps
# these functions' concurrency account-wide (reserved concurrency: the Map then waits, retrying
# TooManyRequests with backoff). Off by default: reserving needs the account's unreserved pool
# to stay at 100 or more, which a new account's limit of 10 cannot give.
DATABASE_HEAVY: Final = frozenset({"load_chunk", "write_export_part", "commit_import"})


@dataclass(frozen=True)
class Size:
    memory_mib: int
    timeout: Duration


SIZES: dict[str, Size] = {
    # Reads the object's first bytes and writes the range list to work/: seconds, little memory.
    "plan_import": Size(512, Duration.minutes(2)),
    # Streams one 64 MiB range counting quotes: CPU-bound, 1769 MiB is one full vCPU.
    "scan_chunk": Size(1769, Duration.minutes(10)),
    # Folds the per-range counts serially: small JSON in, small JSON out.
    "resolve_chunks": Size(512, Duration.minutes(2)),
    # Parses, hashes and COPYs one range: CPU and network bound, up to Lambda's 15 minutes.
    "load_chunk": Size(2048, Duration.minutes(15)),
    # Waits on set-based SQL in PostgreSQL (dedupe, ref move): long, but light in the function.
    "commit_import": Size(512, Duration.minutes(15)),
    # Waits on the search summary refresh in PostgreSQL.
    "refresh_search": Size(512, Duration.minutes(15)),
    # Writes one job row.
    "fail_import": Size(256, Duration.minutes(1)),
    # Cuts the commit's row numbers into ranges and writes the part list to work/.
    "plan_export": Size(512, Duration.minutes(2)),
    # Streams one range of rows (1M by default) from PostgreSQL into S3 pieces, two at most
    # in memory (16 MiB), encoding JSON or Parquet in Python: CPU-bound, one full vCPU.
    "write_export_part": Size(1769, Duration.minutes(15)),
    # Reads the parts' rows and writes the manifest: small.
    "finish_export": Size(512, Duration.minutes(2)),
    # Aborts the export's multipart uploads and deletes its parts.
    "fail_export": Size(512, Duration.minutes(5)),
    # API Gateway gives up on an integration after 29 seconds.
    "api": Size(1024, Duration.seconds(29)),
    # Applies pending migrations on deploy: waits on DDL in PostgreSQL, light in the function;
    # a migration that rewrites a big table may take long, and CloudFormation waits up to 1 h.
    "migrate": Size(512, Duration.minutes(15)),
}


def layer_dirs(scope: Construct, build_dir: Path) -> tuple[Path, Path]:
    """The deps and app layer directories, or empty placeholders (with a warning) if not built.

    Synthesis, and so the tests and cdk-nag, must not need the layers built; a deployment does.
    """
    deps, app = build_dir / "deps", build_dir / "app"
    if (deps / "python").is_dir() and (app / "python" / "sluiceway").is_dir():
        return deps, app
    placeholder = Path(tempfile.mkdtemp(prefix="sluiceway-layer-"))
    for part in ("deps", "app"):
        (placeholder / part / "python").mkdir(parents=True)
    Annotations.of(scope).add_warning_v2(
        "sluiceway:LayersNotBuilt",
        f"{build_dir} has no built layers: using empty placeholders. "
        "Run `python layers/build.py` before deploying.",
    )
    return placeholder / "deps", placeholder / "app"


class Functions(Construct):
    """Every function of names.FUNCTIONS, in the VPC, allowed to the bucket and the database."""

    def __init__(
        self,
        scope: Construct,
        id: str,
        *,
        code_dir: Path,
        layer_build_dir: Path,
        bucket: s3.IBucket,
        network: Network,
        database: Database,
        map_concurrency: int = DEFAULT_MAP_CONCURRENCY,
        database_concurrency: int | None = None,
        reuse_blocks: bool = False,
    ) -> None:
        super().__init__(scope, id)
        if set(SIZES) != set(names.FUNCTIONS):
            raise ValueError(
                f"functions.SIZES {sorted(SIZES)} must size exactly names.FUNCTIONS "
                f"{sorted(names.FUNCTIONS)}: add or remove the entry in SIZES"
            )
        missing = [
            name for name in names.FUNCTIONS if not (code_dir / name / "handler.py").is_file()
        ]
        if missing:
            raise FileNotFoundError(f"no handler.py for {missing} under {code_dir}")

        self.security_group = ec2.SecurityGroup(
            self,
            "SecurityGroup",
            vpc=network.vpc,
            description="sluiceway functions: out to AWS APIs, S3 and the database proxy",
            allow_all_outbound=True,
        )
        database.allow_from(self.security_group)

        deps_dir, app_dir = layer_dirs(self, layer_build_dir)
        layers = [
            lambda_.LayerVersion(
                self,
                "DepsLayer",
                code=lambda_.Code.from_asset(str(deps_dir), exclude=ASSET_EXCLUDES),
                compatible_runtimes=[RUNTIME],
                compatible_architectures=[ARCHITECTURE],
                description="sluiceway runtime dependencies (layers/build.py)",
            ),
            lambda_.LayerVersion(
                self,
                "AppLayer",
                code=lambda_.Code.from_asset(str(app_dir), exclude=ASSET_EXCLUDES),
                compatible_runtimes=[RUNTIME],
                compatible_architectures=[ARCHITECTURE],
                description="the sluiceway package (layers/build.py)",
            ),
        ]

        environment = {
            "POWERTOOLS_SERVICE_NAME": SERVICE_NAME,
            "SLUICEWAY_STORAGE__BUCKET": bucket.bucket_name,
            "SLUICEWAY_STORAGE__REGION": Stack.of(self).region,
            "SLUICEWAY_DATABASE_SECRET_ARN": database.secret.secret_arn,
            # the Map's MaxConcurrency: ranges of one import loading at once
            "SLUICEWAY_IMPORTS__MAP_CONCURRENCY": str(map_concurrency),
            # CSV re-imports by blocks of bytes seen before (sluiceway.blocks; docs/scale.md)
            "SLUICEWAY_IMPORTS__REUSE_BLOCKS": "true" if reuse_blocks else "false",
        }
        if database.host is not None:
            environment["SLUICEWAY_DATABASE_HOST"] = database.host

        self.by_name: dict[str, lambda_.Function] = {}
        for name, size in SIZES.items():
            construct_id = "".join(part.title() for part in name.split("_"))
            function = lambda_.Function(
                self,
                construct_id,
                description=f"sluiceway {name} (functions/{name}/handler.py)",
                runtime=RUNTIME,
                architecture=ARCHITECTURE,
                handler=HANDLER,
                code=lambda_.Code.from_asset(str(code_dir / name), exclude=ASSET_EXCLUDES),
                layers=layers,
                memory_size=size.memory_mib,
                timeout=size.timeout,
                reserved_concurrent_executions=database_concurrency
                if name in DATABASE_HEAVY
                else None,
                environment=environment,
                tracing=lambda_.Tracing.ACTIVE,
                log_group=logs.LogGroup(
                    self, f"{construct_id}Logs", retention=logs.RetentionDays.ONE_MONTH
                ),
                vpc=network.vpc,
                vpc_subnets=network.app_subnets,
                security_groups=[self.security_group],
            )
            database.secret.grant_read(function)
            self.by_name[name] = function
            if name in WITHOUT_BUCKET:
                continue
            # Object keys are chosen at run time, so objects are granted by bucket, not by key.
            function.add_to_role_policy(
                iam.PolicyStatement(
                    actions=[
                        "s3:GetObject",
                        "s3:PutObject",
                        "s3:DeleteObject",
                        "s3:AbortMultipartUpload",
                        "s3:ListMultipartUploadParts",
                    ],
                    resources=[bucket.arn_for_objects("*")],
                )
            )
            function.add_to_role_policy(
                iam.PolicyStatement(
                    actions=["s3:ListBucket", "s3:ListBucketMultipartUploads"],
                    resources=[bucket.bucket_arn],
                )
            )
            if bucket.encryption_key is not None:  # a KMS-encrypted bucket (dataKmsKeyArn)
                bucket.encryption_key.grant_encrypt_decrypt(function)

        acknowledge(
            self,
            {
                "AwsSolutions-L1": "Pinned to Python 3.12: the dependency layer is built for "
                "cp312 by layers/build.py; move both together.",
                "AwsSolutions-IAM4[Policy::arn:<AWS::Partition>:iam::aws:policy/service-role/"
                "AWSLambdaBasicExecutionRole]": "AWS managed policy: writes the function's logs.",
                "AwsSolutions-IAM4[Policy::arn:<AWS::Partition>:iam::aws:policy/service-role/"
                "AWSLambdaVPCAccessExecutionRole]": "AWS managed policy: the network interfaces "
                "a function in a VPC needs.",
                "AwsSolutions-IAM5[Resource::*]": "X-Ray's PutTraceSegments and "
                "PutTelemetryRecords support no resource-level permissions.",
                f"AwsSolutions-IAM5[Resource::{token_of(bucket)}/*]": "Object keys are made per "
                "upload, import and export at run time; the grant is limited to the one bucket.",
            },
        )
