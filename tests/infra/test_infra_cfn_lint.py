"""cfn-lint on the synthesized template: no errors, and only warnings we have a reason for."""

from __future__ import annotations

import pytest

from infra_support import Synthesized

pytestmark = pytest.mark.infra

ALLOWED_WARNINGS = {
    # CDK adds explicit DependsOn next to Ref/GetAtt on purpose (ordering of role policies
    # before the resources that use them); the duplication is harmless.
    "W3005": "redundant DependsOn",
}


def test_template_passes_cfn_lint(synthesized: Synthesized) -> None:
    from cfnlint.api import lint_file

    matches = lint_file(synthesized.template_path)

    unexpected = [
        f"{m.rule.id} {m.message} (line {m.linenumber})"
        for m in matches
        if not (m.rule.id.startswith("W") and m.rule.id in ALLOWED_WARNINGS)
    ]
    assert not unexpected, "\n".join(unexpected)
