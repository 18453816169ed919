"""A failed job's code comes from the error that ended it, by the name Step Functions gives it."""

from __future__ import annotations

import pytest

from sluiceway.errors import (
    DatabaseUnavailable,
    MalformedFile,
    MergeConflict,
    RangeFailed,
    code_of,
    code_of_name,
)
from sluiceway.export_finish import ExportIncomplete


@pytest.mark.parametrize(
    ("name", "code"),
    [
        ("MalformedFile", "malformed_file"),
        ("DatabaseUnavailable", "database_unavailable"),
        ("MergeConflict", "merge_conflict"),  # a subclass of a subclass
        ("RangeFailed", "range_failed"),
        ("SizeMismatch", "size_mismatch"),
        ("ExportIncomplete", ExportIncomplete.code),  # a class defined outside errors.py
        ("States.Timeout", "timeout"),
        ("Sandbox.Timedout", "timeout"),
        ("Runtime.ExitError", "internal_error"),  # a Lambda that crashed
        ("ValueError", "internal_error"),  # a bug: not a class of the hierarchy
        (None, "internal_error"),
    ],
)
def test_a_step_functions_error_name_maps_to_its_class_code(name: str | None, code: str) -> None:
    assert code_of_name(name) == code


def test_an_exception_outside_the_hierarchy_is_an_internal_error() -> None:
    assert code_of(MalformedFile("x")) == "malformed_file"
    assert code_of(MergeConflict("x")) == "merge_conflict"
    assert code_of(KeyError("x")) == "internal_error"


def test_a_range_failure_keeps_the_ranges_own_code_apart_from_its_class() -> None:
    # not DatabaseUnavailable itself: the state machine would retry a step that can only
    # find the same recorded failure again
    failed = RangeFailed("Injected fault", range_code=DatabaseUnavailable.code)
    assert not isinstance(failed, DatabaseUnavailable)
    assert failed.details == {"range_code": "database_unavailable"}
