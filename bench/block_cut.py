"""What the worker's cut of a CSV into blocks costs (sluiceway.blocks), against its floor.

Usage: python bench/block_cut.py [--rows 1000000] [--piece 1MiB] [--runs 3]

Cuts the benchmark CSV (bench/import_vs_copy.py's file, the 1% re-import's: every 100th row
changed) with :class:`sluiceway.blocks.Cutter`, fed in pieces as a range streams from S3,
and times, in the same run and process:
  - the cut in C (sluiceway/_blockcut.c, when it is built): blocks, each with its sha256
    address and its records counted;
  - the cut without it, in Python's C loops (the same blocks: the script checks);
  - the floor of a cut in Python: the C loops a cut by records cannot do without, over the
    whole file at once (split into lines, a CRC-32 a line, lengths, quote counts);
  - sha256 of the whole file at once, the hashing any cut pays.
No database, no S3: the worker's CPU alone. The last lines are the figures, the blocks'
mean records, and each cut against the Python floor.
"""

from __future__ import annotations

import argparse
import hashlib
import time
import zlib
from collections.abc import Callable
from operator import methodcaller
from pathlib import Path

from sluiceway import blocks
from sluiceway.cli import parse_size
from sluiceway.sample import COLUMNS, write_csv

DATA = Path(__file__).parent / "data"


def best(runs: int, work: Callable[[], object]) -> float:
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        work()
        times.append(time.perf_counter() - t0)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--piece", default="1MiB")
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    path = DATA / f"bench_{args.rows}_every100.csv"
    if not path.exists():
        DATA.mkdir(exist_ok=True)
        write_csv(path, args.rows, changed_every=100)
    data = path.read_bytes()
    piece = parse_size(args.piece)
    context = blocks.context("csv", ",", "utf-8", list(COLUMNS))
    found: list[blocks.Block] = []

    def cut(native: bool) -> None:
        cutter = blocks.Cutter(context, native=native)
        found.clear()
        for at in range(0, len(data), piece):
            found.extend(cutter.feed(data[at : at + piece]))
        found.extend(cutter.finish())

    def floor() -> None:
        lines = data.split(b"\n")
        list(map(zlib.crc32, lines))
        list(map(len, lines))
        list(map(methodcaller("count", b'"'), lines))

    native_s = None
    if blocks._native is not None:
        native_s = best(args.runs, lambda: cut(True))
        in_c = [(b.digest, b.records) for b in found]
    cut_s = best(args.runs, lambda: cut(False))
    if native_s is not None and in_c != [(b.digest, b.records) for b in found]:
        raise SystemExit("the two cuts made different blocks")
    floor_s = best(args.runs, floor)
    sha_s = best(args.runs, lambda: hashlib.sha256(data).digest())
    records = sum(b.records for b in found)
    assert b"".join(b.data for b in found) == data  # the blocks are the file, in order
    mb = len(data) / 1e6
    print(f"file: {path.name} ({len(data):,} bytes, {records:,} records), pieces of {piece:,}")
    if native_s is None:
        print("cut in C: not built here (sluiceway._blockcut; no C compiler at install)")
    else:
        print(f"cut in C: {native_s:.3f} s ({mb / native_s:.0f} MB/s), {len(found):,} blocks")
    print(f"cut in Python: {cut_s:.3f} s ({mb / cut_s:.0f} MB/s), {len(found):,} blocks")
    print(f"floor (split, CRC, lengths, quote counts at once): {floor_s:.3f} s")
    print(f"sha256 of the whole file at once: {sha_s:.3f} s")
    print(
        f"RESULT {records / len(found):.2f} records a block; cut in Python / floor: {cut_s / floor_s:.2f}x"
    )
    if native_s is not None:
        print(
            f"RESULT cut in C / floor: {native_s / floor_s:.2f}x; "
            f"cut in C / cut in Python: {native_s / cut_s:.2f}x"
        )


if __name__ == "__main__":
    main()
