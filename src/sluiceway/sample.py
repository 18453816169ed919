"""Generated datasets for the demo, the benchmarks and the tests."""

from __future__ import annotations

import csv
import random
from pathlib import Path

COLUMNS = ["id", "name", "category", "amount", "quantity", "active", "created_at", "note"]
_NOTES = [
    "plain",
    "comma, inside",
    'a "quoted" word',
    "two\nlines",
    "crlf\r\ninside",
    "",
    "ünïcödé ✓",
    "trailing space ",
]


def write_csv(
    path: Path,
    rows: int,
    *,
    seed: int = 7,
    changed_every: int = 0,
    changed_rows: range = range(0),
    dropped_rows: range = range(0),
) -> Path:
    """A CSV of ``rows`` rows x 8 mixed columns, quoted text with commas, quotes and newlines.

    For re-import benchmarks: ``changed_every`` changes the amount of every n-th row,
    ``changed_rows`` that of the rows numbered in it, and ``dropped_rows`` leaves those rows
    out. Row i has the same values in every file made with the same seed (a file with more
    rows is the smaller one with rows appended).
    """
    rng = random.Random(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(COLUMNS)
        for i in range(1, rows + 1):
            amount = rng.randint(0, 10_000_000) / 100
            if (changed_every and i % changed_every == 0) or i in changed_rows:
                amount += 1
            row = [
                i,
                f"customer {i:08d}",
                rng.choice(("test", "prod", "dev", "staging")),
                f"{amount:.2f}",
                rng.randint(0, 500),
                rng.choice(("true", "false")),
                f"2024-{1 + i % 12:02d}-{1 + i % 28:02d}T{i % 24:02d}:00:00Z",
                rng.choice(_NOTES),
            ]
            if i not in dropped_rows:  # its random draws are taken all the same
                w.writerow(row)
    return path
