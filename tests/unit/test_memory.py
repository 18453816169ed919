"""Large buffers freed between small live ones give their memory back (sluiceway.memory)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from sluiceway.memory import fix_mmap_threshold

# An 8 MiB buffer freed first (glibc then raises its mmap threshold to 8 MiB), then twenty
# 8 MiB buffers with a 200 KiB one kept after each, then the twenty freed: what RSS keeps.
PROGRAM = """
import sys
from pathlib import Path
from sluiceway.memory import fix_mmap_threshold
if sys.argv[1] == "fixed":
    assert fix_mmap_threshold()
def rss():
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
first = bytearray(8 << 20)
del first
before = rss()
big, small = [], []
for _ in range(20):
    big.append(bytearray(8 << 20))
    small.append(bytearray(200 << 10))
del big
print(rss() - before)
"""


def _kept(mode: str) -> int:
    done = subprocess.run(
        [sys.executable, "-c", PROGRAM, mode], capture_output=True, text=True, check=True
    )
    return int(done.stdout)


@pytest.mark.skipif(not fix_mmap_threshold(), reason="no glibc mallopt here")
def test_freed_large_buffers_are_given_back_with_the_threshold_fixed() -> None:
    kept_moving, kept_fixed = _kept("moving"), _kept("fixed")
    assert kept_moving > 100 << 20  # glibc's moving threshold keeps them in the heap
    assert kept_fixed < 40 << 20  # each was a mapping of its own, unmapped when freed
