"""A CSV object of any size that exists only as arithmetic, for planner benchmarks.

The object is a header record, then one fixed record repeated: byte p is computable, so a
ranged GET of it can be answered without storing it, and so can a range's quote/newline scan
(``scan``), which tests/unit/test_synthetic_object.py checks against csvsplit.scan_range.
``FakeS3`` answers the planner's HeadObject / GetObject for one key with it and counts the
bytes each GET returns.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from typing import Any

from sluiceway.csvsplit import RangeScan

HEADER = b"id,name,category,amount,quantity,active,created_at,note\n"
# no quotes: every newline ends a record, so the fold's boundaries are known exactly
RECORD = b"1234567890,customer 00000001,prod,12345.67,250,true,2024-01-01T00:00:00Z,plain\n"


@dataclass
class SyntheticCsv:
    """HEADER + RECORD * records; ``size`` is at least the size asked for."""

    target_bytes: int
    records: int = field(init=False)
    size: int = field(init=False)

    def __post_init__(self) -> None:
        self.records = max(1, -(-(self.target_bytes - len(HEADER)) // len(RECORD)))
        self.size = len(HEADER) + self.records * len(RECORD)

    def read(self, start: int, end: int) -> bytes:
        """Bytes [start, end): only for small reads (the planner's)."""
        end = min(end, self.size)
        if end <= start:
            return b""
        out = bytearray()
        pos = start
        if pos < len(HEADER):
            out += HEADER[pos : min(end, len(HEADER))]
            pos = len(HEADER)
        while pos < end:
            off = (pos - len(HEADER)) % len(RECORD)
            piece = RECORD[off : off + (end - pos)]
            out += piece
            pos += len(piece)
        return bytes(out)

    # Newlines are at h - 1 (the header's) and at h + k*L + L - 1 for k in [0, records).
    def _k_first(self, a: int) -> int:
        h, n = len(HEADER), len(RECORD)
        return max(-1, -(-(a - h - n + 1) // n))

    def newlines(self, a: int, b: int) -> int:
        """How many newlines lie in [a, b)."""
        h, n = len(HEADER), len(RECORD)
        if b <= a:
            return 0
        lo = self._k_first(a)
        hi = min(self.records - 1, (b - 1 - h - n + 1) // n)
        return max(0, hi - lo + 1)

    def _newline_at_or_after(self, a: int) -> int | None:
        h, n = len(HEADER), len(RECORD)
        k = self._k_first(a)
        return h + k * n + n - 1 if k <= self.records - 1 else None

    def scan(self, raw_start: int, raw_end: int) -> RangeScan:
        """What csvsplit.scan_range finds in [raw_start, raw_end), without the bytes."""
        raw_end = min(raw_end, self.size)
        newlines = self.newlines(raw_start, raw_end)
        if raw_start > 0 and self._newline_at_or_after(raw_start - 1) == raw_start - 1:
            return RangeScan(0, newlines, raw_start - 1, None, 0, 0)
        nl = self._newline_at_or_after(raw_start)
        if nl is None or nl >= raw_end:
            return RangeScan(0, newlines, None, None, 0, 0)
        return RangeScan(0, newlines, nl, None, self.newlines(raw_start, nl + 1), 0)


class FakeS3:
    """HeadObject / GetObject of one synthetic key; every other call goes to ``real``."""

    def __init__(self, real: Any, key: str, obj: SyntheticCsv) -> None:
        self.real, self.key, self.obj = real, key, obj
        self.gets = 0
        self.bytes_read = 0

    def head_object(self, **kw: Any) -> dict[str, Any]:
        if kw.get("Key") != self.key:
            return dict(self.real.head_object(**kw))
        return {"ContentLength": self.obj.size, "ETag": '"synthetic"'}

    def get_object(self, **kw: Any) -> dict[str, Any]:
        if kw.get("Key") != self.key:
            return dict(self.real.get_object(**kw))
        spec = str(kw.get("Range") or f"bytes=0-{self.obj.size - 1}")
        first, last = spec.removeprefix("bytes=").split("-")
        data = self.obj.read(int(first), int(last) + 1)
        self.gets += 1
        self.bytes_read += len(data)
        return {"Body": io.BytesIO(data), "ContentLength": len(data)}

    def __getattr__(self, name: str) -> Any:
        return getattr(self.real, name)
