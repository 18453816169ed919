"""A CSV range's blocks: runs of whole records cut by the file's bytes, each one leaf.

A re-import that finds a block's bytes already stored (``dsa_core.block_leaves``: the block's
address -> the leaf its records made) does not COPY, hash or cut those records again: the
leaf is the block's. Only the blocks not found go to COPY (bench/README.md, block_reuse.py:
a 1% re-import of a range in 0.36x of a first import, against 0.58x without blocks, on one
backend). Off by default (``imports.reuse_blocks``): through the whole pipeline on two shared
cores a 1% re-import with blocks now takes 0.41-0.56x of its first import against 0.64-0.70x
without, but a first import with them is 14-32% slower (bench/README.md, "The cut in C").

A block ends after a record whose CRC-32 (of its bytes without the last newline) is 0
modulo :data:`NATURAL` (so an edit moves only the block boundaries next to it; a record's
last line alone would not do, since a file's multi-line fields often end alike), after
:data:`tree.MAX_LEAF_ROWS` records, or once it holds :data:`MAX_BLOCK_BYTES`. A record ends
at a newline outside quotes (an even count of quote characters since the record began),
which is how PostgreSQL's CSV COPY splits lines.
A block's address is sha256 over the parse context (:func:`context`) and its bytes. A range
loaded by blocks runs from one :func:`natural_boundary` to the next, so its blocks are the
ones the whole file has, wherever the planner cut it.

The cut runs in C (``_blockcut.c``, one pass a piece: quotes, record ends, CRC-32s, block
ends) when the install could compile it (hatch_build.py), and otherwise in Python's own C
loops; both make the same blocks (tests/unit/test_blocks.py runs every test with each).
bench/block_cut.py: the 1M-row file in 0.69 s in C against 1.48 s without. The Lambda layer
(layers/build.py) carries no build for arm64, so on AWS the cut is Python's.
"""

from __future__ import annotations

import hashlib
import json
import zlib
from bisect import bisect_left
from collections.abc import Callable, Iterable
from itertools import accumulate, compress, repeat
from operator import add, methodcaller, not_, sub
from types import ModuleType
from typing import NamedTuple

from .tree import MAX_LEAF_ROWS

_native: ModuleType | None
try:  # the cut in C (_blockcut.c), built at install when a compiler is there
    from . import _blockcut as _native
except ImportError:  # pragma: no cover - a machine without one: the same blocks, slower
    _native = None

NATURAL = 8  # a power of two: a record ends a block when its CRC-32's low bits are 0
MAX_BLOCK_BYTES = 1 << 20
_QUOTE, _NEWLINE = b'"', b"\n"
_MASK, _ONE = NATURAL - 1, 1
_PLUS_ONE = _ONE.__add__
_COUNT_QUOTES = methodcaller("count", _QUOTE)
_ENDS_CR = methodcaller("endswith", b"\r")
_DIGEST = methodcaller("digest")
_NEW_TUPLE = tuple.__new__


def _cuts(hits: Iterable[int], first: int, count: int) -> list[int]:
    """The blocks' last records (indexes among ``count`` records): each natural end
    (``hits``), and every :data:`tree.MAX_LEAF_ROWS` records without one. ``first``: the
    record before the current block's first one (negative: records carried over)."""
    cuts: list[int] = []
    last = first
    for hit in hits:
        while hit - last > MAX_LEAF_ROWS:
            last += MAX_LEAF_ROWS
            cuts.append(last)
        cuts.append(hit)
        last = hit
    while count - 1 - last >= MAX_LEAF_ROWS:
        last += MAX_LEAF_ROWS
        cuts.append(last)
    return cuts


class Block(NamedTuple):
    """A block (a NamedTuple: a range's blocks are made by ``tuple.__new__`` over ``zip``, a
    C loop, where a dataclass's ``__init__`` cost 0.9 us a block)."""

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

    A piece's lines are split, measured, CRC'd and counted for quotes by C loops (``map``,
    ``accumulate``, ``compress``); Python loops run only over the records that span lines
    and over the blocks. ``mixed_endings`` turns True once records end with CR LF and
    others with a bare LF (a quoted field's newlines do not count): COPY refuses such a
    file, which must then be loaded the ordinary way."""

    def __init__(self, context: bytes, *, native: bool | None = None) -> None:
        """``native``: cut in C (``_blockcut``); None: when it is built."""
        if native and _native is None:
            raise RuntimeError("sluiceway._blockcut is not built")
        self._native = _native is not None if native is None else native
        self._context = context
        self._carry = b""  # the current block's bytes from earlier pieces
        self._records = 0  # the whole records in _carry
        self._open = False  # _carry ends inside a record (a quoted field goes on)
        self._open_crc = 0  # that record's CRC-32 so far, its newlines included
        self._open_len = 0  # and its length so far
        self._tail = b""  # an incomplete last line
        self._crlf: bool | None = None
        self.mixed_endings = False
        # the C cut's state: a quoted field goes on, the CRC-32 of the record begun, the last
        # byte was CR, a record is begun (its bytes are in _carry)
        self._quoted, self._crc, self._prev_cr, self._pending = False, 0, False, False

    def feed(self, piece: bytes) -> list[Block]:
        if self._native:
            return self._feed_native(piece)
        buf = self._tail + piece if self._tail else piece
        lines = buf.split(_NEWLINE)
        self._tail = lines.pop()
        n = len(lines)
        if not n:
            return []
        whole = len(buf) - len(self._tail)  # the complete lines' bytes
        crcs = list(map(zlib.crc32, lines))  # a record's, at the line that ends it
        lens = list(map(len, lines))
        ending, longest, quoted_crlf = self._spans(lines, crcs, lens)
        if ending is None:  # every line ends a record
            ends: list[int] | None = None
            count = n
        else:
            ends = list(compress(range(n), ending))
            crcs = list(compress(crcs, ending))
            count = len(ends)
        self._endings(count, buf.count(b"\r\n", 0, whole) - quoted_crlf)
        hits = compress(range(count), map(not_, map(_MASK.__and__, crcs)))
        first = -1 - self._records  # the record before the current block's first one
        cum = list(accumulate(lens))
        if longest * MAX_LEAF_ROWS + len(self._carry) < MAX_BLOCK_BYTES:
            cuts = _cuts(hits, first, count)
        else:  # records long enough for a block to reach MAX_BLOCK_BYTES
            rec_ends = list(map(add, cum, range(1, n + 1)))
            if ends is not None:
                rec_ends = list(map(rec_ends.__getitem__, ends))
            cuts = self._cuts_by_bytes(list(hits), first, count, rec_ends)
        self._records = count - 1 - (cuts[-1] if cuts else first)
        if not cuts:
            self._carry += buf[:whole]
            return []
        at = cuts if ends is None else list(map(ends.__getitem__, cuts))  # their lines
        stops = list(map(add, map(cum.__getitem__, at), map(_PLUS_ONE, at)))
        return self._blocks(buf, stops, map(sub, cuts, [first, *cuts[:-1]]), whole)

    def _blocks(
        self, buf: bytes, stops: list[int], records: Iterable[int], whole: int
    ) -> list[Block]:
        """The blocks ending at ``stops`` in ``buf`` (the first one after the carried bytes),
        with their ``records``; the bytes after the last one, up to ``whole``, are carried."""
        data = list(map(buf.__getitem__, map(slice, [0, *stops[:-1]], stops)))
        data[0] = self._carry + data[0]
        self._carry = buf[stops[-1] : whole]
        digests = map(_DIGEST, map(hashlib.sha256, map(self._context.__add__, data)))
        return list(map(_NEW_TUPLE, repeat(Block), zip(digests, data, records, strict=True)))

    def _feed_native(self, piece: bytes) -> list[Block]:
        assert _native is not None
        (stops, counts, quoted, self._crc, self._records, prev_cr, pending, crlf, ends) = (
            _native.cut(
                piece,
                _MASK,
                MAX_LEAF_ROWS,
                MAX_BLOCK_BYTES,
                self._quoted,
                self._crc,
                self._records,
                len(self._carry),
                self._prev_cr,
                self._pending,
            )
        )
        self._quoted, self._prev_cr, self._pending = bool(quoted), bool(prev_cr), bool(pending)
        self._endings(ends, crlf)
        if not stops:
            self._carry += piece
            return []
        return self._blocks(piece, stops, counts, len(piece))

    def _spans(
        self, lines: list[bytes], crcs: list[int], lens: list[int]
    ) -> tuple[bytearray | None, int, int]:
        """The records that span lines: a record goes on while its count of quote
        characters is odd. Returns which lines end records (None: all of them), the longest
        record's length and the count of CR LF newlines inside quoted fields. A record's
        CRC-32 is put at its last line in ``crcs``."""
        n = len(lines)
        longest = max(lens) + 1
        odd = list(compress(range(n), map(_ONE.__and__, map(_COUNT_QUOTES, lines))))
        if not odd and not self._open:
            return None, longest, 0
        ending = bytearray(b"\x01") * n
        quoted_crlf = 0
        if self._open:  # the record begun in an earlier piece
            stop = odd[0] if odd else n
            ending[:stop] = bytes(stop)
            quoted_crlf += sum(map(_ENDS_CR, lines[:stop]))
            if not odd:
                self._open_crc = zlib.crc32(_NEWLINE.join(lines) + _NEWLINE, self._open_crc)
                self._open_len += sum(lens) + n
                return ending, longest, quoted_crlf
            close = odd.pop(0)
            crcs[close] = zlib.crc32(_NEWLINE.join(lines[: close + 1]), self._open_crc)
            longest = max(longest, self._open_len + sum(lens[: close + 1]) + close + 1)
            self._open = False
        if len(odd) % 2:  # the last record goes on in the next piece
            opened = odd.pop()
            ending[opened:] = bytes(n - opened)
            quoted_crlf += sum(map(_ENDS_CR, lines[opened:]))
            self._open = True
            self._open_crc = zlib.crc32(_NEWLINE.join(lines[opened:]) + _NEWLINE)
            self._open_len = sum(lens[opened:]) + n - opened
        opens, closes = odd[0::2], odd[1::2]
        if list(map(_PLUS_ONE, opens)) == closes:  # each spans two lines: C loops only
            for opened in opens:
                ending[opened] = 0
            joined = map(
                zlib.crc32,
                map(lines.__getitem__, closes),
                map(zlib.crc32, repeat(_NEWLINE), map(crcs.__getitem__, opens)),
            )
            for close, crc in zip(closes, joined, strict=True):
                crcs[close] = crc
            quoted_crlf += sum(map(_ENDS_CR, map(lines.__getitem__, opens)))
            if opens:
                pairs = map(add, map(lens.__getitem__, opens), map(lens.__getitem__, closes))
                longest = max(longest, max(pairs) + 2)
            return ending, longest, quoted_crlf
        for opened, close in zip(opens, closes, strict=True):
            ending[opened:close] = bytes(close - opened)
            quoted_crlf += sum(map(_ENDS_CR, lines[opened:close]))
            crcs[close] = zlib.crc32(_NEWLINE.join(lines[opened : close + 1]))
            longest = max(longest, sum(lens[opened : close + 1]) + close - opened + 1)
        return ending, longest, quoted_crlf

    def _cuts_by_bytes(
        self, hits: list[int], first: int, count: int, rec_ends: list[int]
    ) -> list[int]:
        """The blocks' last records, :data:`MAX_BLOCK_BYTES` counted (a record at a time)."""
        cuts: list[int] = []
        last, start, carry, h = first, 0, len(self._carry), 0
        while True:
            cut = last + MAX_LEAF_ROWS
            while h < len(hits) and hits[h] <= last:
                h += 1
            if h < len(hits) and hits[h] < cut:
                cut = hits[h]
            big = bisect_left(rec_ends, start + MAX_BLOCK_BYTES - carry, max(last + 1, 0))
            cut = min(cut, big)
            if cut >= count:
                return cuts
            cuts.append(cut)
            start, carry, last = rec_ends[cut], 0, cut

    def finish(self) -> list[Block]:
        """The last blocks: with the last record if the range does not end with a newline."""
        out: list[Block] = []
        if self._native and self._pending and not self._quoted:  # the last record ends here
            self._records += 1
            self._pending = False
        if self._tail:
            self._carry += self._tail
            if self._open == bool(self._tail.count(_QUOTE) & 1):  # it ends a record
                self._records += 1
            self._tail = b""
        if self._carry:
            data, self._carry = self._carry, b""
            out.append(Block(hashlib.sha256(self._context + data).digest(), data, self._records))
            self._records = 0
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


def natural_boundary(read: Callable[[int, int], bytes], at: int, stop: int) -> int:
    """The first place at or after ``at`` (a record's start) where a block of any range
    placement ends: after the first record whose CRC-32 is 0 modulo :data:`NATURAL`, or
    after the first record that ends :data:`MAX_BLOCK_BYTES` or more past ``at``, or
    ``stop`` (the data's end). Ranges loaded by blocks start and end at these places, so a
    block never spans two ranges and a file's blocks do not depend on where the planner cut
    it: range k ends where range k+1 starts, both found from the same byte."""
    pos, quotes, crc, tail = at, 0, 0, b""
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
            if quotes % 2:  # the record goes on: its CRC so far, with the newline
                crc = zlib.crc32(line + _NEWLINE, crc)
                continue
            record, quotes, crc = zlib.crc32(line, crc), 0, 0
            if record & _MASK == 0 or offset - at >= MAX_BLOCK_BYTES:
                return offset
    return stop
