"""Migrations on deploy: a custom resource runs the migrate function once the database is up."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from infra_support import Synthesized

pytestmark = pytest.mark.infra


def _function_ids(synthesized: Synthesized) -> dict[str, str]:
    """sluiceway function name -> logical id."""
    from sluiceway import names

    return {
        name: lid
        for lid, body in synthesized.resources("AWS::Lambda::Function").items()
        for name in names.FUNCTIONS
        if body["Properties"].get("Description", "").startswith(f"sluiceway {name} ")
    }


def _migrations(synthesized: Synthesized) -> tuple[str, dict[str, Any]]:
    return synthesized.only("Custom::Migrations")


def _depends_on(body: dict[str, Any]) -> set[str]:
    return set(body.get("DependsOn", []))


def test_the_resource_changes_with_the_migration_files(synthesized: Synthesized) -> None:
    from sluiceway_infra.migrations import migrations_hash

    _, resource = _migrations(synthesized)

    assert resource["Properties"]["MigrationsHash"] == migrations_hash()


def test_migrations_hash_follows_names_and_contents(tmp_path: Path) -> None:
    from sluiceway_infra.migrations import migrations_hash

    (tmp_path / "0001_a.sql").write_text("CREATE TABLE a (x int);\n")
    first = migrations_hash(tmp_path)
    assert migrations_hash(tmp_path) == first

    (tmp_path / "0002_b.sql").write_text("-- depends: 0001_a\n")
    second = migrations_hash(tmp_path)
    (tmp_path / "0002_b.sql").write_text("-- depends: 0001_a\nSELECT 1;\n")

    assert len({first, second, migrations_hash(tmp_path)}) == 3


def test_the_provider_calls_the_migrate_function(synthesized: Synthesized) -> None:
    ids = _function_ids(synthesized)
    _, resource = _migrations(synthesized)
    functions = synthesized.resources("AWS::Lambda::Function")

    framework_id = resource["Properties"]["ServiceToken"]["Fn::GetAtt"][0]
    framework = functions[framework_id]["Properties"]
    assert framework["Environment"]["Variables"]["USER_ON_EVENT_FUNCTION_ARN"] == {
        "Fn::GetAtt": [ids["migrate"], "Arn"]
    }


def test_it_runs_after_the_database_and_before_the_other_functions(
    synthesized: Synthesized,
) -> None:
    migrations_id, resource = _migrations(synthesized)
    functions = synthesized.resources("AWS::Lambda::Function")
    ids = _function_ids(synthesized)

    after = _depends_on(resource)
    for resource_type in ("AWS::RDS::DBCluster", "AWS::RDS::DBInstance", "AWS::RDS::DBProxy"):
        assert synthesized.only(resource_type)[0] in after, resource_type
    assert synthesized.only("AWS::RDS::DBProxyTargetGroup")[0] in after
    for name, lid in ids.items():
        if name != "migrate":
            assert migrations_id in _depends_on(functions[lid]), name


def test_the_migrate_function_reaches_the_database_but_not_the_bucket(
    synthesized: Synthesized,
) -> None:
    ids = _function_ids(synthesized)
    migrate = synthesized.resources("AWS::Lambda::Function")[ids["migrate"]]["Properties"]
    role = migrate["Role"]["Fn::GetAtt"][0]

    actions = {
        action
        for policy in synthesized.resources("AWS::IAM::Policy").values()
        if {"Ref": role} in policy["Properties"]["Roles"]
        for statement in policy["Properties"]["PolicyDocument"]["Statement"]
        for action in (
            [statement["Action"]] if isinstance(statement["Action"], str) else statement["Action"]
        )
    }
    assert "secretsmanager:GetSecretValue" in actions
    assert not any(a.startswith("s3:") for a in actions)
    assert migrate["VpcConfig"]["SubnetIds"]
