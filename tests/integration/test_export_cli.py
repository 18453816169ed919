"""`sluiceway export` joins an export's parts into one file, in every format."""

from __future__ import annotations

import csv
import gzip
import io
import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from sluiceway.cli import cli

ROWS = [["id", "category", "note"]] + [
    [str(i), ["test", "prod", "dev"][i % 3], ["a, b", 'q"uote', "two\nlines", "ü"][i % 4]]
    for i in range(1, 23)
]


def _run(stack: Any, *args: str) -> Any:
    return CliRunner().invoke(
        cli, ["--api", stack.api_url, "--token", stack.local_token, *args], catch_exceptions=False
    )


@pytest.fixture(scope="module")
def dataset(stack: Any, tmp_path_factory: pytest.TempPathFactory) -> str:
    src = tmp_path_factory.mktemp("cli-export") / "src.csv"
    with src.open("w", newline="") as f:
        csv.writer(f).writerows(ROWS)
    name = "cli-export"
    assert _run(stack, "import", str(src), "-d", name).exit_code == 0
    return name


def _records() -> list[dict[str, str]]:
    return [dict(zip(ROWS[0], r, strict=True)) for r in ROWS[1:]]


def test_csv_parts_are_joined_under_one_header(stack: Any, dataset: str, tmp_path: Path) -> None:
    out = tmp_path / "out.csv"
    done = _run(stack, "export", dataset, "--part-rows", "5", "--out", str(out), "--json")

    assert done.exit_code == 0, done.output
    assert json.loads(done.stdout)["parts"] == 5
    with out.open(newline="") as f:
        assert list(csv.reader(f)) == ROWS


def test_json_parts_become_one_array_even_with_empty_parts(
    stack: Any, dataset: str, tmp_path: Path
) -> None:
    out = tmp_path / "out.json"
    # parts of 2 scanned rows: where category=test holds every third row, some parts are empty
    done = _run(
        stack, "export", dataset, "--format", "json", "--part-rows", "2",
        "--where", "category=test", "--out", str(out),
    )  # fmt: skip

    assert done.exit_code == 0, done.output
    assert json.loads(out.read_text()) == [r for r in _records() if r["category"] == "test"]


def test_jsonl_gzip_parts_are_one_compressed_file(stack: Any, dataset: str, tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl.gz"
    done = _run(
        stack, "export", dataset, "--format", "jsonl", "--compression", "gzip",
        "--part-rows", "4", "--columns", "note,id", "--out", str(out),
    )  # fmt: skip

    assert done.exit_code == 0, done.output
    lines = gzip.decompress(out.read_bytes()).decode().splitlines()
    assert [json.loads(line) for line in lines] == [
        {"note": r["note"], "id": r["id"]} for r in _records()
    ]


def test_csv_gzip_parts_are_one_compressed_file(stack: Any, dataset: str, tmp_path: Path) -> None:
    out = tmp_path / "out.csv.gz"
    done = _run(
        stack, "export", dataset, "--compression", "gzip", "--part-rows", "3", "--out", str(out)
    )

    assert done.exit_code == 0, done.output
    text = gzip.decompress(out.read_bytes()).decode()
    assert list(csv.reader(io.StringIO(text, newline=""))) == ROWS


def test_parquet_parts_become_one_file(stack: Any, dataset: str, tmp_path: Path) -> None:
    import pyarrow.parquet as pq

    out = tmp_path / "out.parquet"
    done = _run(
        stack, "export", dataset, "--format", "parquet", "--part-rows", "6", "--out", str(out)
    )

    assert done.exit_code == 0, done.output
    # typed from the dataset's schema: the ids are integers
    expected = [{**r, "id": int(r["id"])} for r in _records()]
    assert pq.read_table(out).to_pylist() == expected


def test_a_numeric_range_from_the_command_line(stack: Any, dataset: str, tmp_path: Path) -> None:
    out = tmp_path / "range.jsonl"
    done = _run(
        stack, "export", dataset, "--format", "jsonl", "--where", "id>=5", "--where", "id<9",
        "--out", str(out),
    )  # fmt: skip

    assert done.exit_code == 0, done.output
    assert [json.loads(line)["id"] for line in out.read_text().splitlines()] == ["5", "6", "7", "8"]


def test_an_unknown_column_is_a_clear_error(stack: Any, dataset: str, tmp_path: Path) -> None:
    result = CliRunner().invoke(
        cli,
        [
            *("--api", stack.api_url, "--token", stack.local_token),
            *("export", dataset, "--columns", "id,nope", "--out", str(tmp_path / "x")),
        ],
    )

    assert result.exit_code != 0
    assert "Unknown column(s) 'nope'" in str(result.exception or result.output)
    assert not (tmp_path / "x").exists()
