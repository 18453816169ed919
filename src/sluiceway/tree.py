"""Structural sharing: a commit's rows as content-addressed leaves and leaf lists.

A commit is ``commit_chunks -> leaf_lists -> row_leaves -> row_store`` (see migration 0005).
Rows are cut into leaves where a row's hash ends in three zero bits (and after 16 rows without
such a cut), so a leaf boundary depends only on the rows around it: editing a row changes its
leaf, inserting one changes one leaf, and every other leaf is the same bytes as before and is
stored once. Leaves are cut into lists the same way one level up, by leaf hash (about 256
leaves, 1,800 rows, a list), for every commit, keyed or not; the ranges of one import are
built apart and their seams stitched (:func:`stitch`), so where a list starts and ends
depends on the content only, never on where a range happened to start. A change then
rewrites, and a diff then reads, only the lists around it.

Everything here is set-based SQL over a temporary table ``(pos, row_hash, logical_id)``.
"""

from __future__ import annotations

from dataclasses import dataclass

from psycopg import sql

from . import db, schema

# A row ends its leaf when its hash's last byte has three zero low bits (a "natural" cut), or
# when it is the 16th row since the last natural cut: leaves of 7 rows on average, never more
# than 16. What a 1% change rewrites is the leaves it touches, and a random row sits in a big
# leaf more often than in a small one, so the cap matters as much as the mean; every commit
# also writes its list of leaf hashes (36 bytes a leaf). 8 and 16 minimise the sum (see
# bench/versioning.py and docs/architecture.md).
NATURAL_CUT = "(get_byte({h}, 31) & 7) = 0"
MAX_LEAF_ROWS = 16
# A leaf ends its list when the low LIST_BITS bits of its hash's last two bytes are zero:
# 2**LIST_BITS leaves (256, about 1,800 rows) a list on average. A diff reads whole lists (both
# sides of each one that differs), a commit writes one commit_chunks row per list: smaller
# lists make a localized diff cheaper, more lists make every commit's list of lists longer.
# At 1M rows a 1,000-row edit read 1,500 leaves in 75 ms with 8 bits, 5,400 in 160 ms with 10
# (bench/versioning.py, docs/architecture.md). As with leaves, a cap (4x the mean) bounds what
# one changed list costs; a list cut by the cap is content-defined from the last natural cut
# on, and stitch() knows the difference.
LIST_BITS = 8
MAX_LIST_LEAVES = 4 << LIST_BITS
LIST_BOUNDARY = (
    "(((get_byte({h}, 30) << 8) | get_byte({h}, 31)) & " + str((1 << LIST_BITS) - 1) + " = 0)"
)
EMPTY_LIST_HASH = bytes.fromhex("e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855")
GC_LOCK = 0x5C_6C_00_01  # pg_advisory lock: writers of leaves take it shared, gc's sweep exclusive

# A list's leaf hashes and ends are TOASTed: read them whole once per list (the OFFSET 0
# keeps the subquery from being inlined), not one slice fetch per leaf.
DETOAST_LIST_TEXT = (
    "SELECT ll.leaf_hashes || ''::bytea AS hs, ll.leaf_ends || '{}'::int[] AS ends OFFSET 0"
)


@dataclass(frozen=True)
class ListRef:
    list_hash: bytes
    row_count: int


LEAVES = sql.Identifier("sluiceway_leaves")
_ROW_LEAVES = sql.Identifier("dsa_core", "row_leaves")


def build(
    conn: db.Conn,
    source: sql.Composable,
    *,
    keyed: bool,
    new_leaves: sql.Identifier | None = None,
) -> list[ListRef]:
    """Store the leaves and lists of the rows in ``source`` (pos, row_hash, logical_id):
    :func:`cut`, then :func:`store`. The leaves' profiles are not known (NULL)."""
    cut(conn, source, keyed=keyed)
    return store(conn, new_leaves=new_leaves)


def cut(
    conn: db.Conn, source: sql.Composable, *, keyed: bool, codes: int = 0, dense: bool = False
) -> None:
    """Cut the rows in ``source`` (pos, row_hash, logical_id, and code1..code{codes}) into
    leaves, in the temporary table ``LEAVES`` (leaf_no, last_pos, n, hs, ids, leaf_hash,
    profile): each leaf's first and last pos, rows, row hashes, logical ids, hash, and the
    AND of its rows' profile codes (NULL without ``codes``; see :mod:`.schema`). Rows are
    taken in ``pos`` order; :func:`store` stores them. ``dense``: the caller knows that pos
    runs 1, 2, ..., N with no gap (a range's rows as COPY numbered them), so a row's index in
    its run is counted from pos itself. Holds gc's lock shared until the transaction ends, so
    no sweep deletes a leaf or row this one finds already stored and reuses.
    """
    conn.execute("SELECT pg_advisory_xact_lock_shared(%s)", (GC_LOCK,))
    conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(LEAVES))
    ids = sql.SQL("array_agg(logical_id ORDER BY pos)" if keyed else "NULL::text[]")
    code_columns = [sql.Identifier(f"code{k}") for k in range(1, codes + 1)]
    profile = schema.and_codes(code_columns) if codes else sql.SQL("NULL::int8[]")
    carried = sql.SQL("").join(sql.SQL(", {}").format(c) for c in code_columns)
    # A run is the rows after one natural cut up to and including the next; the cap cuts it
    # every MAX_LEAF_ROWS rows, so a leaf is (run, (row's index in its run - 1) / cap), the
    # index counted from the run's last natural cut. All the windows share one sort by pos
    # (three sorts fewer than numbering leaves by running sums: about a quarter less time at
    # 500,000 rows, the same leaves). leaf_no is the leaf's first pos: only its order counts.
    # Positions with gaps are numbered first (row_number), and the run's last natural cut is
    # found by that number in a second window; dense positions are their own numbers, so one
    # window over the rows before each finds both (about 0.24 s less of 0.80 s for a
    # 500,000-row range, bench/README.md).
    numbered = sql.SQL(
        """
        SELECT pos, row_hash, logical_id, run{carried},
               (rn - coalesce(max(CASE WHEN nat THEN rn END) OVER
                    (ORDER BY pos ROWS BETWEEN UNBOUNDED PRECEDING
                                   AND 1 PRECEDING), 0) - 1) / {cap} AS part
        FROM (SELECT pos, row_hash, logical_id, nat{carried},
                     row_number() OVER w AS rn,
                     sum(nat::int) OVER w - nat::int AS run
              FROM (SELECT pos, row_hash, logical_id{carried},
                           {natural} AS nat FROM {source}) a
              WINDOW w AS (ORDER BY pos)) b
        """
        if not dense
        else """
        SELECT pos, row_hash, logical_id{carried},
               coalesce(sum(nat::int) OVER w, 0) AS run,
               (pos - coalesce(max(CASE WHEN nat THEN pos END) OVER w, 0) - 1) / {cap} AS part
        FROM (SELECT pos, row_hash, logical_id{carried},
                     {natural} AS nat FROM {source}) a
        WINDOW w AS (ORDER BY pos ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING)
        """
    ).format(
        carried=carried,
        natural=sql.SQL(NATURAL_CUT.format(h="row_hash")),
        cap=sql.Literal(MAX_LEAF_ROWS),
        source=source,
    )
    conn.execute(
        sql.SQL(
            """
            CREATE TEMP TABLE {leaves} ON COMMIT DROP AS
            SELECT leaf_no, last_pos, n, hs, ids,
                   CASE WHEN ids IS NULL THEN sha256(hs)
                        ELSE sha256(hs || convert_to(ids::text, 'UTF8')) END AS leaf_hash,
                   profile
            FROM (SELECT min(pos) AS leaf_no, max(pos) AS last_pos, count(*)::int AS n,
                         string_agg(row_hash, ''::bytea ORDER BY pos) AS hs, {ids} AS ids,
                         {profile} AS profile
                  FROM ({numbered}) c
                  GROUP BY run, part) e
            """
        ).format(
            leaves=LEAVES,
            ids=ids,
            profile=profile,
            numbered=numbered,
        )
    )


def store(
    conn: db.Conn,
    *,
    new_leaves: sql.Identifier | None = None,
    stored: sql.Identifier | None = None,
) -> list[ListRef]:
    """Store the leaves that :func:`cut` left in ``LEAVES`` (those not stored yet) and the
    lists they make. Returns the lists in order; no leaves give the one empty list.

    ``stored``: a temporary table of the leaf_no of leaves already found stored (in this
    transaction, so gc's lock has kept them since): they are not offered to the insert, which
    then probes row_leaves' key only for the others.

    ``new_leaves``: a temporary table (dropped at commit) to create with the leaves this call
    stored that were not stored before, ``(row_count, first_pos, last_pos)``: each of their
    copies in ``source``, with the pos of its first and last row (a leaf is a run of rows
    consecutive in pos order, so its rows are those with pos between the two). A leaf
    already stored names rows already stored (a leaf is written in the transaction that writes
    its rows, or after them, and gc's sweep deletes a row only with every leaf that names it),
    so the rows a load must still look up are only those of its new leaves (:mod:`.load`).
    """
    leaves, lists = LEAVES, sql.Identifier("sluiceway_lists")
    conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(lists))
    insert_all = sql.SQL(
        "INSERT INTO dsa_core.row_leaves (leaf_hash, row_count, row_hashes, logical_ids, profile) "
        "SELECT DISTINCT ON (leaf_hash) leaf_hash, n, hs, ids, profile FROM {leaves} l {skip}"
        "ORDER BY leaf_hash"
    ).format(
        leaves=leaves,
        skip=sql.SQL("")
        if stored is None
        else sql.SQL("WHERE NOT EXISTS (SELECT 1 FROM {} s WHERE s.leaf_no = l.leaf_no) ").format(
            stored
        ),
    )
    insert_leaves = insert_all + sql.SQL(" ON CONFLICT (leaf_hash) DO NOTHING")
    if new_leaves is None:
        conn.execute(insert_leaves)
    else:
        conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(new_leaves))
        conn.execute(
            sql.SQL(
                "CREATE TEMP TABLE {} (row_count int, first_pos bigint, last_pos bigint) "
                "ON COMMIT DROP"
            ).format(new_leaves)
        )
        # a first import's leaves go in without ON CONFLICT's lookup (db.inserted_unprobed),
        # every copy of them new
        copies = sql.SQL("INSERT INTO {} SELECT n, leaf_no, last_pos FROM {}").format(
            new_leaves, leaves
        )
        if stored is not None or not db.inserted_unprobed(
            conn, leaves, _ROW_LEAVES, "leaf_hash", [insert_all, copies]
        ):
            conn.execute(
                sql.SQL(
                    "WITH ins AS ({} RETURNING leaf_hash) "
                    "INSERT INTO {} SELECT l.n, l.leaf_no, l.last_pos "
                    "FROM {} l WHERE l.leaf_hash IN (SELECT leaf_hash FROM ins)"
                ).format(insert_leaves, new_leaves, leaves)
            )
    list_break = sql.SQL(LIST_BOUNDARY.format(h="leaf_hash"))
    conn.execute(
        sql.SQL(
            """
            CREATE TEMP TABLE {lists} ON COMMIT DROP AS
            SELECT list_no, count(*)::int AS leaf_count, sum(n)::bigint AS row_count,
                   string_agg(leaf_hash, ''::bytea ORDER BY leaf_no) AS leaf_hashes,
                   array_agg(ends::int ORDER BY leaf_no) AS leaf_ends
            FROM (SELECT leaf_no, n, leaf_hash, list_no,
                         sum(n) OVER (PARTITION BY list_no ORDER BY leaf_no) AS ends
                  FROM (SELECT leaf_no, n, leaf_hash,
                               sum(brk) OVER (ORDER BY leaf_no) - brk AS list_no
                        FROM (SELECT leaf_no, n, leaf_hash,
                                     (nat OR row_number() OVER (PARTITION BY run ORDER BY leaf_no)
                                             % {cap} = 0)::int AS brk
                              FROM (SELECT leaf_no, n, leaf_hash, nat,
                                           sum(nat::int) OVER (ORDER BY leaf_no) - nat::int AS run
                                    FROM (SELECT leaf_no, n, leaf_hash, {list_break} AS nat
                                          FROM {leaves}) a0) a) b) c) d
            GROUP BY list_no
            """
        ).format(
            lists=lists, leaves=leaves, list_break=list_break, cap=sql.Literal(MAX_LIST_LEAVES)
        )
    )
    rows = conn.execute(
        sql.SQL(
            """
            WITH ins AS (
                INSERT INTO dsa_core.leaf_lists
                    (list_hash, leaf_count, row_count, leaf_hashes, leaf_ends)
                SELECT DISTINCT ON (sha256(leaf_hashes)) sha256(leaf_hashes), leaf_count,
                       row_count, leaf_hashes, leaf_ends
                FROM {lists} ORDER BY sha256(leaf_hashes)
                ON CONFLICT (list_hash) DO NOTHING)
            SELECT sha256(leaf_hashes) AS list_hash, row_count FROM {lists} ORDER BY list_no
            """
        ).format(lists=lists)
    ).fetchall()
    conn.execute(sql.SQL("DROP TABLE {}, {}").format(leaves, lists))
    if not rows:
        return [ListRef(EMPTY_LIST_HASH, 0)]
    return [ListRef(bytes(r["list_hash"]), int(r["row_count"])) for r in rows]


def stitch(
    conn: db.Conn, segments: list[list[ListRef]], *, leaves_whole: bool = False
) -> list[ListRef]:
    """One commit's lists, from sequences of lists built apart: one per import range (and,
    for an append, the parent's lists first), cut as if all the rows had been built at once.

    A segment's first leaves and lists start where its range started, not where the content
    says, and its last ones end where it ended. At each seam the last list so far (which
    starts where the whole's lists start) and the next segment's first list are rebuilt from
    their rows as one run. The run's last list ends where the range's list did; if that is
    not a cut the whole has (:func:`_ends_truly`: a range's first leaves, counted from its
    start, can be leaves the whole does not have, and one of them can end a list by its
    hash, or a list cap counted from the range's start can end it), that list is rebuilt
    again with the next one, until a run ends where the whole's lists end. From there the
    segment's own cuts are the whole's. So the lists are the same wherever the ranges were
    cut: an insertion before a seam does not change the lists after it. Lists whose leaves
    carry ids of two kinds (a keyed parent, unkeyed new rows) are kept as they are.

    ``leaves_whole``: the segments' leaves are kept as they are and only the lists at each
    seam are cut again from their leaves (:func:`_relist`): a CSV range's leaves are its
    blocks (:mod:`.blocks`), cut by the file's bytes, which a cut by row hash would never meet
    again, so rebuilding rows would run to the end of every range.
    """
    out: list[ListRef] = []
    run: list[ListRef] = []  # lists to re-cut as one run; the first starts at a whole's cut
    for segment in segments:
        for n, ref in enumerate(x for x in segment if x.row_count):
            if n == 0 and out and not run:
                run = [out.pop()]  # it ended where its range did
            if not run:
                out.append(ref)
                continue
            run.append(ref)
            rebuilt = _relist(conn, run) if leaves_whole else _rebuild(conn, run)
            if rebuilt is None:  # mixed ids
                out.extend(run)
                run = []
            elif _ends_truly(conn, rebuilt[-1], leaves_whole=leaves_whole):
                out.extend(rebuilt)
                run = []
            else:
                out.extend(rebuilt[:-1])
                run = rebuilt[-1:]
    out.extend(run)
    return out or [ListRef(EMPTY_LIST_HASH, 0)]


def _ends_truly(conn: db.Conn, ref: ListRef, *, leaves_whole: bool = False) -> bool:
    """Whether a list that starts at one of the whole's cuts ends at one too, rows after it
    or not: its last leaf is whole (its last row is a natural cut, or it has the cap's rows;
    ``leaves_whole``: always) and ends the list (by its hash, or as the cap's leaf)."""
    last_leaf = "substring(ll.leaf_hashes FROM (ll.leaf_count - 1) * 32 + 1 FOR 32)"
    last_row = "substring(l.row_hashes FROM (l.row_count - 1) * 32 + 1 FOR 32)"
    whole_leaf = (
        "true"
        if leaves_whole
        else NATURAL_CUT.format(h=last_row) + f" OR l.row_count = {MAX_LEAF_ROWS}"
    )
    row = conn.execute(
        "SELECT ("
        + whole_leaf
        + ") AND ("
        + LIST_BOUNDARY.format(h=last_leaf)
        + f" OR ll.leaf_count = {MAX_LIST_LEAVES}) AS ends "
        "FROM dsa_core.leaf_lists ll JOIN dsa_core.row_leaves l ON l.leaf_hash = "
        + last_leaf
        + " WHERE ll.list_hash = %s",
        (ref.list_hash,),
    ).fetchone()
    if row is None:
        raise RuntimeError(f"The stored list {ref.list_hash.hex()} is incomplete.")
    return bool(row["ends"])


def _relist(conn: db.Conn, group: list[ListRef]) -> list[ListRef]:
    """The lists of the leaves of ``group``'s lists, in order, cut as one run (the leaves as
    they are, all stored)."""
    stored = sql.Identifier("sluiceway_relisted")
    conn.execute(sql.SQL("DROP TABLE IF EXISTS {}, {}").format(LEAVES, stored))
    conn.execute(
        sql.SQL(
            """
            CREATE TEMP TABLE {leaves} ON COMMIT DROP AS
            SELECT sum(l.row_count) OVER (ORDER BY m.n, j) AS leaf_no, 0::bigint AS last_pos,
                   l.row_count AS n, NULL::bytea AS hs, NULL::text[] AS ids, l.leaf_hash,
                   NULL::bigint[] AS profile
            FROM (SELECT g.n, ll.leaf_count, ll.leaf_hashes || ''::bytea AS hs
                  FROM unnest(%s::bytea[]) WITH ORDINALITY g(list_hash, n)
                  JOIN dsa_core.leaf_lists ll ON ll.list_hash = g.list_hash OFFSET 0) m
            CROSS JOIN LATERAL generate_series(1, m.leaf_count) j
            JOIN dsa_core.row_leaves l ON l.leaf_hash = substring(m.hs FROM (j - 1) * 32 + 1 FOR 32)
            """
        ).format(leaves=LEAVES),
        ([ref.list_hash for ref in group],),
    )
    conn.execute(
        sql.SQL("CREATE TEMP TABLE {} ON COMMIT DROP AS SELECT leaf_no FROM {}").format(
            stored, LEAVES
        )
    )
    lists = store(conn, stored=stored)
    conn.execute(sql.SQL("DROP TABLE {}").format(stored))
    if sum(x.row_count for x in lists) != sum(ref.row_count for ref in group):
        raise RuntimeError(f"The stored lists {[r.list_hash.hex() for r in group]} are incomplete.")
    return lists


def _rebuild(conn: db.Conn, group: list[ListRef]) -> list[ListRef] | None:
    """The lists of the rows of ``group``'s lists, in order, cut as one run; None when
    some of its leaves are keyed and some are not."""
    seam = sql.Identifier("sluiceway_seam")
    conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(seam))
    conn.execute(
        sql.SQL(
            """
            CREATE TEMP TABLE {seam} ON COMMIT DROP AS
            SELECT row_number() OVER (ORDER BY m.n, j, i) AS pos,
                   substring(l.row_hashes FROM (i - 1) * 32 + 1 FOR 32) AS row_hash,
                   l.logical_ids[i] AS logical_id
            -- each list read whole once, after the join (see versioning.compute_diff)
            FROM (SELECT g.n, ll.leaf_count, ll.leaf_hashes || ''::bytea AS hs
                  FROM unnest(%s::bytea[]) WITH ORDINALITY g(list_hash, n)
                  JOIN dsa_core.leaf_lists ll ON ll.list_hash = g.list_hash OFFSET 0) m
            CROSS JOIN LATERAL generate_series(1, m.leaf_count) j
            JOIN dsa_core.row_leaves l ON l.leaf_hash = substring(m.hs FROM (j - 1) * 32 + 1 FOR 32)
            CROSS JOIN LATERAL generate_series(1, l.row_count) i
            """
        ).format(seam=seam),
        ([ref.list_hash for ref in group],),
    )
    found = conn.execute(
        sql.SQL("SELECT count(*) AS n, count(logical_id) AS ids FROM {}").format(seam)
    ).fetchone()
    assert found is not None
    if found["n"] != sum(ref.row_count for ref in group):
        raise RuntimeError(f"The stored lists {[r.list_hash.hex() for r in group]} are incomplete.")
    mixed = 0 < found["ids"] < found["n"]  # some leaves keyed, some not: leave the seam be
    lists = None if mixed else build(conn, seam, keyed=found["ids"] > 0)
    conn.execute(sql.SQL("DROP TABLE {}").format(seam))
    return lists


def write_chunks(conn: db.Conn, commit_key: int, lists: list[ListRef]) -> int:
    """Point a new commit at its lists, in order; returns its row count."""
    offset = 0
    with conn.cursor().copy(
        "COPY dsa_core.commit_chunks (commit_key, chunk_no, row_offset, row_count, list_hash) "
        "FROM STDIN"
    ) as copy:
        for n, ref in enumerate(lists):
            copy.write_row((commit_key, n, offset, ref.row_count, ref.list_hash))
            offset += ref.row_count
    return offset


def commit_lists(conn: db.Conn, commit_id: str) -> list[ListRef]:
    """A commit's lists, in order."""
    rows = conn.execute(
        "SELECT k.list_hash, k.row_count FROM dsa_core.commit_chunks k "
        "JOIN dsa_core.commits c ON c.commit_key = k.commit_key "
        "WHERE c.commit_id = %s ORDER BY k.chunk_no",
        (commit_id,),
    ).fetchall()
    return [ListRef(bytes(r["list_hash"]), int(r["row_count"])) for r in rows]


def same_content(a: list[ListRef], b: list[ListRef]) -> bool:
    """True when two commits' lists are identical (empty lists do not count)."""
    return [x for x in a if x.row_count] == [x for x in b if x.row_count]
