"""export_plan.part_ranges: parts that cover the commit's rows once, in rounds that fill the workers."""

from __future__ import annotations

import itertools

import pytest

from sluiceway.export_plan import part_ranges
from sluiceway.settings import Settings


def _settings(workers: int, **exports: int) -> Settings:
    s = Settings()
    return s.model_copy(
        update={
            "imports": s.imports.model_copy(update={"map_concurrency": workers}),
            "exports": s.exports.model_copy(update=exports),
        }
    )


def _check_cover(ranges: list[tuple[int, int]], rows: int) -> None:
    assert ranges[0][0] == 1
    assert ranges[-1][1] == rows + 1
    assert all(a[1] == b[0] for a, b in itertools.pairwise(ranges))


@pytest.mark.parametrize(
    ("workers", "rows", "parts"),
    [
        (2, 5_000_000, 6),  # 5 parts of 1M would leave a worker idle in the third round
        (8, 9_000_000, 16),  # 9 parts: the second round one part alone
        (8, 20_000_000, 24),
        (2, 1_000_000, 2),  # one part per worker, as before
        (8, 1_000_000, 4),  # parts no smaller than min_auto_part_rows
    ],
)
def test_an_automatic_cut_fills_every_round_of_the_workers(
    workers: int, rows: int, parts: int
) -> None:
    settings = _settings(workers)
    ranges = part_ranges(rows, None, settings)
    _check_cover(ranges, rows)
    assert len(ranges) == parts
    sizes = [b - a for a, b in ranges]
    assert max(sizes) <= settings.exports.default_part_rows
    assert max(sizes) - min(sizes) <= len(ranges)  # equal parts, but for the last one's remainder


def test_a_requested_part_size_is_kept() -> None:
    ranges = part_ranges(53, 10, _settings(8))
    _check_cover(ranges, 53)
    assert [b - a for a, b in ranges] == [10, 10, 10, 10, 10, 3]


def test_rounding_up_never_passes_the_part_limit() -> None:
    settings = _settings(8, default_part_rows=100, min_auto_part_rows=1, max_parts=1_001)
    ranges = part_ranges(100_000, None, settings)  # 1,000 parts; 1,000 is a multiple of 8
    assert len(ranges) == 1_000
    ranges = part_ranges(100_050, None, settings)  # 1,001 parts: 1,008 would pass the limit
    _check_cover(ranges, 100_050)
    assert len(ranges) == 1_001
