"""Large buffers get mappings of their own, so a process's memory does not creep with its work.

glibc serves an allocation of at least its mmap threshold (128 KiB at start) with a mapping of
its own and unmaps it on free. But the threshold moves: freeing such a chunk raises it to that
chunk's size (up to 32 MiB), so the next buffers of that size (an export's 8 MiB pieces, a
scan's 64 MiB range) come from the heap, where freed space is kept and fragments. An export
worker's peak then grew with the rows it wrote: 125 MiB for 1M rows in two parts, 147 MiB for
5M in five (bench/export_vs_copy.py, exact peaks). Setting the threshold (``mallopt``, which
also stops it moving) kept it at 114 / 115 MiB, and the stack process's at 383 / 542 MiB
against 550 / 757.
"""

from __future__ import annotations

import ctypes

M_MMAP_THRESHOLD = -3  # glibc's malloc.h
MMAP_THRESHOLD_BYTES = 1024 * 1024


def fix_mmap_threshold() -> bool:
    """Set glibc's mmap threshold to 1 MiB in this process; False where there is no glibc."""
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    return bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES))
