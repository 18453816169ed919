"""plan._check_size: the object's real size against the limits and the declared size."""

from __future__ import annotations

from typing import Any

import pytest

from sluiceway import plan
from sluiceway.errors import PayloadTooLarge, SizeMismatch
from sluiceway.rules import Rules
from sluiceway.settings import Settings


def _settings(max_object_bytes: int) -> Settings:
    s = Settings()
    return s.model_copy(
        update={"storage": s.storage.model_copy(update={"max_object_bytes": max_object_bytes})}
    )


def _upload(declared: int | None) -> dict[str, Any]:
    return {"filename": "a.csv", "size_bytes": declared}


def test_an_object_of_unknown_declared_size_over_the_store_limit_is_too_large() -> None:
    with pytest.raises(PayloadTooLarge, match=r"a\.csv is 101 bytes; the limit is 100"):
        plan._check_size(_upload(None), 101, Rules(), _settings(100))


def test_max_file_bytes_applies_to_the_real_size_before_the_declared_one_is_compared() -> None:
    with pytest.raises(PayloadTooLarge, match="max_file_bytes"):
        plan._check_size(_upload(5), 50, Rules(max_file_bytes=10), _settings(100))


@pytest.mark.parametrize("declared", [None, 50])
def test_an_object_within_the_limits_and_of_its_declared_size_passes(declared: int | None) -> None:
    plan._check_size(_upload(declared), 50, Rules(max_file_bytes=50), _settings(50))


def test_an_object_of_another_size_than_declared_is_a_size_mismatch() -> None:
    with pytest.raises(SizeMismatch, match="opened as 49 bytes") as failed:
        plan._check_size(_upload(49), 50, Rules(), _settings(100))
    assert failed.value.code == "size_mismatch"
