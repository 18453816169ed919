"""A CSV range's blocks: runs of whole records cut by the file's bytes, each one leaf.

A re-import that finds a block's bytes already stored (``dsa_core.block_leaves``: the block's
address -> the leaf its records made) does not COPY, hash or cut those records again: the
leaf is the block's. Only the blocks not found go to COPY (bench/README.md, block_reuse.py:
a 1% re-import of a range in 0.36x of a first import, against 0.58x without blocks).

A block ends after a record whose last line's CRC-32 is 0 modulo :data:`NATURAL` (so an edit
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

    ``mixed_endings`` turns True once a record ends with CR LF and another with LF alone:
    COPY refuses such a file, so the caller must then send it every byte."""

    def __init__(self, context: bytes) -> None:
        self._context = context
        self._lines: list[bytes] = []  # the block's complete lines so far
        self._size = 0
        self._records = 0
        self._quotes = 0  # quote characters since the record began
        self._tail = b""  # an incomplete last line
        self._crlf: bool | None = None
        self.mixed_endings = False

    def feed(self, piece: bytes) -> list[Block]:
        out: list[Block] = []
        lines = (self._tail + piece).split(_NEWLINE) if self._tail else piece.split(_NEWLINE)
        self._tail = lines.pop()
        for line in lines:
            self._line(line + _NEWLINE, out)
        return out

    def finish(self) -> list[Block]:
        """The last blocks: with the last record if the range does not end with a newline."""
        out: list[Block] = []
        if self._tail:
            self._line(self._tail, out, last=True)
            self._tail = b""
        if self._lines:
            self._emit(out)
        return out

    def _line(self, line: bytes, out: list[Block], last: bool = False) -> None:
        self._lines.append(line)
        self._size += len(line)
        self._quotes += line.count(_QUOTE)
        if self._quotes % 2:  # inside a quoted field: the record goes on
            return
        self._quotes = 0
        self._records += 1
        if not last:
            crlf = line.endswith(b"\r\n")
            if self._crlf is None:
                self._crlf = crlf
            elif crlf != self._crlf:
                self.mixed_endings = True
        if (
            zlib.crc32(line) % NATURAL == 0
            or self._records >= MAX_LEAF_ROWS
            or self._size >= MAX_BLOCK_BYTES
        ):
            self._emit(out)

    def _emit(self, out: list[Block]) -> None:
        data = b"".join(self._lines)
        digest = hashlib.sha256(self._context + data).digest()
        out.append(Block(digest, data, self._records))
        self._lines, self._size, self._records = [], 0, 0


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
            if zlib.crc32(line + _NEWLINE) % NATURAL == 0 or offset - at >= MAX_BLOCK_BYTES:
                return offset
    return stop
