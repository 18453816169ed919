"""PostgreSQL on AWS: Aurora Serverless v2 behind RDS Proxy, reachable only from the functions."""

from __future__ import annotations

import pytest

from infra_support import Synthesized

pytestmark = pytest.mark.infra


def test_cluster_is_aurora_postgresql_serverless_v2(synthesized: Synthesized) -> None:
    _, cluster = synthesized.only("AWS::RDS::DBCluster")
    _, writer = synthesized.only("AWS::RDS::DBInstance")

    properties = cluster["Properties"]
    assert properties["Engine"] == "aurora-postgresql"
    assert properties["ServerlessV2ScalingConfiguration"]["MinCapacity"] > 0
    assert properties["StorageEncrypted"] is True
    assert properties["DeletionProtection"] is True
    assert writer["Properties"]["DBInstanceClass"] == "db.serverless"
    assert writer["Properties"]["PubliclyAccessible"] is False


def test_credentials_live_in_secrets_manager_and_rotate(synthesized: Synthesized) -> None:
    _, cluster = synthesized.only("AWS::RDS::DBCluster")
    _, rotation = synthesized.only("AWS::SecretsManager::RotationSchedule")

    assert "{{resolve:secretsmanager:" in str(cluster["Properties"]["MasterUserPassword"])
    assert rotation["Properties"]["RotationRules"]["ScheduleExpression"] == "rate(30 days)"


def test_functions_reach_the_database_only_through_the_tls_proxy(
    synthesized: Synthesized,
) -> None:
    _, proxy = synthesized.only("AWS::RDS::DBProxy")
    ingress = synthesized.resources("AWS::EC2::SecurityGroupIngress").values()

    assert proxy["Properties"]["RequireTLS"] is True
    [from_functions] = [
        rule["Properties"]
        for rule in ingress
        if rule["Properties"]["SourceSecurityGroupId"]["Fn::GetAtt"][0].startswith(
            "FunctionsSecurityGroup"
        )
    ]
    assert from_functions["FromPort"] == from_functions["ToPort"] == 5432
    [proxy_group] = proxy["Properties"]["VpcSecurityGroupIds"]
    assert from_functions["GroupId"] == proxy_group


@pytest.mark.usefixtures("node")
def test_an_existing_database_is_used_through_its_secret_alone() -> None:
    from aws_cdk import App, Stack
    from aws_cdk.assertions import Template

    from sluiceway_infra.database import Database
    from sluiceway_infra.network import Network

    secret_arn = "arn:aws:secretsmanager:eu-west-1:123456789012:secret:sluiceway-db-AbCdEf"
    stack = Stack(App(), "ExistingDatabase")
    database = Database(
        stack, "Database", network=Network(stack, "Network"), existing_secret_arn=secret_arn
    )

    template = Template.from_stack(stack)
    template.resource_count_is("AWS::RDS::DBCluster", 0)
    template.resource_count_is("AWS::RDS::DBProxy", 0)
    assert database.secret.secret_arn == secret_arn
    assert database.host is None
