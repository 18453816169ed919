"""Deployment steps that run on AWS as CloudFormation custom resources.

``cdk deploy`` creates or updates a ``Custom::Migrations`` resource whenever the migration files
change; CDK's provider framework calls :func:`apply_migrations` with the CloudFormation event
and reports its result back to CloudFormation. The same :func:`sluiceway.db.migrate` runs
locally (``sluiceway migrate``, the embedded stack), so the schema is made one way everywhere.
"""

from __future__ import annotations

from typing import Any

from . import db
from .errors import InvalidRequest
from .handlers import logger
from .settings import Settings

# One database, one schema history: the resource's identity never changes, so an update never
# makes CloudFormation "replace" it (which would send a Delete for the old one).
PHYSICAL_RESOURCE_ID = "sluiceway-migrations"


def apply_migrations(event: dict[str, Any], settings: Settings | None = None) -> dict[str, Any]:
    """Handle a CloudFormation custom-resource event for the database schema.

    Create and Update apply every pending yoyo migration (a no-op when there is none); Delete
    does nothing, because removing the stack must never drop data. The answer is what CDK's
    provider framework expects: ``PhysicalResourceId`` and ``Data``.
    """
    request_type = event.get("RequestType")
    if request_type not in ("Create", "Update", "Delete"):
        raise InvalidRequest(
            f"Not a CloudFormation custom-resource event: RequestType is {request_type!r}, "
            "expected Create, Update or Delete."
        )
    applied: list[str] = []
    if request_type != "Delete":
        applied = db.migrate(settings)
        logger.info("migrations applied", extra={"applied": applied})
    return {
        "PhysicalResourceId": event.get("PhysicalResourceId") or PHYSICAL_RESOURCE_ID,
        # Data values must be strings, and the whole response stays under CloudFormation's 4 KB.
        "Data": {"AppliedCount": str(len(applied))},
    }
