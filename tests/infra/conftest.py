"""Synthesize the CDK app once per test session (5-10 s) and share the result.

The app runs as `cdk synth` would run it, with cdk.json's context, except that the Lambda layers
are empty placeholders (so `layers/build.py` need not have run) and, while functions/ is still
incomplete, the handlers are throwaway stubs in a temporary directory.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest

from infra_support import REPO_ROOT, Synthesized
from sluiceway import names

# sluiceway_infra sits beside infra/app.py, which is how `cdk synth` imports it too.
sys.path.insert(0, str(REPO_ROOT / "infra"))


def _functions_dir(tmp: Path) -> Path:
    """functions/ once every function has its handler.py; throwaway stubs until then."""
    real = REPO_ROOT / "functions"
    if all((real / name / "handler.py").is_file() for name in names.FUNCTIONS):
        return real
    for name in names.FUNCTIONS:
        (tmp / name).mkdir(parents=True)
        (tmp / name / "handler.py").write_text("def handler(event, context):\n    return event\n")
    return tmp


@pytest.fixture(scope="session")
def node() -> str:
    """Skip, saying why, where Node.js is missing: the AWS CDK's Python API runs on it."""
    path = shutil.which("node")
    if path is None:
        pytest.skip("node is not on PATH: the AWS CDK runs on Node.js (install Node 20 or later)")
    return path


def synthesize(tmp: Path, extra_context: dict[str, str] | None = None) -> Synthesized:
    """The app as `cdk synth` builds it with cdk.json's context (and ``extra_context``)."""
    # Imported here, not at the top: importing aws_cdk starts node.
    from aws_cdk import App
    from aws_cdk.assertions import Template

    from sluiceway_infra.constants import CONTEXT_FUNCTIONS_DIR, CONTEXT_LAYER_DIR, STACK_ID
    from sluiceway_infra.stack import SluicewayStack

    layers = tmp / "layers"
    (layers / "deps" / "python").mkdir(parents=True)
    (layers / "app" / "python" / "sluiceway").mkdir(parents=True)
    context = json.loads((REPO_ROOT / "cdk.json").read_text())["context"] | {
        CONTEXT_LAYER_DIR: str(layers),
        CONTEXT_FUNCTIONS_DIR: str(_functions_dir(tmp / "functions")),
    }
    app = App(outdir=str(tmp / "cdk.out"), context=context | (extra_context or {}))
    stack = SluicewayStack(app, STACK_ID)
    assembly = app.synth()
    return Synthesized(
        app=app,
        stack=stack,
        template=Template.from_stack(stack),
        template_path=Path(assembly.get_stack_by_name(stack.stack_name).template_full_path),
        assembly_dir=Path(assembly.directory),
    )


@pytest.fixture(scope="session")
def synthesized(node: str, tmp_path_factory: pytest.TempPathFactory) -> Synthesized:
    return synthesize(tmp_path_factory.mktemp("cdk"))


KEY_ARN = "arn:aws:kms:us-east-1:123456789012:key/11111111-2222-3333-4444-555555555555"
OPTIONS = {
    "dataKmsKeyArn": KEY_ARN,
    "mapConcurrency": "24",
    "databaseFunctionConcurrency": "40",
    "reuseBlocks": "true",
}


@pytest.fixture(scope="session")
def synthesized_with_options(node: str, tmp_path_factory: pytest.TempPathFactory) -> Synthesized:
    """The app with every optional context a deployer may give (one more synthesis)."""
    return synthesize(tmp_path_factory.mktemp("cdk-options"), OPTIONS)
