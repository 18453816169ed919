"""A CSV range's blocks: runs of whole records cut by the file's bytes, each one leaf.

A re-import that finds a block's bytes already stored (``dsa_core.block_leaves``: the block's
address -> the leaf its records made) does not COPY, hash or cut those records again: the
leaf is the block's. Only the blocks not found go to COPY (bench/README.md, block_reuse.py:
a 1% re-import of a range in 0.36x of a first import, against 0.58x without blocks).

A block ends after a record whose last line's CRC-32 (without its newline) is 0 modulo
:data:`NATURAL` (so an edit
moves only the block boundaries next to it), after :data:`tree.MAX_LEAF_ROWS` records, or once
it holds :data:`MAX_BLOCK_BYTES`. A record ends at a newline outside quotes (an even count of
quote characters since the record began), which is how PostgreSQL's CSV COPY splits lines.
A block's address is sha256 over the parse context (:func:`context`) and its bytes. A range
loaded by blocks runs from one :func:`natural_boundary` to the next, so its blocks are the
ones the whole file has, wherever the planner cut it.
"""

from __future__ import annotations

import hashlib
import json
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from operator import methodcaller

from .tree import MAX_LEAF_ROWS

NATURAL = 8
MAX_BLOCK_BYTES = 1 << 20
_QUOTE, _NEWLINE = b'"', b"\n"


@dataclass(frozen=True, slots=True)
class Block:
    digest: bytes  # sha256 of the context and the bytes
    data: bytes
    records: int


def context(fmt: str, delimiter: str, encoding: str, columns: list[str]) -> bytes:
    """What, beside its bytes, decides the rows a block makes: the same bytes under another
    delimiter, encoding or header are other rows."""
    text = json.dumps(
        {"format": fmt, "delimiter": delimiter, "encoding": encoding, "columns": columns},
        sort_keys=True,
    )
    return hashlib.sha256(text.encode()).digest()


class Cutter:
    """Cuts a range's bytes, fed piece by piece, into blocks (:class:`Block`).

    Each line's CRC-32 and quote count are taken by C loops (``map``), so the Python loop
    does a few integer tests a line. ``mixed_endings`` turns True once records end with CR
    LF and others with a bare LF (a quoted field's newlines do not count): COPY refuses such
    a file, which must then be loaded the ordinary way."""

    def __init__(self, context: bytes) -> None:
        self._context = context
        self._carry = b""  # the current block's bytes from earlier pieces
        self._records = 0
        self._quotes = 0  # quote characters since the record began
        self._tail = b""  # an incomplete last line
        self._crlf: bool | None = None
        self.mixed_endings = False

    def feed(self, piece: bytes) -> list[Block]:
        buf = self._tail + piece if self._tail else piece
        lines = buf.split(_NEWLINE)
        self._tail = lines.pop()
        whole = len(buf) - len(self._tail)  # the complete lines' bytes
        out: list[Block] = []
        start = pos = ends = crlf = 0
        records, quotes, carry = self._records, self._quotes, len(self._carry)
        for crc, q, n, cr in zip(
            map(zlib.crc32, lines),
            map(methodcaller("count", _QUOTE), lines),
            map(len, lines),
            map(methodcaller("endswith", b"\r"), lines),
            strict=True,
        ):
            pos += n + 1
            quotes += q
            if quotes & 1:  # inside a quoted field: the record goes on
                continue
            quotes = 0
            records += 1
            ends += 1
            crlf += cr
            if (
                crc % NATURAL == 0
                or records >= MAX_LEAF_ROWS
                or pos - start + carry >= MAX_BLOCK_BYTES
            ):
                self._emit(out, buf[start:pos], records)
                start, records, carry = pos, 0, 0
        self._carry += buf[start:whole]
        self._records, self._quotes = records, quotes
        self._endings(ends, crlf)
        return out

    def finish(self) -> list[Block]:
        """The last blocks: with the last record if the range does not end with a newline."""
        out: list[Block] = []
        if self._tail:
            self._carry += self._tail
            if not (self._quotes + self._tail.count(_QUOTE)) & 1:
                self._records += 1
            self._tail = b""
        if self._carry:
            self._emit(out, b"", self._records)
        return out

    def _endings(self, lines: int, crlf: int) -> None:
        if not lines:
            return
        if 0 < crlf < lines:
            self.mixed_endings = True
            return
        kind = crlf == lines
        if self._crlf is None:
            self._crlf = kind
        elif self._crlf != kind:
            self.mixed_endings = True

    def _emit(self, out: list[Block], data: bytes, records: int) -> None:
        if self._carry:
            data, self._carry = self._carry + data, b""
        digest = hashlib.sha256(self._context + data).digest()
        out.append(Block(digest, data, records))
        self._records = 0


def natural_boundary(read: Callable[[int, int], bytes], at: int, stop: int) -> int:
    """The first place at or after ``at`` (a record's start) where a block of any range
    placement ends: after the first record whose last line's CRC-32 is 0 modulo
    :data:`NATURAL`, or after the first record that ends :data:`MAX_BLOCK_BYTES` or more past
    ``at``, or ``stop`` (the data's end). Ranges loaded by blocks start and end at these
    places, so a block never spans two ranges and a file's blocks do not depend on where
    the planner cut it: range k ends where range k+1 starts, both found from the same byte."""
    pos, quotes, tail = at, 0, b""
    window = 64 << 10
    while pos < stop:
        piece = read(pos, min(pos + window, stop))
        if not piece:
            break
        start_of_tail = pos - len(tail)
        lines = (tail + piece).split(_NEWLINE)
        pos += len(piece)
        tail = lines.pop()
        offset = start_of_tail
        for line in lines:
            offset += len(line) + 1
            quotes += line.count(_QUOTE)
            if quotes % 2:
                continue
            quotes = 0
            if zlib.crc32(line) % NATURAL == 0 or offset - at >= MAX_BLOCK_BYTES:
                return offset
    return stop
