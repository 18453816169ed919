"""The data bucket: uploads arrive, the pipeline keeps its work files, exports leave."""

from __future__ import annotations

from collections.abc import Sequence

from aws_cdk import Duration, RemovalPolicy
from aws_cdk import aws_kms as kms
from aws_cdk import aws_s3 as s3
from constructs import Construct

from .checks import acknowledge
from .constants import SESSIONS_PREFIX, WORK_PREFIX


class Storage(Construct):
    """One private bucket that browsers upload to directly through presigned multipart URLs.

    Versioning stays off: uploads are consumed once by an import, ``work/`` holds the pipeline's
    scratch files, and exports can be made again from PostgreSQL, which keeps the versions that
    matter (commits). Versioning would keep every multi-gigabyte upload and scratch file forever.
    """

    def __init__(
        self,
        scope: Construct,
        id: str,
        *,
        cors_allowed_origins: Sequence[str] | str,
        kms_key_arn: str | None = None,
    ) -> None:
        super().__init__(scope, id)
        # `cdk deploy -c corsAllowedOrigins=a,b` gives one string; cdk.json may give a list.
        if isinstance(cors_allowed_origins, str):
            cors_allowed_origins = [o.strip() for o in cors_allowed_origins.split(",") if o.strip()]

        access_logs = s3.Bucket(
            self,
            "AccessLogs",
            block_public_access=s3.BlockPublicAccess.BLOCK_ALL,
            enforce_ssl=True,
            encryption=s3.BucketEncryption.S3_MANAGED,
            lifecycle_rules=[s3.LifecycleRule(id="ExpireAccessLogs", expiration=Duration.days(90))],
            removal_policy=RemovalPolicy.RETAIN,
        )
        acknowledge(
            access_logs,
            {"AwsSolutions-S1": "The access log bucket itself: it would log its own logs."},
        )

        self.bucket = s3.Bucket(
            self,
            "DataBucket",
            block_public_access=s3.BlockPublicAccess.BLOCK_ALL,
            enforce_ssl=True,
            minimum_tls_version=1.2,
            # SSE-S3 unless the deployer brings a KMS key (context dataKmsKeyArn); then S3 Bucket
            # Keys, so a 10,000-part upload does not make 10,000 KMS requests.
            encryption=s3.BucketEncryption.KMS if kms_key_arn else s3.BucketEncryption.S3_MANAGED,
            encryption_key=kms.Key.from_key_arn(self, "DataKey", kms_key_arn)
            if kms_key_arn
            else None,
            bucket_key_enabled=True if kms_key_arn else None,
            versioned=False,
            server_access_logs_bucket=access_logs,
            server_access_logs_prefix="data/",
            cors=[
                s3.CorsRule(
                    allowed_methods=[
                        s3.HttpMethods.GET,
                        s3.HttpMethods.PUT,
                        s3.HttpMethods.POST,
                        s3.HttpMethods.DELETE,
                        s3.HttpMethods.HEAD,
                    ],
                    allowed_origins=list(cors_allowed_origins),
                    allowed_headers=["*"],
                    # The browser must read each part's ETag to complete a multipart upload.
                    exposed_headers=["ETag"],
                    max_age=3000,
                )
            ],
            lifecycle_rules=[
                # A browser that gives up leaves parts behind that are billed but invisible.
                s3.LifecycleRule(
                    id="AbortIncompleteUploads",
                    abort_incomplete_multipart_upload_after=Duration.days(2),
                ),
                s3.LifecycleRule(
                    id="ExpireWorkFiles", prefix=WORK_PREFIX, expiration=Duration.days(7)
                ),
                # chunks of record sessions nobody committed (a commit deletes its own)
                s3.LifecycleRule(
                    id="ExpireSessionChunks", prefix=SESSIONS_PREFIX, expiration=Duration.days(7)
                ),
            ],
            removal_policy=RemovalPolicy.RETAIN,
        )
        # Object-created events go to EventBridge, where a rule starts the import. Set on the
        # bucket itself: `event_bridge_enabled=True` would do it through a custom-resource Lambda,
        # needed only for buckets this stack does not own.
        data_bucket = self.bucket.node.default_child
        assert isinstance(data_bucket, s3.CfnBucket)
        data_bucket.notification_configuration = s3.CfnBucket.NotificationConfigurationProperty(
            event_bridge_configuration=s3.CfnBucket.EventBridgeConfigurationProperty(
                event_bridge_enabled=True
            )
        )
