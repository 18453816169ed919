"""Git for datasets: refs moved by compare-and-swap, keyed merges, diffs, branches, resets.

Diffs work on the commit tree (see :mod:`.tree`): lists both commits share are skipped whole,
then leaves both share, and only the rows of the leaves that differ are compared. Its cost
grows with the difference (plus one pass over the two commits' leaf hashes, 2 bytes a row),
not with the rows of the dataset.

Rows are paired by ``logical_row_id``: the key of a keyed (upsert/delete) commit, the row
number otherwise. Rows whose content appears on both sides are unchanged even if they moved.
"""

from __future__ import annotations

from typing import Any, Literal

from psycopg import sql
from psycopg.types.json import Jsonb
from pydantic import BaseModel

from . import db, tree
from .errors import Conflict, InvalidRequest, MalformedFile, NotFound

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
        "key_columns, committed_at FROM dsa_core.commits WHERE commit_id = %s",
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
    return tree.build(conn, merged, keyed=True, split_lists=True)


# -- diffs ----------------------------------------------------------------------------


def _chunks(commit_id: str | None) -> sql.Composable:
    if commit_id is None:
        return sql.SQL(
            "SELECT NULL::bytea AS list_hash, 0::bigint AS row_offset, 0 AS chunk_no WHERE false"
        )
    return sql.SQL(
        "SELECT k.list_hash, k.row_offset, k.chunk_no FROM dsa_core.commit_chunks k "
        "JOIN dsa_core.commits c ON c.commit_key = k.commit_key WHERE c.commit_id = {}"
    ).format(sql.Literal(commit_id))


def compute_diff(conn: db.Conn, a: str | None, b: str) -> sql.Identifier:
    """Fill a temporary table with the rows that differ between commits a and b.

    Columns: op, logical_row_id, before_hash, after_hash, before_row, after_row. Must run
    inside a transaction (the table is dropped at its end).
    """
    out = sql.Identifier("sluiceway_diff")
    conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(out))
    conn.execute(
        sql.SQL(
            """
            CREATE TEMP TABLE {out} ON COMMIT DROP AS
            WITH la AS (SELECT 'a' AS side, list_hash, row_offset,
                               row_number() OVER (PARTITION BY list_hash ORDER BY chunk_no) AS occ
                        FROM ({ca}) x),
                 lb AS (SELECT 'b' AS side, list_hash, row_offset,
                               row_number() OVER (PARTITION BY list_hash ORDER BY chunk_no) AS occ
                        FROM ({cb}) x),
                 lists AS (
                    SELECT * FROM la WHERE NOT EXISTS (
                        SELECT 1 FROM lb WHERE lb.list_hash = la.list_hash AND lb.occ = la.occ)
                    UNION ALL
                    SELECT * FROM lb WHERE NOT EXISTS (
                        SELECT 1 FROM la WHERE la.list_hash = lb.list_hash AND la.occ = lb.occ)),
                 leaves AS (
                    SELECT d.side, substring(ll.leaf_hashes FROM (j - 1) * 32 + 1 FOR 32) AS leaf_hash,
                           d.row_offset + coalesce(ll.leaf_ends[j - 1], 0) AS start_row
                    FROM lists d JOIN dsa_core.leaf_lists ll ON ll.list_hash = d.list_hash
                    CROSS JOIN LATERAL generate_series(1, ll.leaf_count) j),
                 nleaves AS (
                    SELECT *, row_number() OVER (PARTITION BY side, leaf_hash ORDER BY start_row) AS occ
                    FROM leaves),
                 dleaves AS (
                    SELECT * FROM nleaves x WHERE NOT EXISTS (
                        SELECT 1 FROM nleaves y WHERE y.side <> x.side
                        AND y.leaf_hash = x.leaf_hash AND y.occ = x.occ)),
                 rows_ AS (
                    SELECT x.side, x.start_row + i AS row_number,
                           coalesce(l.logical_ids[i], (x.start_row + i)::text) AS logical_id,
                           substring(l.row_hashes FROM (i - 1) * 32 + 1 FOR 32) AS row_hash
                    FROM dleaves x JOIN dsa_core.row_leaves l ON l.leaf_hash = x.leaf_hash
                    CROSS JOIN LATERAL generate_series(1, l.row_count) i),
                 nrows AS (
                    SELECT *, row_number() OVER (PARTITION BY side, row_hash ORDER BY row_number) AS occ
                    FROM rows_),
                 drows AS (
                    SELECT * FROM nrows x WHERE NOT EXISTS (
                        SELECT 1 FROM nrows y WHERE y.side <> x.side
                        AND y.row_hash = x.row_hash AND y.occ = x.occ))
            SELECT CASE WHEN ra.logical_id IS NULL THEN 'added'
                        WHEN rb.logical_id IS NULL THEN 'removed'
                        ELSE 'changed' END AS op,
                   coalesce(ra.logical_id, rb.logical_id) AS logical_row_id,
                   ra.row_hash AS before_hash, rb.row_hash AS after_hash,
                   ra.row_number AS before_row, rb.row_number AS after_row
            FROM (SELECT * FROM drows WHERE side = 'a') ra
            FULL JOIN (SELECT * FROM drows WHERE side = 'b') rb
              ON ra.logical_id = rb.logical_id
            """
        ).format(out=out, ca=_chunks(a), cb=_chunks(b))
    )
    return out


def diff_counts(conn: db.Conn, table: sql.Identifier) -> dict[str, int]:
    counts = {"added": 0, "removed": 0, "changed": 0}
    for row in conn.execute(
        sql.SQL("SELECT op, count(*) AS n FROM {} GROUP BY op").format(table)
    ).fetchall():
        counts[row["op"]] = int(row["n"])
    return counts


def record_stats(conn: db.Conn, parent: str | None, commit_id: str) -> dict[str, int]:
    """Count what a new commit changed against its parent and keep it on the commit."""
    with conn.transaction():
        counts = diff_counts(conn, compute_diff(conn, parent, commit_id))
    conn.execute(
        "UPDATE dsa_core.commits SET stats = %s WHERE commit_id = %s",
        (Jsonb(counts), commit_id),
    )
    return counts


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
    with conn.transaction():
        table = compute_diff(conn, a, b)
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
        **counts,
    )
