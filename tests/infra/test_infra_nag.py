"""cdk-nag's AwsSolutions pack: every finding fixed or acknowledged with a reason."""

from __future__ import annotations

import pytest

from infra_support import Synthesized

pytestmark = pytest.mark.infra


def test_no_unacknowledged_findings(synthesized: Synthesized) -> None:
    from sluiceway_infra.checks import nag_packs

    for pack in nag_packs(synthesized.app):
        report = pack.validate_scope(synthesized.app)
        findings = [
            f"{violation.rule_name} at {resource.construct_path}: {violation.description}"
            for violation in report.violations
            for resource in violation.violating_resources
        ]
        assert report.success, "\n".join(findings)


@pytest.mark.usefixtures("node")
def test_checks_fail_synthesis_on_a_finding() -> None:
    # Given the wiring app.py uses, and a bucket that breaks AwsSolutions-S1 and -S10.
    from aws_cdk import App, Stack
    from aws_cdk import aws_s3 as s3

    from sluiceway_infra.checks import add_checks

    app = App()
    s3.Bucket(Stack(app, "Careless"), "Bucket")
    add_checks(app)

    # When it synthesizes, then the finding stops it.
    with pytest.raises(RuntimeError, match=r"AwsSolutions-S10"):
        app.synth()
