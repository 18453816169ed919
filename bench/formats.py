"""Import throughput per input format against CSV, measured in the same run on the same stack.

Usage: python bench/formats.py [--rows N] [--chunk-size 16MiB] [--xlsx-rows N] [--formats csv,json,...]

Writes N records of the same shape (sluiceway.sample's 8 mixed columns: quoted text with
commas, quotes and newlines; other values per format, so no import finds its rows already
stored) as CSV, TSV, JSON Lines, a JSON array, gzip'd CSV, zstd JSON Lines and an Excel
workbook (fewer rows: writing .xlsx is slow), starts one fresh embedded stack, and imports each
file end to end (upload, state machine, commit) into its own dataset. Each line gives seconds,
rows/s, input MB/s and the ratio of its rows/s to CSV's.
"""

from __future__ import annotations

import argparse
import csv
import gzip
import json
import tempfile
import time
from pathlib import Path

import openpyxl
import zstandard

from sluiceway.cli import parse_size, run_import
from sluiceway.client import Client
from sluiceway.local.stack import LocalStack
from sluiceway.sample import COLUMNS, write_csv
from sluiceway.settings import Settings


def _records(source: Path, limit: int | None = None) -> list[list[str]]:
    with source.open(newline="", encoding="utf-8") as f:
        rows = list(csv.reader(f))[1:]
    return rows[:limit] if limit else rows


def write_tsv(rows: list[list[str]], out: Path) -> None:
    with out.open("w", newline="", encoding="utf-8") as f:
        w = csv.writer(f, delimiter="\t", lineterminator="\n")
        w.writerow(COLUMNS)
        w.writerows(rows)


def write_jsonl(rows: list[list[str]], out: Path) -> None:
    with out.open("w", encoding="utf-8") as f:
        for r in rows:
            f.write(json.dumps(dict(zip(COLUMNS, r, strict=True)), ensure_ascii=False) + "\n")


def write_json(rows: list[list[str]], out: Path) -> None:
    with out.open("w", encoding="utf-8") as f:
        f.write("[\n")
        for i, r in enumerate(rows):
            f.write(("," if i else "") + json.dumps(dict(zip(COLUMNS, r, strict=True))) + "\n")
        f.write("]\n")


def write_xlsx(rows: list[list[str]], out: Path) -> None:
    book = openpyxl.Workbook(write_only=True)
    sheet = book.create_sheet("data")
    sheet.append(COLUMNS)
    for r in rows:
        sheet.append(r)
    book.save(out)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--xlsx-rows", type=int, default=50_000)
    parser.add_argument("--chunk-size", default="16MiB")
    parser.add_argument("--formats", default="csv,tsv,jsonl,json,csv.gz,jsonl.zst,xlsx")
    args = parser.parse_args()
    wanted = args.formats.split(",")

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        files: dict[str, tuple[Path, int]] = {}
        for seed, fmt in enumerate(wanted, 1):
            # Records of the same shape but other values for each format: identical rows would
            # be stored once, and every import after the first would skip inserting them.
            base = write_csv(work / f"{seed}.csv", args.rows, seed=seed)
            rows = _records(base)
            path = base if fmt == "csv" else work / f"data.{fmt}"
            if fmt == "tsv":
                write_tsv(rows, path)
            elif fmt == "jsonl":
                write_jsonl(rows, path)
            elif fmt == "json":
                write_json(rows, path)
            elif fmt == "csv.gz":
                path.write_bytes(gzip.compress(base.read_bytes(), 6))
            elif fmt == "jsonl.zst":
                write_jsonl(rows, work / "z.jsonl")
                path.write_bytes(
                    zstandard.ZstdCompressor().compress((work / "z.jsonl").read_bytes())
                )
            elif fmt == "xlsx":
                rows = rows[: args.xlsx_rows]
                write_xlsx(rows, path)
            files[fmt] = (path, len(rows))
        print(f"{args.rows:,} rows x {len(COLUMNS)} columns; ranges of {args.chunk_size}")

        results: dict[str, float] = {}
        with LocalStack(Settings(home=work / "home"), stop_database=True) as stack:
            client = Client(stack.api_url, token=stack.local_token, timeout=600)
            # warm up (worker processes, connections), so CSV, measured first, pays no start-up
            (work / "warm.csv").write_text("id\n1\n")
            run_import(client, work / "warm.csv", "bench-warm", None, None, show_progress=False)
            for fmt, (path, count) in files.items():
                started = time.perf_counter()
                result = run_import(
                    client,
                    path,
                    f"bench-{fmt.replace('.', '-')}",
                    parse_size(args.chunk_size),
                    None,
                    show_progress=False,
                )
                seconds = time.perf_counter() - started
                if result["status"] != "completed":
                    raise SystemExit(f"{fmt} import failed: {result['error']}")
                if result["rows"] != count:
                    raise SystemExit(f"{fmt}: {result['rows']:,} rows imported, not {count:,}")
                results[fmt] = count / seconds
                size = path.stat().st_size
                ratio = f"{results[fmt] / results['csv']:.2f}x CSV" if "csv" in results else ""
                print(
                    f"{fmt:>9}: {count:>9,} rows {size / 1e6:8.1f} MB {seconds:7.2f} s "
                    f"{results[fmt]:>9,.0f} rows/s {size / 1e6 / seconds:6.1f} MB/s  {ratio}"
                )


if __name__ == "__main__":
    main()
