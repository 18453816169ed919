"""Git for datasets: refs moved by compare-and-swap, keyed merges, diffs, branches, resets.

Diffs work on the commit tree (see :mod:`.tree`): lists both commits share are skipped whole
(matched by hash, wherever they sit), then leaves both share, and only the rows of the leaves
that differ are compared. Its cost grows with the difference: the lists that differ (at most
1,024 leaves each) and their differing leaves' rows, plus one pass over the two commits' lists
of lists (commit_chunks, one row per ~1,800 rows). ``DiffWork`` says what one diff read.

Rows are paired by ``logical_row_id``: the key of a keyed (upsert/delete) commit, the row
number otherwise. Rows whose content appears on both sides are unchanged even if they moved.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from psycopg import sql
from psycopg.types.json import Jsonb
from pydantic import BaseModel

from . import changes, datasets, db, schema, tree
from .errors import Conflict, InvalidRequest, MalformedFile, MergeConflict, NotFound
from .names import MAIN_REF

Op = Literal["added", "removed", "changed"]


def ref_target(conn: db.Conn, dataset_id: int, ref: str, *, lock: bool) -> str | None:
    """The commit a ref points to (None if the ref does not exist); ``lock`` holds it."""
    row = conn.execute(
        "SELECT commit_id FROM dsa_core.refs WHERE dataset_id = %s AND name = %s"
        + (" FOR UPDATE" if lock else ""),
        (dataset_id, ref),
    ).fetchone()
    return row["commit_id"] if row else None


def commit_info(conn: db.Conn, commit_id: str) -> dict[str, Any]:
    row = conn.execute(
        "SELECT commit_id, commit_key, dataset_id, parent_commit_id, row_count, columns, "
        "key_columns, committed_at, schema FROM dsa_core.commits WHERE commit_id = %s",
        (commit_id,),
    ).fetchone()
    if row is None:
        raise NotFound(f"No commit {commit_id!r}.")
    return dict(row)


def move_ref(
    conn: db.Conn,
    dataset_id: int,
    ref: str,
    *,
    expected: str | None,
    new: str,
    reason: str,
) -> None:
    """Compare-and-swap a ref: it moves only if it still points where the caller saw it.

    ``expected=None`` creates the ref and fails if it exists. Every move is in the ref log.
    """
    if expected is None:
        cur = conn.execute(
            "INSERT INTO dsa_core.refs (dataset_id, name, commit_id) VALUES (%s, %s, %s) "
            "ON CONFLICT DO NOTHING",
            (dataset_id, ref, new),
        )
    else:
        cur = conn.execute(
            "UPDATE dsa_core.refs SET commit_id = %s, updated_at = now() "
            "WHERE dataset_id = %s AND name = %s AND commit_id = %s",
            (new, dataset_id, ref, expected),
        )
    if cur.rowcount != 1:
        raise Conflict(
            f"Ref {ref!r} moved while this change was being made (expected it at "
            f"{expected or 'nothing'}); nothing was changed: retry."
        )
    conn.execute(
        "INSERT INTO dsa_core.ref_log (dataset_id, name, old_commit, new_commit, reason) "
        "VALUES (%s, %s, %s, %s, %s)",
        (dataset_id, ref, expected, new, reason),
    )


def _content_key(key_columns: list[str]) -> sql.Composable:
    """A stored row's key (same text as the load's key_expression), from its values."""
    parts = [
        sql.SQL("s.vals[array_position(cs.columns, {})]").format(sql.Literal(k))
        for k in key_columns
    ]
    if len(parts) == 1:
        return parts[0]
    return sql.SQL("jsonb_build_array({})::text").format(sql.SQL(", ").join(parts))


def keyed_rows(parent: dict[str, Any], key_columns: list[str]) -> sql.Composable:
    """SELECT (logical_id, row_hash) of a commit's rows keyed by ``key_columns``."""
    if parent.get("key_columns") == key_columns:
        return sql.SQL(
            "SELECT logical_row_id AS logical_id, row_hash "
            "FROM dsa_core.commit_row_range({}, 1, NULL)"
        ).format(sql.Literal(parent["commit_id"]))
    return sql.SQL(
        "SELECT {key} AS logical_id, r.row_hash "
        "FROM dsa_core.commit_row_range({c}, 1, NULL) r "
        "JOIN dsa_core.row_store s ON s.row_hash = r.row_hash "
        "JOIN dsa_core.column_sets cs ON cs.column_set_id = s.column_set_id"
    ).format(key=_content_key(key_columns), c=sql.Literal(parent["commit_id"]))


def merge_keyed(
    conn: db.Conn,
    job_id: Any,
    parent: dict[str, Any] | None,
    key_columns: list[str],
    *,
    upsert: bool,
    filename: str,
) -> list[tree.ListRef]:
    """The lists of parent + an upsert (or - a delete) file's rows, in key order."""
    dup = conn.execute(
        "SELECT logical_id, count(*) AS n FROM dsa_jobs.import_keyed_rows WHERE job_id = %s "
        "GROUP BY logical_id HAVING count(*) > 1 ORDER BY n DESC, logical_id LIMIT 3",
        (job_id,),
    ).fetchall()
    if dup:
        listed = ", ".join(f"{d['logical_id']!r} ({d['n']} times)" for d in dup)
        raise MalformedFile(
            f"{filename}: duplicate key in one file: {listed}. Each key may appear once per "
            f"file for key column(s) {', '.join(key_columns)}; nothing was imported."
        )
    merged = sql.Identifier("sluiceway_merged")
    conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(merged))
    parent_rows = (
        keyed_rows(parent, key_columns)
        if parent
        else sql.SQL("SELECT NULL::text AS logical_id, NULL::bytea AS row_hash WHERE false")
    )
    conn.execute(
        sql.SQL(
            """
            CREATE TEMP TABLE {m} ON COMMIT DROP AS
            WITH staged AS (
                SELECT logical_id, row_hash FROM dsa_jobs.import_keyed_rows WHERE job_id = {job}),
            parent AS ({parent_rows})
            SELECT row_number() OVER (ORDER BY logical_id COLLATE "C") AS pos, row_hash,
                   logical_id
            FROM (SELECT p.logical_id, p.row_hash FROM parent p
                  WHERE NOT EXISTS (SELECT 1 FROM staged s WHERE s.logical_id = p.logical_id)
                  UNION ALL
                  SELECT logical_id, row_hash FROM staged WHERE {upsert}) u
            """
        ).format(
            m=merged,
            job=sql.Literal(str(job_id)),
            parent_rows=parent_rows,
            upsert=sql.Literal(upsert),
        )
    )
    bad = conn.execute(
        sql.SQL(
            "SELECT logical_id, count(*) AS n FROM {} GROUP BY logical_id "
            "HAVING count(*) > 1 OR logical_id IS NULL LIMIT 3"
        ).format(merged)
    ).fetchall()
    if bad:
        listed = ", ".join(
            "a row with no key" if b["logical_id"] is None else repr(b["logical_id"]) for b in bad
        )
        raise Conflict(
            f"The dataset's current rows are not unique on {', '.join(key_columns)} "
            f"({listed}), so they cannot be matched by that key; nothing was imported."
        )
    return tree.build(conn, merged, keyed=True)


# -- diffs ----------------------------------------------------------------------------


class DiffWork(BaseModel):
    """What a diff read: the lists both commits do not share, their leaves, and the rows of
    the leaves that differ (both sides counted). It follows the difference, not the data."""

    lists_read: int
    leaves_read: int
    rows_read: int


@dataclass(frozen=True)
class DiffResult:
    table: sql.Identifier
    work: DiffWork


def _chunks(conn: db.Conn, commit_id: str | None) -> sql.Composable:
    """SELECT list_hash, row_offset, chunk_no of a commit, by its key: the planner then reads
    only that commit's rows of commit_chunks (its primary key), whatever else is stored."""
    key = None
    if commit_id is not None:
        row = conn.execute(
            "SELECT commit_key FROM dsa_core.commits WHERE commit_id = %s", (commit_id,)
        ).fetchone()
        if row is None:
            raise NotFound(f"No commit {commit_id!r}.")
        key = int(row["commit_key"])
    return sql.SQL(
        "SELECT list_hash, row_offset, chunk_no FROM dsa_core.commit_chunks WHERE commit_key = {}"
    ).format(sql.Literal(key))


def compute_diff(conn: db.Conn, a: str | None, b: str, name: str = "sluiceway_diff") -> DiffResult:
    """Fill a temporary table with the rows that differ between commits a and b.

    Columns: op, logical_row_id, before_hash, after_hash, before_row, after_row. Must run
    inside a transaction (the tables are dropped at its end). Each level (lists, leaves, rows)
    is a temporary table, analyzed, so the planner joins by hash at any size; a multiset
    match pairs the n-th copy of a hash on one side with the n-th on the other. Only the
    lists one side has and the other has not are opened, so identical lists cost nothing
    wherever they moved to (an insertion shifts row numbers, not lists).
    """
    out = sql.Identifier(name)
    # each level: every entry read (_all), then those without a partner on the other side
    lists_all, lists, leaves_all, leaves, rows_all, rows = (
        sql.Identifier(f"{name}_{x}")
        for x in ("lists_all", "lists", "leaves_all", "leaves", "rows_all", "rows")
    )
    scratch = [lists_all, lists, leaves_all, leaves, rows_all, rows]
    conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(sql.SQL(", ").join([out, *scratch])))
    conn.execute(
        sql.SQL(
            "CREATE TEMP TABLE {lists_all} ON COMMIT DROP AS "
            "SELECT 'a' AS side, * FROM ({ca}) x UNION ALL SELECT 'b', * FROM ({cb}) y"
        ).format(lists_all=lists_all, ca=_chunks(conn, a), cb=_chunks(conn, b))
    )
    # only the lists one side has more copies of are opened
    lists_read = _unpaired(conn, lists_all, lists, "list_hash", "chunk_no")
    # Each list is read (detoasted) once, after the join: a lateral read beside the join let
    # the planner read every stored list first, which cost what all the datasets hold.
    leaves_read = conn.execute(
        sql.SQL(
            """
            CREATE TEMP TABLE {leaves_all} ON COMMIT DROP AS
            SELECT m.side, substring(m.hs FROM (j - 1) * 32 + 1 FOR 32) AS leaf_hash,
                   m.row_offset + coalesce(m.ends[j - 1], 0) AS start_row
            FROM (SELECT d.side, d.row_offset, ll.leaf_count,
                         ll.leaf_hashes || ''::bytea AS hs, ll.leaf_ends || '{{}}'::int[] AS ends
                  FROM {lists} d JOIN dsa_core.leaf_lists ll ON ll.list_hash = d.list_hash
                  OFFSET 0) m
            CROSS JOIN LATERAL generate_series(1, m.leaf_count) j
            """
        ).format(leaves_all=leaves_all, lists=lists)
    ).rowcount
    _unpaired(conn, leaves_all, leaves, "leaf_hash", "start_row")
    rows_read = conn.execute(
        sql.SQL(
            """
            CREATE TEMP TABLE {rows_all} ON COMMIT DROP AS
            SELECT x.side, x.start_row + i AS row_number,
                   coalesce(l.logical_ids[i], (x.start_row + i)::text) AS logical_id,
                   substring(l.row_hashes FROM (i - 1) * 32 + 1 FOR 32) AS row_hash
            FROM {leaves} x JOIN dsa_core.row_leaves l ON l.leaf_hash = x.leaf_hash
            CROSS JOIN LATERAL generate_series(1, l.row_count) i
            """
        ).format(rows_all=rows_all, leaves=leaves)
    ).rowcount
    _unpaired(conn, rows_all, rows, "row_hash", "row_number")
    conn.execute(
        sql.SQL(
            """
            CREATE TEMP TABLE {out} ON COMMIT DROP AS
            SELECT CASE WHEN ra.logical_id IS NULL THEN 'added'
                        WHEN rb.logical_id IS NULL THEN 'removed'
                        ELSE 'changed' END AS op,
                   coalesce(ra.logical_id, rb.logical_id) AS logical_row_id,
                   ra.row_hash AS before_hash, rb.row_hash AS after_hash,
                   ra.row_number AS before_row, rb.row_number AS after_row
            FROM (SELECT * FROM {rows} WHERE side = 'a') ra
            FULL JOIN (SELECT * FROM {rows} WHERE side = 'b') rb
              ON ra.logical_id = rb.logical_id
            """
        ).format(out=out, rows=rows)
    )
    conn.execute(sql.SQL("DROP TABLE {}").format(sql.SQL(", ").join(scratch)))
    return DiffResult(
        out, DiffWork(lists_read=lists_read, leaves_read=leaves_read, rows_read=rows_read)
    )


def _unpaired(
    conn: db.Conn, source: sql.Identifier, target: sql.Identifier, key: str, order: str
) -> int:
    """Into ``target``, the entries of ``source`` (side, ``key``, ``order``, ...) that have no
    partner on the other side (:func:`unpaired_sql`), then ANALYZE ``target``: the next level
    joins it to stored lists or leaves, by index or by hash as its size says. Returns how
    many entries remain."""
    kept = conn.execute(unpaired_sql(source, target, key, order)).rowcount
    conn.execute(sql.SQL("ANALYZE {}").format(target))
    return kept


def unpaired_sql(
    source: sql.Identifier, target: sql.Identifier, key: str, order: str
) -> sql.Composed:
    """SQL: CREATE ``target`` with the entries of ``source`` that have no partner on the other
    side: the n-th copy of a key (by ``order``) on one side pairs with the n-th on the other,
    so of a key with na copies in a and nb in b, only the copies past min(na, nb) remain. One
    hash aggregate finds the keys whose counts differ; only their entries are sorted and
    numbered (most keys of a small change are on both sides once).

    ``source`` is not analyzed: the planner sizes a table never analyzed from its pages, and
    without statistics of ``key`` it guesses a few hundred keys whose counts differ, which
    still plans one hash aggregate and one hash join over ``source`` (a test EXPLAINs it).
    ANALYZE of the two sources (282,000 leaves and 238,000 rows in a 1% re-import of 1M
    rows) was about 0.15 s of the commit's 1 s change count (bench/README.md)."""
    return sql.SQL(
        """
        CREATE TEMP TABLE {target} ON COMMIT DROP AS
        SELECT * FROM (
            SELECT s.*, row_number() OVER (PARTITION BY s.side, s.{k} ORDER BY s.{o}) AS occ,
                   d.na, d.nb
            FROM {source} s
            JOIN (SELECT {k}, count(*) FILTER (WHERE side = 'a') AS na,
                         count(*) FILTER (WHERE side = 'b') AS nb
                  FROM {source} GROUP BY {k}
                  HAVING count(*) FILTER (WHERE side = 'a')
                         <> count(*) FILTER (WHERE side = 'b')) d USING ({k})) x
        WHERE occ > CASE WHEN side = 'a' THEN nb ELSE na END
        """
    ).format(target=target, source=source, k=sql.Identifier(key), o=sql.Identifier(order))


def diff_counts(conn: db.Conn, table: sql.Identifier) -> dict[str, int]:
    counts = {"added": 0, "removed": 0, "changed": 0}
    for row in conn.execute(
        sql.SQL("SELECT op, count(*) AS n FROM {} GROUP BY op").format(table)
    ).fetchall():
        counts[row["op"]] = int(row["n"])
    return counts


def record_stats(conn: db.Conn, parent: str | None, commit_id: str) -> dict[str, int]:
    """Count what a new commit changed against its parent and keep it on the commit: in
    memory (:mod:`.changes`) unless the difference is too large, then by the SQL diff."""
    if parent is None:  # everything is new: no need to look
        row = conn.execute(
            "SELECT row_count FROM dsa_core.commits WHERE commit_id = %s", (commit_id,)
        ).fetchone()
        counts = {"added": int(row["row_count"]) if row else 0, "removed": 0, "changed": 0}
    else:
        found = changes.count(conn, parent, commit_id)
        if found is None:
            with conn.transaction():
                found = diff_counts(conn, compute_diff(conn, parent, commit_id).table)
        counts = found
    conn.execute(
        "UPDATE dsa_core.commits SET stats = %s WHERE commit_id = %s",
        (Jsonb(counts), commit_id),
    )
    return counts


def same_rows(conn: db.Conn, a: str, b: str) -> bool:
    """Whether commits a and b hold the same rows in the same order, whatever their lists
    and leaves (a diff pairs rows by content, so it counts nothing for a reordering)."""
    row = conn.execute(
        "SELECT (SELECT sha256(string_agg(row_hash, ''::bytea ORDER BY row_number)) "
        "        FROM dsa_core.commit_row_range(%s)) "
        "IS NOT DISTINCT FROM (SELECT sha256(string_agg(row_hash, ''::bytea ORDER BY row_number)) "
        "        FROM dsa_core.commit_row_range(%s)) AS same",
        (a, b),
    ).fetchone()
    return bool(row and row["same"])


class DiffRow(BaseModel):
    op: Op
    logical_row_id: str
    before: dict[str, Any] | None
    after: dict[str, Any] | None
    changed_columns: list[str] | None


class Diff(BaseModel):
    dataset: str
    from_commit: str | None
    to_commit: str
    added: int
    removed: int
    changed: int
    rows: list[DiffRow]
    truncated: bool
    work: DiffWork


def diff(
    conn: db.Conn,
    dataset: str,
    a: str | None,
    b: str,
    *,
    limit: int = 1000,
) -> Diff:
    """Added, removed and changed rows from commit a to commit b (a=None: everything added)."""
    if limit < 0:
        raise InvalidRequest("limit must be >= 0.")
    db.room_for_temp_tables(conn)
    with conn.transaction():
        result = compute_diff(conn, a, b)
        table = result.table
        counts = diff_counts(conn, table)
        listed = conn.execute(
            sql.SQL(
                """
                SELECT d.op, d.logical_row_id, ra.data AS before, rb.data AS after,
                       CASE WHEN d.op = 'changed' THEN (
                           SELECT array_agg(k ORDER BY k) FROM (
                               SELECT coalesce(x.key, y.key) AS k
                               FROM jsonb_each(ra.data) x FULL JOIN jsonb_each(rb.data) y
                                 ON x.key = y.key
                               WHERE x.value IS DISTINCT FROM y.value) c) END AS changed_columns
                FROM {t} d
                LEFT JOIN dsa_core.rows ra ON ra.row_hash = d.before_hash
                LEFT JOIN dsa_core.rows rb ON rb.row_hash = d.after_hash
                ORDER BY coalesce(d.after_row, d.before_row), d.op
                LIMIT {limit}
                """
            ).format(t=table, limit=sql.Literal(limit))
        ).fetchall()
    total = sum(counts.values())
    return Diff(
        dataset=dataset,
        from_commit=a,
        to_commit=b,
        rows=[DiffRow.model_validate(r) for r in listed],
        truncated=total > len(listed),
        work=result.work,
        **counts,
    )


# -- commits made without an import: merges, reverts ------------------------------------


def make_commit(
    conn: db.Conn,
    *,
    dataset_id: int,
    ref: str,
    parent: str,
    lists: list[tree.ListRef],
    columns: list[str],
    message: str,
    author: str,
    kind: str,
    key_columns: list[str] | None,
    merge_parent: str | None = None,
    rows_from: list[str] | None = None,
) -> dict[str, Any]:
    """Insert a commit over ``lists``, count its changes, and move ``ref`` from ``parent``.

    ``rows_from``: the commits its rows come from; its schema is their schemas' union."""
    sources = rows_from or [parent, *([merge_parent] if merge_parent else [])]
    found = schema.union(columns, [commit_info(conn, c).get("schema") for c in sources])
    row = conn.execute(
        """
        INSERT INTO dsa_core.commits (commit_id, dataset_id, parent_commit_id, merge_parent_id,
            message, author, authored_at, row_count, columns, kind, key_columns, schema)
        VALUES (md5(random()::text || clock_timestamp()::text), %s, %s, %s, %s, %s, now(), %s,
                %s, %s, %s, %s)
        RETURNING commit_id, commit_key
        """,
        (
            dataset_id,
            parent,
            merge_parent,
            message,
            author,
            sum(x.row_count for x in lists),
            Jsonb(columns),
            kind,
            key_columns,
            Jsonb(schema.store(found)) if found is not None else None,
        ),
    ).fetchone()
    assert row is not None
    tree.write_chunks(conn, int(row["commit_key"]), lists)
    stats = record_stats(conn, parent, row["commit_id"])
    move_ref(conn, dataset_id, ref, expected=parent, new=row["commit_id"], reason=kind)
    return {"commit_id": row["commit_id"], "parent_commit_id": parent, "changes": stats}


def ancestors(conn: db.Conn, commit_id: str) -> sql.Composable:
    """SELECT commit_id, depth of a commit and everything it descends from (both parents)."""
    return sql.SQL(
        """
        WITH RECURSIVE anc(commit_id, depth) AS (
            SELECT {c}::text, 0
            UNION
            SELECT p.parent, anc.depth + 1 FROM anc
            JOIN dsa_core.commits c ON c.commit_id = anc.commit_id
            CROSS JOIN LATERAL (VALUES (c.parent_commit_id), (c.merge_parent_id)) p(parent)
            WHERE p.parent IS NOT NULL)
        SELECT commit_id, min(depth) AS depth FROM anc GROUP BY commit_id
        """
    ).format(c=sql.Literal(commit_id))


def merge_base(conn: db.Conn, a: str, b: str) -> str | None:
    row = conn.execute(
        sql.SQL(
            "SELECT x.commit_id FROM ({a}) x JOIN ({b}) y USING (commit_id) "
            "JOIN dsa_core.commits c USING (commit_id) "
            "ORDER BY c.committed_at DESC, x.depth LIMIT 1"
        ).format(a=ancestors(conn, a), b=ancestors(conn, b))
    ).fetchone()
    return row["commit_id"] if row else None


def three_way(
    conn: db.Conn,
    *,
    base: str,
    ours: dict[str, Any],
    theirs: str,
    what: str,
) -> tuple[list[tree.ListRef], dict[str, int]]:
    """Ours with the changes base -> theirs applied, matched by logical_row_id.

    Rows both sides changed differently are conflicts: nothing is written and the error
    lists them. Exact for keyed datasets; for positional ones rows match by row number.
    """
    theirs_diff = compute_diff(conn, base, theirs, "sluiceway_theirs").table
    ours_diff = compute_diff(conn, base, ours["commit_id"], "sluiceway_ours").table
    conflicts = conn.execute(
        sql.SQL(
            "SELECT t.logical_row_id, t.op AS theirs, o.op AS ours FROM {t} t "
            "JOIN {o} o ON o.logical_row_id = t.logical_row_id "
            "WHERE o.after_hash IS DISTINCT FROM t.after_hash "
            "ORDER BY t.logical_row_id LIMIT 20"
        ).format(t=theirs_diff, o=ours_diff)
    ).fetchall()
    if conflicts:
        total = conn.execute(
            sql.SQL(
                "SELECT count(*) AS n FROM {t} t JOIN {o} o USING (logical_row_id) "
                "WHERE o.after_hash IS DISTINCT FROM t.after_hash"
            ).format(t=theirs_diff, o=ours_diff)
        ).fetchone()
        listed = "; ".join(
            f"row {c['logical_row_id']!r} ({c['ours']} on one side, {c['theirs']} on the other)"
            for c in conflicts
        )
        raise MergeConflict(
            f"{what}: {total['n'] if total else len(conflicts)} row(s) changed differently on "
            f"both sides: {listed}. Nothing was changed.",
            conflicts=[dict(c) for c in conflicts],
        )
    keyed = bool(ours.get("key_columns"))
    order = (
        sql.SQL('logical_id COLLATE "C", src')
        if keyed
        else sql.SQL("logical_id::numeric, src, sub")
    )
    result = sql.Identifier("sluiceway_result")
    conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(result))
    conn.execute(
        sql.SQL(
            """
            CREATE TEMP TABLE {res} ON COMMIT DROP AS
            SELECT row_number() OVER (ORDER BY {order}) AS pos, row_hash, logical_id
            FROM (SELECT r.logical_row_id AS logical_id, r.row_hash, 1 AS src,
                         r.row_number AS sub
                  FROM dsa_core.commit_row_range({ours}, 1, NULL) r
                  WHERE NOT EXISTS (SELECT 1 FROM {t} t WHERE t.logical_row_id = r.logical_row_id
                                    AND t.op IN ('removed', 'changed'))
                  UNION ALL
                  SELECT logical_row_id, after_hash, 0, after_row FROM {t}
                  WHERE op IN ('added', 'changed')) u
            """
        ).format(res=result, order=order, ours=sql.Literal(ours["commit_id"]), t=theirs_diff)
    )
    return tree.build(conn, result, keyed=keyed), diff_counts(conn, theirs_diff)


# -- what users call: refs, reset, revert, merge, gc ------------------------------------

_REF = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


def check_ref(name: str) -> str:
    if not _REF.fullmatch(name or ""):
        raise InvalidRequest(
            f"Invalid ref name {name!r}: use 1-128 letters, digits, '.', '_' or '-', "
            "starting with a letter or digit."
        )
    return name


class Ref(BaseModel):
    name: str
    commit_id: str
    updated_at: datetime


def list_refs(conn: db.Conn, owner: str, name: str) -> list[Ref]:
    dataset = datasets.get(conn, owner, name)
    rows = conn.execute(
        "SELECT name, commit_id, updated_at FROM dsa_core.refs WHERE dataset_id = %s ORDER BY name",
        (dataset.dataset_id,),
    ).fetchall()
    return [Ref.model_validate(r) for r in rows]


def _locked_dataset(conn: db.Conn, owner: str, name: str) -> int:
    """The dataset's id, with its row locked: changes to one dataset's history are serial."""
    row = conn.execute(
        "SELECT id FROM dsa_core.datasets WHERE owner = %s AND name = %s FOR UPDATE",
        (owner, datasets.check_name(name)),
    ).fetchone()
    if row is None:
        raise NotFound(f"No dataset {name!r}.")
    return int(row["id"])


def create_branch(
    conn: db.Conn, owner: str, name: str, branch: str, start: str | None = None
) -> Ref:
    """A new ref at ``start`` (a commit, ref or time; default main)."""
    check_ref(branch)
    with conn.transaction():
        dataset_id = _locked_dataset(conn, owner, name)
        _, commit = datasets.resolve_commit(conn, owner, name, start)
        if ref_target(conn, dataset_id, branch, lock=True) is not None:
            raise Conflict(f"Ref {branch!r} of {name!r} already exists.")
        move_ref(conn, dataset_id, branch, expected=None, new=commit.commit_id, reason="branch")
    return next(r for r in list_refs(conn, owner, name) if r.name == branch)


def delete_ref(conn: db.Conn, owner: str, name: str, ref: str) -> None:
    if ref == MAIN_REF:
        raise InvalidRequest("main cannot be deleted; reset it instead.")
    with conn.transaction():
        dataset_id = _locked_dataset(conn, owner, name)
        old = ref_target(conn, dataset_id, ref, lock=True)
        if old is None:
            raise NotFound(f"No ref {ref!r} in {name!r}.")
        conn.execute(
            "DELETE FROM dsa_core.refs WHERE dataset_id = %s AND name = %s", (dataset_id, ref)
        )
        conn.execute(
            "INSERT INTO dsa_core.ref_log (dataset_id, name, old_commit, new_commit, reason) "
            "VALUES (%s, %s, %s, NULL, 'delete')",
            (dataset_id, ref, old),
        )


def reset(
    conn: db.Conn, owner: str, name: str, ref: str, to: str, expected: str | None = None
) -> Ref:
    """Move ``ref`` to ``to`` (a commit of the dataset). The commits it leaves stay in the log."""
    with conn.transaction():
        dataset_id = _locked_dataset(conn, owner, name)
        current = ref_target(conn, dataset_id, ref, lock=True)
        if current is None:
            raise NotFound(f"No ref {ref!r} in {name!r}.")
        if expected is not None and expected != current:
            raise Conflict(f"Ref {ref!r} is at {current}, not {expected}; nothing was changed.")
        _, target = datasets.resolve_commit(conn, owner, name, to)
        if target.commit_id != current:
            move_ref(conn, dataset_id, ref, expected=current, new=target.commit_id, reason="reset")
    return next(r for r in list_refs(conn, owner, name) if r.name == ref)


def revert(
    conn: db.Conn, owner: str, name: str, commit: str, ref: str = MAIN_REF
) -> dict[str, Any]:
    """A new commit on ``ref`` that undoes ``commit``'s changes (conflicts are refused)."""
    with conn.transaction():
        dataset_id = _locked_dataset(conn, owner, name)
        head = ref_target(conn, dataset_id, ref, lock=True)
        if head is None:
            raise NotFound(f"No ref {ref!r} in {name!r}.")
        _, undone = datasets.resolve_commit(conn, owner, name, commit)
        if undone.parent_commit_id is None:
            raise InvalidRequest(
                f"{undone.commit_id} is the first commit of {name!r}; there is nothing before it "
                "to go back to (reset or delete the dataset instead)."
            )
        ours = commit_info(conn, head)
        lists, changes = three_way(
            conn,
            base=undone.commit_id,
            ours=ours,
            theirs=undone.parent_commit_id,
            what=f"Reverting {undone.commit_id[:12]} on {ref}",
        )
        if tree.same_content(lists, tree.commit_lists(conn, head)):
            return {"commit_id": head, "unchanged": True, "changes": changes}
        return make_commit(
            conn,
            dataset_id=dataset_id,
            ref=ref,
            parent=head,
            lists=lists,
            columns=list(ours["columns"]),
            message=f"Revert {undone.commit_id[:12]}: {undone.message}",
            author=owner,
            kind="revert",
            key_columns=ours.get("key_columns"),
            rows_from=[head, undone.parent_commit_id],
        )


def merge(
    conn: db.Conn, owner: str, name: str, source: str, into: str = MAIN_REF
) -> dict[str, Any]:
    """Merge ref ``source`` into ref ``into``: fast-forward, or a three-way merge by row."""
    with conn.transaction():
        dataset_id = _locked_dataset(conn, owner, name)
        ours_id = ref_target(conn, dataset_id, into, lock=True)
        theirs_id = ref_target(conn, dataset_id, source, lock=False)
        if ours_id is None or theirs_id is None:
            raise NotFound(f"No ref {into if ours_id is None else source!r} in {name!r}.")
        base = merge_base(conn, ours_id, theirs_id)
        if base == theirs_id:
            return {"result": "up-to-date", "commit_id": ours_id}
        if base == ours_id:
            move_ref(conn, dataset_id, into, expected=ours_id, new=theirs_id, reason="merge")
            return {"result": "fast-forward", "commit_id": theirs_id}
        if base is None:
            raise InvalidRequest(f"{source!r} and {into!r} share no history; nothing to merge.")
        ours = commit_info(conn, ours_id)
        theirs = commit_info(conn, theirs_id)
        lists, changes = three_way(
            conn, base=base, ours=ours, theirs=theirs_id, what=f"Merging {source} into {into}"
        )
        columns = list(ours["columns"]) + [c for c in theirs["columns"] if c not in ours["columns"]]
        made = make_commit(
            conn,
            dataset_id=dataset_id,
            ref=into,
            parent=ours_id,
            lists=lists,
            columns=columns,
            message=f"Merge {source} into {into}",
            author=owner,
            kind="merge",
            key_columns=ours.get("key_columns"),
            merge_parent=theirs_id,
        )
        return {"result": "merged", "merged_changes": changes, **made}


def gc(
    conn: db.Conn,
    owner: str,
    name: str,
    *,
    keep: int | None = None,
    keep_since: datetime | None = None,
) -> dict[str, int]:
    """Drop the dataset's commits that no ref keeps, then every row no commit uses.

    Kept: every ref's commit, and its ``keep`` nearest ancestors and/or those committed since
    ``keep_since`` (both None: everything reachable from a ref). A kept commit whose parent is
    dropped becomes a root. Rows are shared by all datasets, so the sweep is global and holds
    the lock every load takes shared, so no import can start to reuse a row gc is deleting.
    """
    with conn.transaction():
        dataset_id = _locked_dataset(conn, owner, name)
        refs = conn.execute(
            "SELECT commit_id FROM dsa_core.refs WHERE dataset_id = %s", (dataset_id,)
        ).fetchall()
        kept: set[str] = set()
        for r in refs:
            for row in conn.execute(
                sql.SQL(
                    "SELECT a.commit_id, a.depth, c.committed_at FROM ({}) a "
                    "JOIN dsa_core.commits c USING (commit_id)"
                ).format(ancestors(conn, r["commit_id"]))
            ).fetchall():
                by_count = keep is None or row["depth"] < keep
                by_time = keep_since is None or row["committed_at"] >= keep_since
                if row["depth"] == 0 or (
                    (by_count and by_time)
                    if keep is not None and keep_since is not None
                    else (by_count if keep is not None else by_time)
                ):
                    kept.add(row["commit_id"])
        dropped = [
            r["commit_id"]
            for r in conn.execute(
                "SELECT commit_id FROM dsa_core.commits WHERE dataset_id = %s "
                "AND NOT (commit_id = ANY(%s))",
                (dataset_id, list(kept)),
            ).fetchall()
        ]
        if dropped:
            conn.execute(
                "UPDATE dsa_core.commits SET parent_commit_id = NULL "
                "WHERE parent_commit_id = ANY(%s)",
                (dropped,),
            )
            conn.execute(
                "UPDATE dsa_core.commits SET merge_parent_id = NULL WHERE merge_parent_id = ANY(%s)",
                (dropped,),
            )
            conn.execute("DELETE FROM dsa_core.commits WHERE commit_id = ANY(%s)", (dropped,))
        swept = sweep(conn)
    return {"commits_dropped": len(dropped), **swept}


GC_LOCK = tree.GC_LOCK  # loads and every tree.build take it shared, the sweep exclusive


def sweep(conn: db.Conn) -> dict[str, int]:
    """Delete lists, leaves and rows that no commit and no running import uses."""
    conn.execute("SELECT pg_advisory_xact_lock(%s)", (GC_LOCK,))
    lists = conn.execute(
        """
        DELETE FROM dsa_core.leaf_lists ll
        WHERE octet_length(ll.list_hash) = 32 AND ll.leaf_count > 0
          AND NOT EXISTS (SELECT 1 FROM dsa_core.commit_chunks k WHERE k.list_hash = ll.list_hash)
          AND NOT EXISTS (SELECT 1 FROM dsa_jobs.import_chunks i
                          JOIN dsa_jobs.analysis_runs a ON a.id = i.job_id
                          WHERE ll.list_hash = ANY(i.list_hashes)
                            AND a.status IN ('pending', 'running'))
        """
    ).rowcount
    conn.execute("DROP TABLE IF EXISTS sluiceway_live")
    conn.execute(
        """
        CREATE TEMP TABLE sluiceway_live ON COMMIT DROP AS
        SELECT DISTINCT substring(m.hs FROM (j - 1) * 32 + 1 FOR 32) AS leaf_hash
        FROM dsa_core.leaf_lists ll CROSS JOIN LATERAL ("""
        + tree.DETOAST_LIST_TEXT
        + """) m
        CROSS JOIN LATERAL generate_series(1, ll.leaf_count) j
        """
    )
    leaves = conn.execute(
        "DELETE FROM dsa_core.row_leaves l WHERE NOT EXISTS "
        "(SELECT 1 FROM sluiceway_live v WHERE v.leaf_hash = l.leaf_hash)"
    ).rowcount
    conn.execute("DROP TABLE sluiceway_live")
    if leaves:  # the blocks that named a deleted leaf (sluiceway.blocks)
        conn.execute(
            "DELETE FROM dsa_core.block_leaves b WHERE NOT EXISTS "
            "(SELECT 1 FROM dsa_core.row_leaves l WHERE l.leaf_hash = b.leaf_hash)"
        )
    conn.execute(
        """
        CREATE TEMP TABLE sluiceway_live ON COMMIT DROP AS
        SELECT DISTINCT substring(l.row_hashes FROM (i - 1) * 32 + 1 FOR 32) AS row_hash
        FROM dsa_core.row_leaves l CROSS JOIN LATERAL generate_series(1, l.row_count) i
        UNION
        SELECT k.row_hash FROM dsa_jobs.import_keyed_rows k
        JOIN dsa_jobs.analysis_runs a ON a.id = k.job_id
        WHERE a.status IN ('pending', 'running') AND k.row_hash IS NOT NULL
        """
    )
    rows = conn.execute(
        "DELETE FROM dsa_core.row_store s WHERE NOT EXISTS "
        "(SELECT 1 FROM sluiceway_live v WHERE v.row_hash = s.row_hash)"
    ).rowcount
    conn.execute("DROP TABLE sluiceway_live")
    return {"lists_deleted": lists, "leaves_deleted": leaves, "rows_deleted": rows}


class RowsPage(BaseModel):
    dataset: str
    commit_id: str
    columns: list[str]
    offset: int
    rows: list[dict[str, Any]]


def list_rows(
    conn: db.Conn, owner: str, name: str, spec: str | None, offset: int = 0, limit: int = 100
) -> RowsPage:
    """Rows offset+1 .. offset+limit of a commit (by id, ref or time), with logical ids."""
    if offset < 0 or not 0 <= limit <= 10_000:
        raise InvalidRequest("offset must be >= 0 and limit between 0 and 10,000.")
    _, commit = datasets.resolve_commit(conn, owner, name, spec)
    rows = conn.execute(
        "SELECT r.row_number, r.logical_row_id, d.data FROM "
        "dsa_core.commit_row_range(%s, %s, %s) r JOIN dsa_core.rows d USING (row_hash) "
        "ORDER BY r.row_number",
        (commit.commit_id, offset + 1, offset + 1 + limit),
    ).fetchall()
    return RowsPage(
        dataset=name,
        commit_id=commit.commit_id,
        columns=commit.columns,
        offset=offset,
        rows=[dict(r) for r in rows],
    )
