"""The pure parts of schemas and rules: type folding, differences, evolution, tolerances,
the sample's records."""

from __future__ import annotations

import pytest

from sluiceway import rules, schema
from sluiceway.errors import SchemaMismatch
from sluiceway.schema import Column


def _profile(**columns: tuple[int, int | None]) -> dict[str, object]:
    return {
        "rows": 10,
        "columns": {
            n: {"nullable": bool(nulls), "mask": mask} for n, (nulls, mask) in columns.items()
        },
    }


def test_infer_ands_the_masks_of_every_range() -> None:
    profiles = [
        _profile(a=(0, 7), b=(0, 3), c=(1, 24), d=(0, None)),
        _profile(a=(0, 4), b=(0, 2), c=(0, 16), d=(2, None)),
    ]
    found = schema.infer(["a", "b", "c", "d"], profiles)
    assert found == [
        Column("a", "boolean", False),  # 0/1 in one range, true/false in the other
        Column("b", "number", False),
        Column("c", "timestamp", True),
        Column("d", None, True),  # no value anywhere
    ]
    assert [c.stored()["type"] for c in found] == ["boolean", "number", "timestamp", "text"]


@pytest.mark.parametrize(
    ("a", "b", "common"),
    [
        ("integer", "number", "number"),
        ("date", "timestamp", "timestamp"),
        ("integer", "boolean", "text"),
        ("date", "integer", "text"),
        (None, "date", "date"),
        ("text", "integer", "text"),
    ],
)
def test_lub(a: str | None, b: str, common: str) -> None:
    assert schema.lub(a, b) == common
    assert schema.lub(b, a) == common


def test_differences_and_what_each_policy_refuses() -> None:
    dataset = [
        Column("id", "integer", False),
        Column("v", "number", False),
        Column("x", "text", False),
    ]
    file = [Column("id", "integer", False), Column("v", "text", True), Column("w", "date", True)]
    diff = schema.differences(dataset, file)
    assert diff == {
        "added": ["'w' (date)"],
        "removed": ["'x'"],
        "type_changes": ["'v' is text in the file, number in the dataset"],
        "new_nulls": ["'v'"],
    }
    assert not any(schema.refused(diff, "allow").values())
    assert schema.refused(diff, "add_columns")["added"] == []
    assert schema.refused(diff, "reject") == diff


def test_commit_schema_by_mode_and_policy() -> None:
    parent = [Column("id", "number", False)]
    file = [Column("id", "integer", False), Column("e", "text", False)]
    args = {"order": ["id", "e"], "parent": parent, "has_parent": True, "file": file}
    evolved = schema.commit_schema(
        mode="replace",
        policy="add_columns",
        filename="f",
        dataset="d",
        **args,  # type: ignore[arg-type]
    )
    assert evolved == [Column("id", "number", False), Column("e", "text", True)]
    appended = schema.commit_schema(
        mode="append", policy="allow", filename="f", dataset="d", **args
    )  # type: ignore[arg-type]
    assert appended == [Column("id", "number", False), Column("e", "text", True)]
    with pytest.raises(SchemaMismatch, match=r"added column\(s\) 'e' \(text\)"):
        schema.commit_schema(mode="append", policy="reject", filename="f", dataset="d", **args)  # type: ignore[arg-type]
    unknown = schema.commit_schema(
        mode="append", policy="allow", filename="f", dataset="d",
        order=["id"], parent=None, has_parent=True, file=file[:1],
    )  # fmt: skip
    assert unknown is None  # the parent's types were never recorded


def test_tolerance_by_count_and_percent() -> None:
    assert rules.Rules().tolerance(1000) == 0
    assert not rules.Rules().tolerant()
    assert rules.Rules(max_errors=3).tolerance(1000) == 3
    assert rules.Rules(max_error_percent=1.5).tolerance(1000) == 15
    assert rules.Rules(max_errors=20, max_error_percent=1).tolerance(1000) == 20
    merged = rules.Rules(max_errors=1).over(rules.Rules(max_errors=5, min_records=2))
    assert (merged.max_errors, merged.min_records) == (1, 2)


def test_sample_records_of_a_csv_say_where_each_is() -> None:
    buf = b'1,a\n2,"b\nc"\n3\n4,d\n5,e'  # the last record is cut by the sample
    good, broken = rules.sample_records(
        "csv", buf, columns=["id", "name"], start=8, first_line=2, complete=False, limit=10
    )
    assert good == [
        (0, "line 2 (byte 8)", ["1", "a"]),
        (1, "line 3 (byte 12)", ["2", "b\nc"]),
        (3, "line 6 (byte 22)", ["4", "d"]),
    ]
    assert broken == [(2, "line 5 (byte 20)", "has 1 field(s); the header has 2.")]


def test_infer_reads_the_empty_counts_of_profiles_stored_before_the_packed_codes() -> None:
    """A range loaded before an upgrade kept ``nulls``, a count; the commit after it reads it."""
    old = {"rows": 3, "columns": {"a": {"nulls": 2, "mask": 3}, "b": {"nulls": 0, "mask": 2}}}
    found = schema.infer(["a", "b"], [old, _profile(a=(0, 2), b=(0, 3))])
    assert found == [Column("a", "number", True), Column("b", "number", False)]
