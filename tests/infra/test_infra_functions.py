"""The Lambda functions: one per functions/<name>, built for the runtime the layer targets."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from infra_support import Synthesized
from sluiceway import names

pytestmark = pytest.mark.infra


def _functions(synthesized: Synthesized) -> dict[str, dict[str, Any]]:
    """Function name (the directory under functions/) -> its properties."""
    found = {}
    for body in synthesized.resources("AWS::Lambda::Function").values():
        properties = body["Properties"]
        for name in names.FUNCTIONS:
            if properties.get("Description", "").startswith(f"sluiceway {name} "):
                found[name] = properties
    return found


def test_every_function_directory_is_deployed(synthesized: Synthesized) -> None:
    assert sorted(_functions(synthesized)) == sorted(names.FUNCTIONS)


def test_functions_run_python_312_on_arm64_with_tracing(synthesized: Synthesized) -> None:
    for name, function in _functions(synthesized).items():
        assert function["Runtime"] == "python3.12", name
        assert function["Architectures"] == ["arm64"], name
        assert function["Handler"] == "handler.handler", name
        assert function["TracingConfig"] == {"Mode": "Active"}, name
        assert len(function["Layers"]) == 2, name


def test_functions_know_their_bucket_and_database(synthesized: Synthesized) -> None:
    for name, function in _functions(synthesized).items():
        variables = function["Environment"]["Variables"]
        assert variables["SLUICEWAY_STORAGE__BUCKET"]["Ref"].startswith("StorageDataBucket"), name
        assert variables["POWERTOOLS_SERVICE_NAME"] == "sluiceway", name
        assert "SLUICEWAY_DATABASE_SECRET_ARN" in variables, name
        # Through RDS Proxy, not straight to the cluster.
        assert variables["SLUICEWAY_DATABASE_HOST"]["Fn::GetAtt"][1] == "Endpoint", name


def test_functions_run_in_private_subnets(synthesized: Synthesized) -> None:
    for name, function in _functions(synthesized).items():
        subnets = function["VpcConfig"]["SubnetIds"]
        assert subnets, name
        assert all(s["Ref"].startswith("NetworkVpcapp") for s in subnets), name


def test_timeouts_fit_their_callers(synthesized: Synthesized) -> None:
    functions = _functions(synthesized)

    # API Gateway gives up after 29 s; a longer function would work on after the 504.
    assert functions["api"]["Timeout"] <= 29
    assert all(f["Timeout"] <= 900 for f in functions.values())


@pytest.mark.usefixtures("node")
def test_missing_layers_fall_back_to_placeholders_with_a_warning(tmp_path: Path) -> None:
    from aws_cdk import App, Stack
    from aws_cdk.assertions import Annotations, Match

    from sluiceway_infra.functions import layer_dirs

    stack = Stack(App(), "Layers")
    deps, app = layer_dirs(stack, tmp_path / "never-built")

    assert list(deps.iterdir()) == [deps / "python"]
    assert list(app.iterdir()) == [app / "python"]
    Annotations.from_stack(stack).has_warning("*", Match.string_like_regexp("layers/build.py"))


def test_database_concurrency_is_the_maps_by_default_and_capped_when_asked(
    synthesized: Synthesized, synthesized_with_options: Synthesized
) -> None:
    # By default: one import loads 8 ranges at once, and nothing is reserved
    for name, function in _functions(synthesized).items():
        assert function["Environment"]["Variables"]["SLUICEWAY_IMPORTS__MAP_CONCURRENCY"] == "8"
        assert "ReservedConcurrentExecutions" not in function, name
    # With mapConcurrency=24 and databaseFunctionConcurrency=40 (tests/infra/conftest.py)
    given = _functions(synthesized_with_options)
    assert given["plan_import"]["Environment"]["Variables"][
        "SLUICEWAY_IMPORTS__MAP_CONCURRENCY"
    ] == ("24")
    capped = {n for n, f in given.items() if f.get("ReservedConcurrentExecutions") == 40}
    assert capped == {"load_chunk", "write_export_part", "commit_import"}


def test_reusing_blocks_is_off_by_default_and_on_when_asked(
    synthesized: Synthesized, synthesized_with_options: Synthesized
) -> None:
    # By default every function reads the local default (off); reuseBlocks=true turns it on
    for function in _functions(synthesized).values():
        assert function["Environment"]["Variables"]["SLUICEWAY_IMPORTS__REUSE_BLOCKS"] == "false"
    for name, function in _functions(synthesized_with_options).items():
        variables = function["Environment"]["Variables"]
        assert variables["SLUICEWAY_IMPORTS__REUSE_BLOCKS"] == "true", name


@pytest.mark.parametrize(
    ("given", "read"),
    [(None, False), (True, True), (False, False), ("true", True), ("False", False), ("0", False)],
)
def test_a_yes_no_context_reads_booleans_and_their_words(given: object, read: bool) -> None:
    from sluiceway_infra.stack import context_flag

    assert context_flag("reuseBlocks", given) is read


def test_a_yes_no_context_refuses_anything_else() -> None:
    from sluiceway_infra.stack import context_flag

    with pytest.raises(ValueError, match="reuseBlocks"):
        context_flag("reuseBlocks", "ture")
