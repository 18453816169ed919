"""PostgreSQL: Aurora Serverless v2 behind RDS Proxy, or an existing database's secret."""

from __future__ import annotations

from aws_cdk import Duration, RemovalPolicy
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_rds as rds
from aws_cdk import aws_secretsmanager as secretsmanager
from constructs import Construct, IDependable

from .checks import acknowledge
from .network import Network

DATABASE_NAME = "sluiceway"
POSTGRES_PORT = 5432
# COPY-heavy loads scale the writer up; idle, it shrinks back to half an ACU.
MIN_CAPACITY_ACU = 0.5
MAX_CAPACITY_ACU = 16


class Database(Construct):
    """Where the functions connect: :attr:`secret` holds the credentials (the standard RDS secret
    JSON: host, port, username, password, dbname); :attr:`host`, when set, overrides the secret's
    host so that connections go through RDS Proxy, which pools the many short Lambda connections
    a Distributed Map opens at once.

    With ``existing_secret_arn`` (the complete ARN of such a secret) no database is created:
    reaching it from the VPC's private subnets (peering, or its public endpoint through the NAT)
    is then the operator's job, and :meth:`allow_from` does nothing.
    """

    def __init__(
        self, scope: Construct, id: str, *, network: Network, existing_secret_arn: str | None
    ) -> None:
        super().__init__(scope, id)
        self.host: str | None = None
        # What must exist before anything connects (migrations on deploy wait for it).
        self.ready: list[IDependable] = []
        self.cluster: rds.DatabaseCluster | None = None
        self._proxy: rds.DatabaseProxy | None = None
        if existing_secret_arn:
            self.secret: secretsmanager.ISecret = secretsmanager.Secret.from_secret_complete_arn(
                self, "ExistingSecret", existing_secret_arn
            )
            return

        cluster = rds.DatabaseCluster(
            self,
            "Cluster",
            engine=rds.DatabaseClusterEngine.aurora_postgres(
                version=rds.AuroraPostgresEngineVersion.VER_17_5
            ),
            credentials=rds.Credentials.from_generated_secret("sluiceway"),
            default_database_name=DATABASE_NAME,
            writer=rds.ClusterInstance.serverless_v2("Writer"),
            serverless_v2_min_capacity=MIN_CAPACITY_ACU,
            serverless_v2_max_capacity=MAX_CAPACITY_ACU,
            vpc=network.vpc,
            vpc_subnets=network.database_subnets,
            storage_encrypted=True,
            iam_authentication=True,
            deletion_protection=True,
            backup=rds.BackupProps(retention=Duration.days(7)),
            cloudwatch_logs_exports=["postgresql"],
            removal_policy=RemovalPolicy.SNAPSHOT,
        )
        assert cluster.secret is not None  # from_generated_secret always makes one
        cluster.add_rotation_single_user(automatically_after=Duration.days(30))
        acknowledge(
            cluster,
            {
                "AwsSolutions-RDS11": "The default port is kept: the cluster is reachable only "
                "from the proxy's security group in isolated subnets; a custom port adds no "
                "protection there.",
            },
        )

        self._proxy = cluster.add_proxy(
            "Proxy",
            secrets=[cluster.secret],
            vpc=network.vpc,
            vpc_subnets=network.database_subnets,
            require_tls=True,
        )
        self.secret = cluster.secret
        self.host = self._proxy.endpoint
        self.ready = [cluster, self._proxy]
        self.cluster = cluster

    def allow_from(self, peer: ec2.IConnectable) -> None:
        """Let ``peer`` (the functions' security group) open connections to the proxy."""
        if self._proxy is not None:
            self._proxy.connections.allow_from(
                peer, ec2.Port.tcp(POSTGRES_PORT), "sluiceway functions"
            )
