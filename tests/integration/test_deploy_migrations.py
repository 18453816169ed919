"""Migrations on deploy: the custom-resource step against a real, empty PostgreSQL database."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from importlib import resources
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import psycopg
import pytest
from psycopg import sql

from sluiceway import db as sluiceway_db
from sluiceway.deploy import PHYSICAL_RESOURCE_ID, apply_migrations
from sluiceway.errors import InvalidRequest
from sluiceway.settings import Settings

MIGRATION_IDS = sorted(
    p.name.removesuffix(".sql")
    for p in resources.files("sluiceway").joinpath("migrations").iterdir()
    if p.name.endswith(".sql")
)


def _event(request_type: str, physical_id: str | None = None) -> dict[str, Any]:
    """What CDK's provider framework passes on: the CloudFormation request, minus its URLs."""
    event: dict[str, Any] = {
        "RequestType": request_type,
        "StackId": "arn:aws:cloudformation:eu-west-1:123456789012:stack/Sluiceway/x",
        "RequestId": str(uuid.uuid4()),
        "LogicalResourceId": "MigrationsResource",
        "ResourceType": "Custom::Migrations",
        "ResourceProperties": {"ServiceToken": "arn:...", "MigrationsHash": "abc"},
    }
    if physical_id:
        event["PhysicalResourceId"] = physical_id
    return event


@pytest.fixture
def empty_database(stack: Any) -> Iterator[Settings]:
    """Settings for a new, empty database on the stack's server (dropped afterwards)."""
    name = f"deploy_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(stack.database_url, autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    parts = urlsplit(stack.database_url)
    url = urlunsplit(parts._replace(path=f"/{name}"))
    yield Settings(home=stack.settings.home, database_url=url)
    sluiceway_db.close_all()
    with psycopg.connect(stack.database_url, autocommit=True) as admin:
        admin.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(name)))


def _applied(url: str) -> list[str]:
    with psycopg.connect(url) as conn:
        rows = conn.execute("SELECT migration_id FROM _sluiceway_migrations ORDER BY 1").fetchall()
    return [r[0] for r in rows]


def _schemas(url: str) -> set[str]:
    with psycopg.connect(url) as conn:
        return {r[0] for r in conn.execute("SELECT nspname FROM pg_namespace").fetchall()}


def test_create_applies_every_migration_to_an_empty_database(empty_database: Settings) -> None:
    url = str(empty_database.database_url)

    answer = apply_migrations(_event("Create"), empty_database)

    assert answer["PhysicalResourceId"] == PHYSICAL_RESOURCE_ID
    assert answer["Data"] == {"AppliedCount": str(len(MIGRATION_IDS))}
    assert _applied(url) == MIGRATION_IDS
    assert {"dsa_core", "dsa_jobs"} <= _schemas(url)


def test_update_applies_only_what_is_pending_and_keeps_the_resource_id(
    empty_database: Settings,
) -> None:
    url = str(empty_database.database_url)
    apply_migrations(_event("Create"), empty_database)

    answer = apply_migrations(_event("Update", PHYSICAL_RESOURCE_ID), empty_database)

    # Same id: CloudFormation sees an update in place, never a replacement (which deletes).
    assert answer["PhysicalResourceId"] == PHYSICAL_RESOURCE_ID
    assert answer["Data"] == {"AppliedCount": "0"}
    assert _applied(url) == MIGRATION_IDS


def test_delete_leaves_the_schema_and_its_data(empty_database: Settings) -> None:
    url = str(empty_database.database_url)
    apply_migrations(_event("Create"), empty_database)
    with psycopg.connect(url) as conn:
        conn.execute(
            "INSERT INTO dsa_core.api_tokens (owner, name, token_hash) VALUES ('o', '', decode(repeat('ab', 32), 'hex'))"
        )

    answer = apply_migrations(_event("Delete", PHYSICAL_RESOURCE_ID), empty_database)

    assert answer["PhysicalResourceId"] == PHYSICAL_RESOURCE_ID
    assert _applied(url) == MIGRATION_IDS
    with psycopg.connect(url) as conn:
        assert conn.execute("SELECT count(*) FROM dsa_core.api_tokens").fetchone() == (1,)


def test_delete_of_a_resource_that_never_migrated_touches_nothing(
    empty_database: Settings,
) -> None:
    # A failed Create is followed by a Delete; the database may not even be reachable then.
    answer = apply_migrations(_event("Delete", PHYSICAL_RESOURCE_ID), empty_database)

    assert answer["PhysicalResourceId"] == PHYSICAL_RESOURCE_ID
    assert "dsa_core" not in _schemas(str(empty_database.database_url))


def test_an_event_that_is_not_from_cloudformation_is_refused(empty_database: Settings) -> None:
    with pytest.raises(InvalidRequest, match="RequestType is None"):
        apply_migrations({"job_id": "x"}, empty_database)
    assert "dsa_core" not in _schemas(str(empty_database.database_url))
