"""Ids, names and context keys of the CDK app, in one place so a rename is one edit."""

from __future__ import annotations

from pathlib import Path
from typing import Final

from sluiceway.settings import StorageSettings

# The CDK app always runs from a checkout, so paths are relative to it (not to where the
# sluiceway package happens to be installed).
REPO_ROOT: Final = Path(__file__).resolve().parents[2]
STATEMACHINES_DIR: Final = REPO_ROOT / "statemachines"
FUNCTIONS_DIR: Final = REPO_ROOT / "functions"
LAYER_BUILD_DIR: Final = REPO_ROOT / "layers" / "build"
MIGRATIONS_DIR: Final = REPO_ROOT / "src" / "sluiceway" / "migrations"

STACK_ID: Final = "Sluiceway"
SERVICE_NAME: Final = "sluiceway"

# Object prefixes: the same defaults the Lambdas and the local runtime read from settings.
UPLOADS_PREFIX: Final = StorageSettings().uploads_prefix
WORK_PREFIX: Final = StorageSettings().work_prefix
SESSIONS_PREFIX: Final = StorageSettings().sessions_prefix

# Context keys (`cdk synth -c key=value` or cdk.json).
CONTEXT_FUNCTIONS_DIR: Final = "functionsDir"
CONTEXT_LAYER_DIR: Final = "layerDir"
CONTEXT_EXISTING_DATABASE_SECRET_ARN: Final = "existingDatabaseSecretArn"  # noqa: S105 - a key
CONTEXT_CORS_ALLOWED_ORIGINS: Final = "corsAllowedOrigins"
CONTEXT_ALARM_EMAIL: Final = "alarmEmail"
CONTEXT_DATA_KMS_KEY_ARN: Final = "dataKmsKeyArn"
CONTEXT_MAP_CONCURRENCY: Final = "mapConcurrency"
CONTEXT_DATABASE_FUNCTION_CONCURRENCY: Final = "databaseFunctionConcurrency"
CONTEXT_REUSE_BLOCKS: Final = "reuseBlocks"
