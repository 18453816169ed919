"""How many rows one commit added, removed and changed against another, counted in memory.

The counts are :func:`versioning.compute_diff`'s (a test holds the two equal on many pairs of
commits), found the same way, level by level: the lists one commit has and the other has not,
then their leaves one has and the other has not, then those leaves' rows, each level a multiset
match (the n-th copy of a hash on one side pairs with the n-th on the other, in row order); the
rows left over are paired by logical id (the key of a keyed commit, the row number otherwise).

Only what is read differs: the stored lists' and leaves' hashes come here as the bytes they are
stored in, and the matching is Python's set and dict operations over them, where the SQL diff
makes, aggregates, joins and numbers temporary tables a level at a time. A re-import of 1M
rows with 1% changed reads 283,000 leaf entries and 236,000 rows; bench/README.md has the
figures. :func:`count` gives up (None) past :data:`MAX_ENTRIES` leaves or rows, where the SQL
diff, which spills to disk, should count instead.
"""

from __future__ import annotations

import struct
from collections import Counter
from collections.abc import Sequence
from itertools import accumulate, compress
from operator import sub
from typing import Any

from psycopg.rows import tuple_row

from . import db, tree

HASH = 32  # bytes of a sha256
MAX_ENTRIES = 3_000_000  # leaves, or rows, held at once (about 100 bytes each)


_UNPACK = struct.Struct(f"{HASH}s").iter_unpack


def _keys(blob: bytes) -> list[bytes]:
    """A stored run of hashes, end to end, as a list (struct's C loop: about half the time
    of slicing in a comprehension)."""
    return [k for (k,) in _UNPACK(blob)]


def unpaired(a: Sequence[bytes], b: Sequence[bytes]) -> tuple[list[int], list[int]]:
    """The places (indexes) of the entries of ``a`` and of ``b`` without a partner on the
    other side: of a key with na copies in ``a`` and nb in ``b`` (in their order), the copies
    past min(na, nb) on the side with more."""
    sa, sb = set(a), set(b)
    if len(sa) == len(a) and len(sb) == len(b):  # no key twice on a side: set operations
        only_a, only_b = sa - sb, sb - sa
        return (
            list(compress(range(len(a)), map(only_a.__contains__, a))),
            list(compress(range(len(b)), map(only_b.__contains__, b))),
        )
    ca, cb = Counter(a), Counter(b)
    return _past(a, ca, cb), _past(b, cb, ca)


def _past(keys: Sequence[bytes], mine: Counter[bytes], other: Counter[bytes]) -> list[int]:
    more = {k for k, n in mine.items() if n > other[k]}
    seen: Counter[bytes] = Counter()
    out = []
    for i in compress(range(len(keys)), map(more.__contains__, keys)):
        k = keys[i]
        seen[k] += 1
        if seen[k] > other[k]:
            out.append(i)
    return out


def _lists(conn: db.Conn, commit_id: str | None) -> list[tuple[bytes, int]]:
    """A commit's lists in order: (list_hash, row_offset), the offset being the rows of the
    lists before it (as :func:`tree.write_chunks`, commit_chunks' one writer, stores it)."""
    refs = tree.commit_lists(conn, commit_id) if commit_id is not None else []
    offsets = accumulate((ref.row_count for ref in refs), initial=0)
    return [(ref.list_hash, offset) for ref, offset in zip(refs, offsets, strict=False)]


class _Side:
    """One commit's entries at a level: hashes, first row numbers (0-based, before the
    entry's first row) and row counts, in row order."""

    def __init__(self) -> None:
        self.keys: list[bytes] = []
        self.starts: list[int] = []
        self.rows: list[int] = []

    def take(self, places: list[int]) -> list[tuple[bytes, int, int]]:
        return [(self.keys[i], self.starts[i], self.rows[i]) for i in places]


def _leaves(lists: list[tuple[bytes, int]], stored: dict[bytes, tuple[bytes, list[int]]]) -> _Side:
    side = _Side()
    for list_hash, offset in lists:
        hashes, ends = stored[list_hash]
        side.keys += _keys(hashes)
        before = [0, *ends[:-1]]  # rows in the list before each leaf
        side.starts += map(offset.__add__, before)
        side.rows += map(sub, ends, before)
    return side


_LEAF_ROWS = (
    "SELECT f.leaf_hash, f.row_hashes, f.logical_ids "
    "FROM generate_series(0, %(count)s - 1) g(i) CROSS JOIN LATERAL "
    "(SELECT l.leaf_hash, l.row_hashes, l.logical_ids FROM dsa_core.row_leaves l "
    "WHERE l.leaf_hash = substring(%(hashes)s::bytea FROM g.i * 32 + 1 FOR 32) LIMIT 1) f"
)


class _Rows:
    """One commit's rows of its unpaired leaves, in row order: hashes, row numbers, and each
    row's logical id where its leaf has them (None: its row number is its id)."""

    def __init__(self) -> None:
        self.hashes = bytearray()  # end to end; split once, by :meth:`keys`
        self.numbers: list[int] = []
        self.ids: list[str | None] = []

    def add(self, start: int, count: int, row_hashes: bytes, ids: list[str | None] | None) -> None:
        self.hashes += row_hashes
        self.numbers += range(start + 1, start + count + 1)
        self.ids += ids if ids is not None else [None] * count

    def keys(self) -> list[bytes]:
        return _keys(bytes(self.hashes))

    def logical_ids(self, places: list[int]) -> Counter[str]:
        return Counter(
            x if (x := self.ids[i]) is not None else str(self.numbers[i]) for i in places
        )


def count(conn: db.Conn, a: str | None, b: str) -> dict[str, int] | None:
    """Rows added, removed and changed from commit ``a`` to commit ``b`` (``a`` None: every
    row added), as :func:`versioning.diff_counts` of :func:`versioning.compute_diff` counts
    them; None if more than :data:`MAX_ENTRIES` leaves or rows would be held."""
    lists_a, lists_b = _lists(conn, a), _lists(conn, b)
    pa, pb = unpaired([h for h, _ in lists_a], [h for h, _ in lists_b])
    open_a, open_b = [lists_a[i] for i in pa], [lists_b[i] for i in pb]
    wanted = list({h for h, _ in open_a} | {h for h, _ in open_b})
    stored: dict[bytes, tuple[bytes, list[int]]] = {}
    if wanted:
        sizes = conn.execute(
            "SELECT coalesce(sum(leaf_count), 0) AS n FROM dsa_core.leaf_lists "
            "WHERE list_hash = ANY(%s)",
            (wanted,),
        ).fetchone()
        multiplicity = Counter(h for h, _ in open_a) + Counter(h for h, _ in open_b)
        if sizes is None or int(sizes["n"]) * max(multiplicity.values()) > MAX_ENTRIES:
            return None
        with conn.cursor(row_factory=tuple_row) as cur:
            cur.execute(
                "SELECT list_hash, leaf_hashes, leaf_ends FROM dsa_core.leaf_lists "
                "WHERE list_hash = ANY(%s)",
                (wanted,),
                binary=True,
            )
            for list_hash, hashes, ends in cur.fetchall():
                stored[bytes(list_hash)] = (bytes(hashes), ends)
    leaves_a, leaves_b = _leaves(open_a, stored), _leaves(open_b, stored)
    if len(leaves_a.keys) + len(leaves_b.keys) > MAX_ENTRIES:
        return None
    la, lb = unpaired(leaves_a.keys, leaves_b.keys)
    taken_a, taken_b = leaves_a.take(la), leaves_b.take(lb)
    if sum(n for *_, n in taken_a) + sum(n for *_, n in taken_b) > MAX_ENTRIES:
        return None
    leaf_rows: dict[bytes, tuple[bytes, Any]] = {}
    distinct = list({h for h, *_ in taken_a} | {h for h, *_ in taken_b})
    if distinct:
        with conn.cursor(row_factory=tuple_row) as cur:
            cur.execute(
                _LEAF_ROWS, {"count": len(distinct), "hashes": b"".join(distinct)}, binary=True
            )
            for leaf_hash, row_hashes, ids in cur.fetchall():
                leaf_rows[bytes(leaf_hash)] = (bytes(row_hashes), ids)
    rows_a, rows_b = _Rows(), _Rows()
    for rows, taken in ((rows_a, taken_a), (rows_b, taken_b)):
        for leaf_hash, start, n in taken:
            row_hashes, ids = leaf_rows[leaf_hash]
            rows.add(start, n, row_hashes, ids)
    ra, rb = unpaired(rows_a.keys(), rows_b.keys())
    ids_a, ids_b = rows_a.logical_ids(ra), rows_b.logical_ids(rb)
    return {
        "added": sum(n for k, n in ids_b.items() if k not in ids_a),
        "removed": sum(n for k, n in ids_a.items() if k not in ids_b),
        "changed": sum(n * ids_b[k] for k, n in ids_a.items() if k in ids_b),
    }
