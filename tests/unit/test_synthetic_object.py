"""bench/synthetic.py's arithmetic CSV answers like its bytes would: the 1 TB simulation and
the planner bench lean on that."""

from __future__ import annotations

import importlib.util
import itertools
import random
import sys
from pathlib import Path
from types import ModuleType

from sluiceway import csvsplit

BENCH = Path(__file__).resolve().parents[2] / "bench"


def _synthetic() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_synthetic", BENCH / "synthetic.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def test_the_synthetic_object_reads_as_its_header_and_repeated_record() -> None:
    syn = _synthetic()
    obj = syn.SyntheticCsv(10_000)
    whole = obj.read(0, obj.size)
    assert len(whole) == obj.size >= 10_000
    assert whole == syn.HEADER + syn.RECORD * obj.records
    rng = random.Random(1)
    for _ in range(200):
        a = rng.randrange(obj.size)
        b = rng.randrange(a, obj.size + 1)
        assert obj.read(a, b) == whole[a:b]


def test_its_computed_scan_is_what_scan_range_finds_in_the_bytes() -> None:
    syn = _synthetic()
    obj = syn.SyntheticCsv(20_000)
    whole = obj.read(0, obj.size)
    rng = random.Random(2)
    cuts = [(0, obj.size), (0, 1), (len(syn.HEADER), obj.size), (len(syn.HEADER) - 1, 200)]
    cuts += [(k * len(syn.RECORD) + len(syn.HEADER), obj.size) for k in range(3)]
    for _ in range(300):
        a = rng.randrange(obj.size)
        cuts.append((a, rng.randrange(a + 1, obj.size + 1)))
    for a, b in cuts:
        expected = csvsplit.scan_range(whole[max(a - 1, 0) : b], a)
        assert obj.scan(a, b) == expected, (a, b)
    assert obj.newlines(0, obj.size) == whole.count(b"\n") == obj.records + 1


def test_the_fold_over_computed_scans_gives_every_record_once() -> None:
    syn = _synthetic()
    obj = syn.SyntheticCsv(50_000)
    raw = csvsplit.split_ranges(obj.size, 997, 4)
    loads = csvsplit.resolve_ranges(
        raw,
        [obj.scan(a, b) for a, b in raw],
        data_start=len(syn.HEADER),
        data_end=obj.size,
        header_lines=1,
    )
    assert sum(obj.newlines(r.start, r.end) for r in loads) == obj.records
    assert loads[0].start == len(syn.HEADER)
    assert all(x.end == y.start for x, y in itertools.pairwise(loads))
