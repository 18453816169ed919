"""Names shared by the local runtime, the Lambda handlers and the CDK app."""

from __future__ import annotations

from pathlib import Path
from typing import Final

REPO_ROOT: Final = Path(__file__).resolve().parents[2]
STATEMACHINES_DIR: Final = REPO_ROOT / "statemachines"
FUNCTIONS_DIR: Final = REPO_ROOT / "functions"

IMPORT_STATE_MACHINE: Final = "import"
EXPORT_STATE_MACHINE: Final = "export"

# Lambda functions: directory under functions/ -> the ASL substitution that carries its ARN.
FUNCTIONS: Final[dict[str, str]] = {
    "plan_import": "PlanImportFunctionArn",
    "scan_chunk": "ScanChunkFunctionArn",
    "resolve_chunks": "ResolveChunksFunctionArn",
    "load_chunk": "LoadChunkFunctionArn",
    "commit_import": "CommitImportFunctionArn",
    "refresh_search": "RefreshSearchFunctionArn",
    "fail_import": "FailImportFunctionArn",
    "plan_export": "PlanExportFunctionArn",
    "write_export_part": "WriteExportPartFunctionArn",
    "finish_export": "FinishExportFunctionArn",
    "fail_export": "FailExportFunctionArn",
    "api": "ApiFunctionArn",
    # Runs on deploy (a CloudFormation custom resource), never from a state machine; the local
    # stack registers it like the others and never calls it (it migrates at start instead).
    "migrate": "MigrateFunctionArn",
}

# Functions whose work is CPU-heavy: locally they run in worker processes.
WORKER_FUNCTIONS: Final = frozenset({"scan_chunk", "load_chunk", "write_export_part"})

MAIN_REF: Final = "main"
LOCAL_OWNER: Final = "local"


# The EventBridge pattern that starts an import: objects created under the uploads prefix.
def object_created_pattern(bucket: str, uploads_prefix: str) -> dict[str, object]:
    """The EventBridge event pattern for "an upload finished", used on AWS and locally."""
    return {
        "source": ["aws.s3"],
        "detail-type": ["Object Created"],
        "detail": {"bucket": {"name": [bucket]}, "object": {"key": [{"prefix": uploads_prefix}]}},
    }
