"""The VPC the functions and the database live in."""

from __future__ import annotations

from aws_cdk import aws_ec2 as ec2
from constructs import Construct

APP_SUBNETS = "app"
DATABASE_SUBNETS = "database"


class Network(Construct):
    """Two AZs: functions in private subnets with egress, the database in isolated subnets.

    One NAT gateway carries the functions' calls to AWS APIs (Secrets Manager, Step Functions,
    X-Ray); bulk data to and from S3 takes the free gateway endpoint instead of the NAT.
    """

    def __init__(self, scope: Construct, id: str) -> None:
        super().__init__(scope, id)
        self.vpc = ec2.Vpc(
            self,
            "Vpc",
            max_azs=2,
            nat_gateways=1,
            subnet_configuration=[
                ec2.SubnetConfiguration(name="public", subnet_type=ec2.SubnetType.PUBLIC),
                ec2.SubnetConfiguration(
                    name=APP_SUBNETS, subnet_type=ec2.SubnetType.PRIVATE_WITH_EGRESS
                ),
                ec2.SubnetConfiguration(
                    name=DATABASE_SUBNETS, subnet_type=ec2.SubnetType.PRIVATE_ISOLATED
                ),
            ],
            gateway_endpoints={
                "S3": ec2.GatewayVpcEndpointOptions(service=ec2.GatewayVpcEndpointAwsService.S3)
            },
            flow_logs={"FlowLogs": ec2.FlowLogOptions()},
        )
        self.app_subnets = ec2.SubnetSelection(subnet_group_name=APP_SUBNETS)
        self.database_subnets = ec2.SubnetSelection(subnet_group_name=DATABASE_SUBNETS)
