"""Stage 2b, load: one byte range streamed from S3 into PostgreSQL with COPY.

State "Load one range" of the import Map. PostgreSQL parses the CSV (its C parser applies
the same quote rule the planner used to cut the ranges), then hashes each row's canonical
JSON and adds the rows it has never seen to ``dsa_core.rows``. Everything a range writes
happens in one transaction, so a retried range leaves each row exactly once.
"""

from __future__ import annotations

import sys
from array import array
from dataclasses import dataclass, field
from itertools import accumulate, compress
from operator import itemgetter
from typing import Any

import psycopg
from psycopg import sql
from psycopg.types.json import Jsonb

from . import (
    blocks,
    csvsplit,
    db,
    faults,
    formats,
    jobs,
    readers,
    rejects,
    schema,
    tree,
    versioning,
)
from .errors import MalformedFile
from .plan import ChunkItem, _read, chunk_task, source_object
from .settings import Settings


def _column_idents(count: int) -> list[sql.Identifier]:
    return [sql.Identifier(f"c{i}") for i in range(1, count + 1)]


def create_raw_table(
    table: sql.Identifier, count: int, extra: list[sql.Identifier] | None = None
) -> sql.Composed:
    """SQL: CREATE a range's raw table, dropped at commit: ord (numbering the rows in the
    order COPY writes them), then c1..c{count} and ``extra`` columns, all text.

    ord's sequence is the table's own, used by this session alone, so a cache of numbers
    still gives 1..N; it spares COPY a sequence update a row (one backend, 480,000 rows of
    the benchmark file, best of 5: 0.272 s against 0.324 s uncached; bench/README.md)."""
    return sql.SQL(
        "CREATE TEMP TABLE {} (ord bigint GENERATED ALWAYS AS IDENTITY (CACHE 10000), {}) "
        "ON COMMIT DROP"
    ).format(
        table,
        sql.SQL(", ").join(
            sql.SQL("{} text").format(c) for c in [*_column_idents(count), *(extra or [])]
        ),
    )


def key_expression(key_columns: list[str], columns: list[str]) -> sql.Composable:
    """A row's key as text, from the range's raw columns: the value itself for one key column,
    a JSON array of the values for several (so ``a,b`` + ``c`` never equals ``a`` + ``b,c``)."""
    idents = [sql.Identifier(f"c{columns.index(k) + 1}") for k in key_columns]
    if len(idents) == 1:
        return idents[0]
    return sql.SQL("jsonb_build_array({})::text").format(sql.SQL(", ").join(idents))


_ARRAY_SPACE = " \t\n\r\v\f"  # what PostgreSQL's array_out counts as white space


def array_text(values: list[str]) -> str:
    """PostgreSQL's text of a text[] without NULLs (``array_out``), computed here.

    An element is double-quoted when it is empty, is ``NULL`` in any case, or holds a brace, a
    comma, a quote, a backslash or white space; inside quotes ``"`` and ``\\`` get a backslash.
    hash_rows embeds the column names' text as a literal, so PostgreSQL does not rebuild it
    for every row; a test compares this with PostgreSQL's own cast on hostile names.
    """

    def element(value: str) -> str:
        if (
            value == ""
            or (value.isascii() and value.upper() == "NULL")
            or any(ch in '{},"\\' or ch in _ARRAY_SPACE for ch in value)
        ):
            return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
        return value

    return "{" + ",".join(element(v) for v in values) + "}"


def sorted_order(columns: list[str]) -> list[int]:
    """The columns' indexes in name order: the order of a row's hashed values (``vals``)."""
    return sorted(range(len(columns)), key=lambda i: columns[i])


def _sorted_vals(columns: list[str]) -> sql.Composed:
    """SQL: the raw columns' values as a text array, in name order."""
    return sql.SQL("ARRAY[{}]").format(
        sql.SQL(", ").join(sql.Identifier(f"c{i + 1}") for i in sorted_order(columns))
    )


def _row_hash(columns: list[str], vals: sql.Composable) -> sql.Composed:
    """SQL: the row hash of ``vals`` (the values in name order, :func:`_sorted_vals`)."""
    return sql.SQL("sha256(convert_to({names} || {vals}::text, 'UTF8'))").format(
        names=sql.Literal(array_text(sorted(columns))), vals=vals
    )


@dataclass
class NewBlocks:
    """A range's blocks to COPY, in order: each one's number among the range's blocks, its
    first ord in the raw table and its first position in the range (8 bytes each a block,
    where a tuple of three ints took about 150)."""

    numbers: array[int] = field(default_factory=lambda: array("q"))
    ords: array[int] = field(default_factory=lambda: array("q"))
    positions: array[int] = field(default_factory=lambda: array("q"))


def _int_array(values: array[int]) -> sql.Composable:
    """A literal array of integers (written here: psycopg's list dumper kept a Python int
    for each of them and the text several times over); never empty (width_bucket)."""
    return sql.Literal("{" + (",".join(map(str, values)) or "0") + "}")


def hash_rows(
    raw_table: sql.Identifier,
    hashed_table: sql.Identifier,
    columns: list[str],
    *,
    key: sql.Composable,
    extra: list[sql.Identifier] | None = None,
    codes: list[sql.Composable] | None = None,
    blocks: NewBlocks | None = None,
) -> sql.Composed:
    """CREATE the range's hashed table (pos, row_hash, vals, logical_id, code1..codeK) from
    its raw one.

    ``blocks``: the raw table holds a range's new blocks only (:func:`_copy_new_blocks`):
    each new block's number, first ord in the raw table and first position in the range (as
    literal arrays, :func:`_int_array`: a parameter would have the query's text parsed for
    placeholders, and a column name may hold a percent sign). A row's block is found once, by a binary search of
    the first ords (``width_bucket``); the table then has a block_no column too.

    A row's hash is sha256 over its canonical content: the sorted column names, then the
    values in that order, as PostgreSQL's text of two text arrays (the names' text computed
    once, by ``array_text``, rather than cast for every row). It is the row's address in
    row_store, so it must never change. ``key`` gives the logical id (from the raw columns and
    ``extra`` ones). ``codes``: each row's profile codes (:func:`schema.row_codes` over the raw
    columns), computed in the same pass over the raw text.

    OFFSET 0 keeps the subquery as written: pulled up, its array would be built twice a row,
    once for the hash and once for the stored ``vals`` (one range of 500,000 rows: 1.05-1.08 s
    against 1.14-1.18 s without codes, 1.85-2.00 s against 2.03-2.10 s with them;
    bench/README.md).
    """
    position: sql.Composable = sql.SQL("ord AS pos")
    bucket: sql.Composable = sql.SQL("")
    if blocks is not None:
        b, s, f = (_int_array(x) for x in (blocks.numbers, blocks.ords, blocks.positions))
        position = sql.SQL(
            "({b}::int[])[k] AS block_no, ord - ({s}::bigint[])[k] + ({f}::bigint[])[k] AS pos"
        ).format(b=b, s=s, f=f)
        bucket = sql.SQL("width_bucket(ord, {}::bigint[]) AS k, ").format(s)
    return sql.SQL(
        "CREATE TEMP TABLE {h} ON COMMIT DROP AS SELECT {position}, "
        "{row_hash} AS row_hash, vals, {key} AS logical_id{codes} "
        "FROM (SELECT ord, {bucket}{vals} AS vals, {key_source} FROM {raw} OFFSET 0) s"
    ).format(
        position=position,
        bucket=bucket,
        codes=sql.SQL("").join(
            sql.SQL(", {} AS {}").format(c, sql.Identifier(f"code{k}"))
            for k, c in enumerate(codes or [], 1)
        ),
        h=hashed_table,
        row_hash=_row_hash(columns, sql.Identifier("vals")),
        vals=_sorted_vals(columns),
        key=key,
        key_source=sql.SQL(", ").join([*_column_idents(len(columns)), *(extra or [])]),
        raw=raw_table,
    )


def _stage_keyed_rows(
    conn: db.Conn,
    hashed_table: sql.Identifier,
    item: ChunkItem,
    chunk: dict[str, Any],
    params: dict[str, Any],
    key_columns: list[str],
) -> int:
    """Keep a keyed range's (key, row hash) pairs for the commit, which merges them with the parent."""
    missing = conn.execute(
        sql.SQL("SELECT pos FROM {} WHERE logical_id IS NULL ORDER BY pos LIMIT 1").format(
            hashed_table
        )
    ).fetchone()
    if missing is not None:
        filename = params.get("filename") or params["key"]
        raise MalformedFile(
            f"{filename}: record {missing['pos']:,} of the range starting at line "
            f"{chunk['first_line']:,} has no value for the key column(s) "
            f"{', '.join(key_columns)}.",
            file=filename,
            line=chunk["first_line"],
        )
    conn.execute(
        "DELETE FROM dsa_jobs.import_keyed_rows WHERE job_id = %s AND chunk_no = %s",
        (item.job_id, item.chunk_no),
    )
    return conn.execute(
        sql.SQL(
            "INSERT INTO dsa_jobs.import_keyed_rows (job_id, chunk_no, ord, logical_id, row_hash) "
            "SELECT %s, %s, pos, logical_id, row_hash FROM {}"
        ).format(hashed_table),
        (item.job_id, item.chunk_no),
    ).rowcount


def load_chunk(event: dict[str, Any], settings: Settings | None = None) -> dict[str, Any]:
    """Load one resolved range; returns its row count."""
    return chunk_task(event, settings, _load_chunk)


def _load_chunk(
    conn: db.Conn,
    item: ChunkItem,
    job: dict[str, Any],
    chunk: dict[str, Any],
    settings: Settings,
    filtered: rejects.Filtered | None = None,
    reuse: bool = True,
) -> dict[str, Any]:
    """``filtered``: a CSV range COPY refused, re-read with its bad records set aside.
    ``reuse``: a CSV range may take its blocks found stored as they are (:mod:`.blocks`)."""
    if chunk["status"] == "loaded":  # a retry after a lost response: already done
        return {"chunk_no": item.chunk_no, "rows": chunk["row_count"]}
    params, checkpoint = job["run_parameters"], job["checkpoint"]
    columns: list[str] = checkpoint["columns"]
    bucket, key = source_object(job)
    fmt = checkpoint.get("format") or "csv"
    filename = params.get("filename") or params["key"]
    start, end = chunk["start_byte"], chunk["end_byte"]
    first_line = chunk["first_line"]
    if fmt == "json":
        start, end = readers.array_range(bucket, key, chunk, checkpoint, settings)
    by_blocks = _reuses_blocks(fmt, params, checkpoint, settings)
    if by_blocks:  # its ends moved to blocks' ends, whether it then finds blocks or not
        start, end, first_line = _block_bounds(conn, item, bucket, key, chunk, settings)
    # Session-local tables dropped at commit: nothing to clean up after a failure, no WAL.
    raw_table, hashed_table = sql.Identifier("sluiceway_raw"), sql.Identifier("sluiceway_hashed")
    # a workbook's rows carry their logical id, sheet:row
    rid = [sql.Identifier("rid")] if fmt == "xlsx" else []
    cols = sql.SQL(", ").join([*_column_idents(len(columns)), *rid])

    inject = faults.take(conn, item.job_id, "load", settings)
    faults.stall(conn, item.job_id, "load", settings)
    try:
        with conn.transaction():
            db.room_for_temp_tables(conn)  # a range's staging tables, in memory
            # gc's sweep takes this lock exclusively: it never deletes a row this range reuses.
            conn.execute("SELECT pg_advisory_xact_lock_shared(%s)", (versioning.GC_LOCK,))
            conn.execute(sql.SQL("DROP TABLE IF EXISTS {}, {}").format(raw_table, hashed_table))
            conn.execute(create_raw_table(raw_table, len(columns), rid))
            if fmt in ("csv", "tsv"):
                copy_sql = sql.SQL(
                    "COPY {} ({}) FROM STDIN (FORMAT csv, DELIMITER {}, ENCODING {})"
                ).format(
                    raw_table,
                    cols,
                    sql.Literal(checkpoint.get("delimiter") or ","),
                    sql.Literal(formats.postgres_encoding(checkpoint.get("encoding") or "utf-8")),
                )
            else:  # rows parsed here, written in COPY's text format
                copy_sql = sql.SQL("COPY {} ({}) FROM STDIN").format(raw_table, cols)
            src = readers.Source(bucket, key, start, end, first_line, columns, filename, settings)
            layout: _Layout | None = None
            with conn.cursor() as cur, cur.copy(copy_sql) as copy:
                if reuse and by_blocks:
                    layout = _copy_new_blocks(copy, src, checkpoint, settings)
                elif fmt == "jsonl" and rejects.tolerant(checkpoint):
                    filtered = rejects.copy_jsonl(copy, src)
                elif fmt == "jsonl":
                    readers.copy_jsonl(copy, src)
                elif fmt == "xlsx":
                    readers.copy_sheet(copy, src, item.chunk_no)
                elif fmt == "json":
                    readers.copy_array(copy, src)
                elif filtered is not None:
                    filtered.write_good(copy)
                else:
                    for piece in src.pieces():  # the range streamed, never held whole
                        copy.write(piece)
            if layout is not None:
                _check_copied(conn, raw_table, layout)
            rejected = rejects.record_range(
                conn,
                raw_table,
                item=item,
                job=job,
                chunk=chunk,
                start=start,
                end=end,
                filtered=filtered,
                settings=settings,
            )
            if layout is not None:
                rows = _store_blocks(conn, raw_table, hashed_table, layout, item, checkpoint)
            else:
                rows = _hash_and_store(
                    conn, raw_table, hashed_table, item, job, chunk, rejected, rid
                )
            conn.execute(
                "UPDATE dsa_jobs.import_chunks SET row_count = %s, status = 'loaded', "
                "error = NULL, error_code = NULL, updated_at = now() "
                "WHERE job_id = %s AND chunk_no = %s",
                (rows, item.job_id, item.chunk_no),
            )
            jobs.add_progress(
                conn, item.job_id, bytes_done=end - start, rows_done=rows, chunks_done=1
            )
            if rejected:
                jobs.add_counter(conn, item.job_id, "rejected_rows", rejected)
            if inject:  # everything done but the commit: all of it must roll back
                raise faults.fail("load")
    except _NoBlocks:  # the range's bytes are not what blocks can take: all of them to COPY
        return _load_chunk(conn, item, job, chunk, settings, filtered, reuse=False)
    except psycopg.DataError as exc:
        if fmt in ("csv", "tsv") and filtered is None and rejects.tolerant(checkpoint):
            # bad records are tolerated: load the range's good ones, report the others
            return _load_chunk(
                conn, item, job, chunk, settings, rejects.split_csv_range(job, chunk, settings)
            )
        if fmt not in ("csv", "tsv"):
            raise MalformedFile(
                f"{filename}: the records in bytes {start:,}-{end:,} could not be loaded: "
                f"{exc.diag.message_primary or exc}",
                file=filename,
                byte_offset=start,
            ) from exc
        read = {**chunk, "start_byte": start, "end_byte": end, "first_line": first_line}
        raise _explain(exc, job, read, len(columns), settings) from exc
    return {"chunk_no": item.chunk_no, "rows": rows}


def _hash_and_store(
    conn: db.Conn,
    raw_table: sql.Identifier,
    hashed_table: sql.Identifier,
    item: ChunkItem,
    job: dict[str, Any],
    chunk: dict[str, Any],
    rejected: int,
    rid: list[sql.Identifier],
) -> int:
    """A range's rows from its raw table: hashed, profiled, cut into leaves and lists, and the
    new ones stored (the range's lists kept on its row). Returns the range's row count."""
    params, checkpoint = job["run_parameters"], job["checkpoint"]
    columns: list[str] = checkpoint["columns"]
    mode = params.get("options", {}).get("mode", "replace")
    key_columns: list[str] | None = checkpoint.get("key_columns")
    # A range's profile is over its values in name order, as the row hashes take them,
    # so a leaf's profile is its content's (tree.cut). A delete file lists keys: its
    # values say nothing of types.
    profiled = mode != "delete"
    names, order = sorted(columns), sorted_order(columns)
    sample = schema.sample_masks(conn, raw_table, len(columns)) if profiled else []
    sample = [sample[i] for i in order] if sample else []
    # Each row's profile codes while it is hashed, unless most of the range's rows
    # are stored already (a re-import): then only the leaves not found stored are
    # profiled, once they are cut (_profile_new_leaves).
    inline = profiled and (bool(key_columns) or not _mostly_stored(conn, raw_table, columns))
    codes = schema.row_codes([sql.Identifier(f"c{i + 1}") for i in order], sample) if inline else []
    conn.execute(
        hash_rows(
            raw_table,
            hashed_table,
            columns,
            key=key_expression(key_columns, columns)
            if key_columns
            else (rid[0] if rid else sql.SQL("NULL")),
            extra=rid,
            codes=codes,
        )
    )
    conn.execute(sql.SQL("DROP TABLE {}").format(raw_table))
    if key_columns:
        if profiled:
            _record_profile(conn, item, fold_profile(conn, hashed_table, names, len(codes)))
        rows = _stage_keyed_rows(conn, hashed_table, item, chunk, params, key_columns)
        if mode != "delete":  # a delete file lists keys; its rows are not data
            insert_new_rows(conn, hashed_table, checkpoint["column_set_id"])
    else:
        _stage_unique_keys(conn, hashed_table, item, columns, checkpoint)
        # The range's own leaves and lists; the commit stitches the seams between
        # ranges (tree.stitch) and points at them.
        # pos is COPY's numbering, 1..N, unless the range rejected rows (rules take
        # rows that break them out of the raw table)
        tree.cut(conn, hashed_table, keyed=bool(rid), codes=len(codes), dense=rejected == 0)
        if profiled and not inline:
            _record_profile(conn, item, _profile_new_leaves(conn, hashed_table, names, sample))
            # the leaves found stored are not offered to store again, and only the
            # rows of the others may be new
            refs = tree.store(conn, stored=_KNOWN)
            rows = sum(ref.row_count for ref in refs)
            insert_new_rows(conn, _FRESH, checkpoint["column_set_id"])
        else:
            if profiled:
                _record_profile(conn, item, leaves_profile(conn, names))
            refs = tree.store(conn, new_leaves=_NEW_LEAVES)
            rows = sum(ref.row_count for ref in refs)
            _insert_rows_of_new_leaves(conn, hashed_table, rows, checkpoint["column_set_id"])
        _keep_lists(conn, item, refs)
    return rows


def _keep_lists(conn: db.Conn, item: ChunkItem, refs: list[tree.ListRef]) -> None:
    """The range's lists, in order, on its row: the commit stitches them (tree.stitch)."""
    conn.execute(
        "UPDATE dsa_jobs.import_chunks SET list_hashes = %s, list_rows = %s "
        "WHERE job_id = %s AND chunk_no = %s",
        (
            [ref.list_hash for ref in refs],
            [ref.row_count for ref in refs],
            item.job_id,
            item.chunk_no,
        ),
    )


# -- a CSV range by blocks (sluiceway.blocks) ------------------------------------------------

LOOKUP_BYTES = 4 << 20  # the blocks looked up at once, and then written to COPY
_DIGEST_OF, _DATA_OF, _RECORDS_OF = itemgetter(0), itemgetter(1), itemgetter(2)  # a Block's
_FLIP = bytes.maketrans(b"\x00\x01", b"\x01\x00")


class _NoBlocks(Exception):
    """The range cannot be taken by blocks (line endings mixed, or COPY made other rows than
    the blocks counted): it is loaded again, every byte to COPY."""


@dataclass
class _Layout:
    """A range's blocks in order, as the blocks table is made of them (:func:`_make_blocks_table`):
    their digests end to end, their record counts and whether each was found stored (a byte
    each); and those COPYed (:class:`NewBlocks`)."""

    digests: bytearray = field(default_factory=bytearray)
    records: bytearray = field(default_factory=bytearray)
    found: bytearray = field(default_factory=bytearray)
    new: NewBlocks = field(default_factory=NewBlocks)
    copied: int = 0
    reused: int = 0

    @property
    def count(self) -> int:
        return len(self.records)


def _reuses_blocks(
    fmt: str, params: dict[str, Any], checkpoint: dict[str, Any], settings: Settings
) -> bool:
    """Blocks make a range's leaves: a CSV range, unkeyed, with no rules (whose checks and
    rejects need every row's values)."""
    options = params.get("options", {})
    mode = options.get("mode") or "replace"
    wanted = options.get("reuse_blocks")
    return (
        (settings.imports.reuse_blocks if wanted is None else bool(wanted))
        and fmt in ("csv", "tsv")
        and mode in ("replace", "append")
        and not checkpoint.get("key_columns")
        and not checkpoint.get("rules")
    )


# Which of the blocks are stored with a profile: their places (0-based) among those sent, as
# one bytea of their digests end to end and one of their record counts (a byte each, at most
# tree.MAX_LEAF_ROWS): parameters that cost nothing to send or read, where a bytea[] of 30,000
# digests took 3 us a digest to read. LATERAL ... LIMIT 1 makes each block one probe of
# block_leaves' key, whatever the planner thinks of generate_series. The places come back as
# one bytea of 4-byte big-endian integers (a row each cost more to read than the probe).
_FOUND_BLOCKS = (
    "SELECT coalesce(string_agg(int4send(g.i), ''::bytea), ''::bytea) AS places "
    "FROM generate_series(0, %(count)s - 1) g(i) CROSS JOIN LATERAL "
    "(SELECT 1 FROM dsa_core.block_leaves b "
    "WHERE b.digest = substring(%(digests)s::bytea FROM g.i * 32 + 1 FOR 32) "
    "AND b.row_count = get_byte(%(records)s::bytea, g.i) AND b.profile IS NOT NULL LIMIT 1) f"
)


def _places(data: bytes) -> array[int]:
    """:data:`_FOUND_BLOCKS`'s places, from their big-endian bytes."""
    places = array("i", data)
    if sys.byteorder == "little":
        places.byteswap()
    return places


def _copy_new_blocks(
    copy: psycopg.Copy, src: readers.Source, checkpoint: dict[str, Any], settings: Settings
) -> _Layout:
    """Stream the range, cut into blocks; look them up (on a connection of its own, while
    COPY holds this one) a few MiB at a time, and write to COPY only those not found."""
    ctx = blocks.context(
        checkpoint.get("format") or "csv",
        checkpoint.get("delimiter") or ",",
        checkpoint.get("encoding") or "utf-8",
        checkpoint["columns"],
    )
    cutter = blocks.Cutter(ctx)
    layout = _Layout()
    pending: list[blocks.Block] = []
    next_pos = 1

    def flush(lookup: db.Conn) -> None:
        """Look the pending blocks up, write those not found to COPY (at once: COPY sees one
        stream), and note them all in ``layout``; C loops over the blocks, no Python one."""
        nonlocal next_pos
        if cutter.mixed_endings:
            raise _NoBlocks("mixed line endings")
        if not pending:
            return
        records = bytes(map(_RECORDS_OF, pending))
        digests = b"".join(map(_DIGEST_OF, pending))
        row = lookup.execute(
            _FOUND_BLOCKS,
            {"count": len(pending), "digests": digests, "records": records},
            binary=True,
        ).fetchone()
        found = bytearray(len(pending))
        for i in _places(bytes(row["places"]) if row else b""):
            found[i] = 1
        new = found.translate(_FLIP)  # 1 for a block to COPY
        first = layout.count
        starts = list(accumulate(records, initial=next_pos))
        new_records = list(compress(records, new))
        layout.new.numbers.extend(compress(range(first, first + len(pending)), new))
        if new_records:
            layout.new.ords.extend(accumulate(new_records[:-1], initial=layout.copied + 1))
        layout.new.positions.extend(compress(starts, new))
        copied = sum(new_records)
        layout.copied += copied
        layout.reused += starts[-1] - next_pos - copied
        layout.digests += digests
        layout.records += records
        layout.found += found
        next_pos = starts[-1]
        if any(new):
            copy.write(b"".join(compress(map(_DATA_OF, pending), new)))
        pending.clear()

    with db.connect(settings, autocommit=True) as lookup:
        size = 0
        for piece in src.pieces():
            for b in cutter.feed(piece):
                pending.append(b)
                size += len(b.data)
            if size >= LOOKUP_BYTES:
                flush(lookup)
                size = 0
        pending.extend(cutter.finish())
        flush(lookup)
    return layout


def _block_bounds(
    conn: db.Conn,
    item: ChunkItem,
    bucket: str,
    key: str,
    chunk: dict[str, Any],
    settings: Settings,
) -> tuple[int, int, int]:
    """The range's bytes for blocks: from the first block boundary at or after its start
    (but the file's first range) to the first at or after its end (but the last range);
    :func:`blocks.natural_boundary`. Returns (start, end, first line)."""
    start, end, first_line = chunk["start_byte"], chunk["end_byte"], chunk["first_line"]
    row = conn.execute(
        "SELECT min(start_byte) AS first, max(end_byte) AS last FROM dsa_jobs.import_chunks "
        "WHERE job_id = %s",
        (item.job_id,),
    ).fetchone()
    assert row is not None
    first, last = int(row["first"]), int(row["last"])

    held: list[tuple[int, bytes]] = []  # the last piece read: the skipped head is in it

    def read(a: int, b: int) -> bytes:
        if held and held[0][0] <= a and b <= held[0][0] + len(held[0][1]):
            at, piece = held[0]
            return piece[a - at : b - at]
        piece = _read(bucket, key, a, b, settings)
        held[:] = [(a, piece)]
        return piece

    new_start = start if start <= first else blocks.natural_boundary(read, start, last)
    if new_start > start:  # the records skipped are the range before's
        first_line += read(start, new_start).count(b"\n")
    new_end = end if end >= last else blocks.natural_boundary(read, end, last)
    return new_start, max(new_start, new_end), first_line


_BLOCKS_TABLE = sql.SQL(
    """
    CREATE TEMP TABLE {blocks} ON COMMIT DROP AS
    SELECT i AS block_no, substring(%(digests)s::bytea FROM i * 32 + 1 FOR 32) AS digest,
           1 + coalesce(sum(get_byte(%(records)s::bytea, i)) OVER (ORDER BY i ROWS BETWEEN
               UNBOUNDED PRECEDING AND 1 PRECEDING), 0)::bigint AS first_pos,
           get_byte(%(records)s::bytea, i) AS n, get_byte(%(found)s::bytea, i) = 1 AS found
    FROM generate_series(0, %(count)s - 1) i
    """
)


def _make_blocks_table(conn: db.Conn, layout: _Layout) -> None:
    """The range's blocks, (block_no, digest, first_pos, n, found), made by PostgreSQL from
    three bytea parameters (writing a COPY line a block took 1.5 us a block here)."""
    conn.execute(
        _BLOCKS_TABLE.format(blocks=_BLOCKS),
        {
            "digests": bytes(layout.digests),
            "records": bytes(layout.records),
            "found": bytes(layout.found),
            "count": layout.count,
        },
        binary=True,
    )


def _check_copied(conn: db.Conn, raw_table: sql.Identifier, layout: _Layout) -> None:
    """COPY made exactly the rows the blocks counted, or positions would be wrong."""
    row = conn.execute(sql.SQL("SELECT count(*) AS n FROM {}").format(raw_table)).fetchone()
    if row is None or int(row["n"]) != layout.copied:
        raise _NoBlocks("COPY's rows differ from the blocks' records")


_BLOCKS = sql.Identifier("sluiceway_blocks")
_STORED_BLOCKS = sql.Identifier("sluiceway_stored_blocks")


def _store_blocks(
    conn: db.Conn,
    raw_table: sql.Identifier,
    hashed_table: sql.Identifier,
    layout: _Layout,
    item: ChunkItem,
    checkpoint: dict[str, Any],
) -> int:
    """A range by blocks: the new blocks' rows hashed (with their profile codes) and made one
    leaf a block; the stored blocks' leaves taken as they are; the lists of all of them
    stored, the new blocks kept in block_leaves. Returns the range's row count."""
    columns: list[str] = checkpoint["columns"]
    names, order = sorted(columns), sorted_order(columns)
    conn.execute(sql.SQL("DROP TABLE IF EXISTS {}, {}").format(_BLOCKS, _STORED_BLOCKS))
    _make_blocks_table(conn, layout)
    sample = schema.sample_masks(conn, raw_table, len(columns))
    sample = [sample[i] for i in order] if sample else []
    codes = schema.row_codes([sql.Identifier(f"c{i + 1}") for i in order], sample)
    conn.execute(
        hash_rows(
            raw_table, hashed_table, columns, key=sql.SQL("NULL"), codes=codes, blocks=layout.new
        )
    )
    conn.execute(sql.SQL("DROP TABLE {}").format(raw_table))
    code_columns = [sql.Identifier(f"code{k}") for k in range(1, len(codes) + 1)]
    conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(tree.LEAVES))
    # the new blocks' leaves, and those of the blocks found: a probe of block_leaves' key
    # each (gc's lock, held since before the lookups, keeps them stored)
    leaves = conn.execute(
        sql.SQL(
            """
            CREATE TEMP TABLE {leaves} ON COMMIT DROP AS
            SELECT leaf_no, last_pos, n, hs, NULL::text[] AS ids, sha256(hs) AS leaf_hash, profile
            FROM (SELECT min(pos) AS leaf_no, max(pos) AS last_pos, count(*)::int AS n,
                         string_agg(row_hash, ''::bytea ORDER BY pos) AS hs,
                         {profile}::bigint[] AS profile
                  FROM {hashed} GROUP BY block_no) e
            UNION ALL
            SELECT b.first_pos, b.first_pos + b.n - 1, b.n, NULL::bytea, NULL::text[],
                   s.leaf_hash, s.profile
            FROM {blocks} b CROSS JOIN LATERAL (
                SELECT x.leaf_hash, x.profile FROM dsa_core.block_leaves x
                WHERE x.digest = b.digest AND x.profile IS NOT NULL LIMIT 1) s
            WHERE b.found
            """
        ).format(
            leaves=tree.LEAVES,
            profile=schema.and_codes(code_columns),
            hashed=hashed_table,
            blocks=_BLOCKS,
        )
    ).rowcount
    if leaves != layout.count:
        raise _NoBlocks("a block found is no longer stored")
    profile = leaves_profile(conn, names)
    profile["tested_rows"] = layout.copied
    _record_profile(conn, item, profile)
    conn.execute(
        sql.SQL(
            "INSERT INTO dsa_core.block_leaves (digest, leaf_hash, row_count, profile) "
            "SELECT b.digest, l.leaf_hash, l.n, l.profile FROM {leaves} l "
            "JOIN {blocks} b ON b.first_pos = l.leaf_no WHERE NOT b.found "
            "ORDER BY b.digest ON CONFLICT (digest) DO NOTHING"
        ).format(leaves=tree.LEAVES, blocks=_BLOCKS)
    )
    # nothing found (a first import): every leaf is offered, so the insert may skip its
    # lookups as the ordinary load's does (db.inserted_unprobed)
    stored = None
    if layout.reused:
        stored = _STORED_BLOCKS
        conn.execute(
            sql.SQL(
                "CREATE TEMP TABLE {} ON COMMIT DROP AS "
                "SELECT first_pos AS leaf_no FROM {} WHERE found"
            ).format(_STORED_BLOCKS, _BLOCKS)
        )
    refs = tree.store(conn, stored=stored, new_leaves=_NEW_LEAVES)
    rows = sum(ref.row_count for ref in refs)
    _insert_rows_of_new_leaves(conn, hashed_table, layout.copied, checkpoint["column_set_id"])
    _keep_lists(conn, item, refs)
    conn.execute(
        "UPDATE dsa_jobs.import_chunks SET reused_rows = %s WHERE job_id = %s AND chunk_no = %s",
        (layout.reused, item.job_id, item.chunk_no),
    )
    return rows


def _stage_unique_keys(
    conn: db.Conn,
    hashed_table: sql.Identifier,
    item: ChunkItem,
    columns: list[str],
    checkpoint: dict[str, Any],
) -> None:
    """Keep the range's values of the rules' ``unique_key`` for the commit to check across
    ranges (the same text as a keyed commit's key, from the sorted values)."""
    unique: list[str] | None = (checkpoint.get("rules") or {}).get("unique_key")
    if not unique:
        return
    names = sorted(columns)
    parts = [sql.SQL("vals[{}]").format(sql.Literal(names.index(c) + 1)) for c in unique]
    key = (
        parts[0]
        if len(parts) == 1
        else sql.SQL("jsonb_build_array({})::text").format(sql.SQL(", ").join(parts))
    )
    conn.execute(
        "DELETE FROM dsa_jobs.import_keyed_rows WHERE job_id = %s AND chunk_no = %s",
        (item.job_id, item.chunk_no),
    )
    conn.execute(
        sql.SQL(
            "INSERT INTO dsa_jobs.import_keyed_rows (job_id, chunk_no, ord, logical_id, row_hash) "
            "SELECT %s, %s, pos, {key}, row_hash FROM {h}"
        ).format(key=key, h=hashed_table),
        (item.job_id, item.chunk_no),
    )


def _record_profile(conn: db.Conn, item: ChunkItem, found: dict[str, Any]) -> None:
    """Keep the range's profile (:mod:`.schema`), and how many of its rows' values were
    tested for it (``tested_rows``: the others' leaves had a stored profile); the commit
    folds the ranges' profiles."""
    conn.execute(
        "UPDATE dsa_jobs.import_chunks SET profile = %s WHERE job_id = %s AND chunk_no = %s",
        (Jsonb(found), item.job_id, item.chunk_no),
    )


# A range whose first rows are this stored (of STORED_SAMPLE_ROWS) is profiled leaf by leaf,
# its stored leaves from their stored profiles. bench/profile_paths.py (500,000 rows, one
# backend, 3 Dec 2026), the range's work after its COPY, deferred against inline: 0.79x with
# 0.1% of rows changed, 0.90x with 1%, 0.98x with 5% (58% of rows tested: leaves of 7 rows),
# 1.30x with 10%, 1.38-1.55x beyond. So the leaf-by-leaf way is taken up to about 5% changed.
STORED_SAMPLE_ROWS = 256
STORED_SHARE = 0.95


def _mostly_stored(conn: db.Conn, raw_table: sql.Identifier, columns: list[str]) -> bool:
    """Whether most of the range's first rows are in row_store already (a re-import): hashes
    them and probes row_store's key. A wrong guess costs time, never a different profile."""
    with db.probing_by_index(conn):
        found = conn.execute(
            sql.SQL(
                "SELECT count(*) AS n, count(*) FILTER (WHERE EXISTS ("
                "SELECT 1 FROM dsa_core.row_store r WHERE r.row_hash = s.h)) AS stored "
                "FROM (SELECT {h} AS h FROM (SELECT {vals} AS vals FROM {raw} LIMIT {n}) v) s"
            ).format(
                h=_row_hash(columns, sql.Identifier("vals")),
                vals=_sorted_vals(columns),
                raw=raw_table,
                n=sql.Literal(STORED_SAMPLE_ROWS),
            )
        ).fetchone()
    assert found is not None
    return bool(found["n"] > 0 and found["stored"] >= STORED_SHARE * found["n"])


def _folded_profile(
    conn: db.Conn, query: sql.Composed, names: list[str], codes: int
) -> dict[str, Any]:
    """``query`` SELECTs row_count, codes (:func:`schema.folded`) and, when not every row's
    values were tested, tested_rows: the profile it gives, with ``tested_rows``."""
    row = conn.execute(query).fetchone()
    assert row is not None
    found = list(row["codes"] or []) if codes else []
    rows = int(row["row_count"] or 0)
    out = schema.profile_of_codes(rows, found, names)
    out["tested_rows"] = int(row["tested_rows"] or 0) if "tested_rows" in row else rows
    return out


def _leaf_folds(codes: int) -> sql.Composed:
    """SQL: the AND of each of the leaves' ``codes`` profile codes, as an int8[]."""
    return schema.and_codes(
        [sql.SQL("profile[{}]").format(sql.Literal(k)) for k in range(1, codes + 1)]
    )


def leaves_profile(conn: db.Conn, names: list[str]) -> dict[str, Any]:
    """The range's profile, folded from its leaves' (all computed by tree.cut)."""
    codes = schema.code_count(len(names))
    return _folded_profile(
        conn,
        sql.SQL("SELECT sum(n) AS row_count, {} AS codes FROM {}").format(
            _leaf_folds(codes), tree.LEAVES
        ),
        names,
        codes,
    )


_NEW_LEAVES, _FRESH = sql.Identifier("sluiceway_new_leaves"), sql.Identifier("sluiceway_fresh")
_KNOWN, _CODES = sql.Identifier("sluiceway_known"), sql.Identifier("sluiceway_codes")
_NEEDED = sql.Identifier("sluiceway_needed")


def _profile_new_leaves(
    conn: db.Conn, hashed_table: sql.Identifier, names: list[str], sample: list[int | None]
) -> dict[str, Any]:
    """The range's profile from its leaves' profiles: those stored with one, read by their
    hash (into ``_KNOWN``); every other leaf's computed from its rows, picked by pos (into
    ``_FRESH``: row_hash, vals), and set on the leaf for tree.store to keep. ``sample``: the
    columns' sample masks, in name order."""
    codes = schema.code_count(len(names))
    # One probe of row_leaves' key a leaf, never a scan; in hash order, the key's order (and
    # about the heap's: leaves are inserted sorted by hash), so neighbouring probes share
    # pages (the 1% re-import's 129,700 leaves: 318-323 ms against 453-487 ms in leaf order,
    # over two backends, bench/README.md).
    conn.execute(sql.SQL("DROP TABLE IF EXISTS {}, {}").format(_KNOWN, _CODES))
    with db.probing_by_index(conn):
        conn.execute(
            sql.SQL(
                "CREATE TEMP TABLE {known} ON COMMIT DROP AS SELECT l.leaf_no, r.profile "
                "FROM (SELECT leaf_no, leaf_hash FROM {leaves} ORDER BY leaf_hash OFFSET 0) l "
                "JOIN dsa_core.row_leaves r ON r.leaf_hash = l.leaf_hash "
                "WHERE r.profile IS NOT NULL"
            ).format(known=_KNOWN, leaves=tree.LEAVES)
        )
    # The rows of the leaves without one, by pos: their positions in a table of their own,
    # analyzed, so the planner hashes those few and scans the range's rows once (rather than
    # sorting all of them by pos to merge: to disk, at 500,000 rows). They are also the only
    # rows that row_store may lack (every row of a stored leaf is stored): _FRESH.
    conn.execute(sql.SQL("DROP TABLE IF EXISTS {}, {}").format(_NEEDED, _FRESH))
    conn.execute(
        sql.SQL(
            "CREATE TEMP TABLE {needed} ON COMMIT DROP AS "
            "SELECT l.leaf_no, generate_series(l.leaf_no, l.last_pos) AS pos FROM {leaves} l "
            "WHERE NOT EXISTS (SELECT 1 FROM {known} k WHERE k.leaf_no = l.leaf_no)"
        ).format(needed=_NEEDED, leaves=tree.LEAVES, known=_KNOWN)
    )
    conn.execute(sql.SQL("ANALYZE {}").format(_NEEDED))
    conn.execute(
        sql.SQL(
            "CREATE TEMP TABLE {fresh} ON COMMIT DROP AS SELECT p.leaf_no, h.row_hash, h.vals "
            "FROM {needed} p JOIN {hashed} h ON h.pos = p.pos"
        ).format(fresh=_FRESH, needed=_NEEDED, hashed=hashed_table)
    )
    # each value taken from the array once (the codes test a value several times)
    values = [sql.Identifier(f"v{j}") for j in range(1, len(names) + 1)]
    conn.execute(
        sql.SQL(
            "CREATE TEMP TABLE {codes} ON COMMIT DROP AS SELECT leaf_no, {profile} AS profile "
            "FROM (SELECT leaf_no, {elements} FROM {fresh} OFFSET 0) f GROUP BY leaf_no"
        ).format(
            codes=_CODES,
            profile=schema.and_codes(schema.row_codes(values, sample)),
            elements=sql.SQL(", ").join(
                sql.SQL("vals[{}] AS {}").format(sql.Literal(j), v) for j, v in enumerate(values, 1)
            ),
            fresh=_FRESH,
        )
    )
    conn.execute(
        sql.SQL(
            "UPDATE {leaves} l SET profile = c.profile FROM {codes} c WHERE c.leaf_no = l.leaf_no"
        ).format(leaves=tree.LEAVES, codes=_CODES)
    )
    return _folded_profile(
        conn,
        sql.SQL(
            "SELECT (SELECT sum(n) FROM {leaves}) AS row_count, {folds} AS codes, "
            "(SELECT count(*) FROM {needed}) AS tested_rows "
            "FROM (SELECT profile FROM {known} UNION ALL SELECT profile FROM {codes}) x"
        ).format(
            leaves=tree.LEAVES,
            needed=_NEEDED,
            folds=_leaf_folds(codes),
            known=_KNOWN,
            codes=_CODES,
        ),
        names,
        codes,
    )


def fold_profile(
    conn: db.Conn, hashed_table: sql.Identifier, names: list[str], codes: int
) -> dict[str, Any]:
    """The range's profile, folded from the codes that hash_rows stored in ``hashed_table``
    (``names``: the columns in the codes' order)."""
    return _folded_profile(
        conn,
        sql.SQL("SELECT {} FROM {}").format(
            schema.folded([sql.Identifier(f"code{k}") for k in range(1, codes + 1)]),
            hashed_table,
        ),
        names,
        codes,
    )


# Sorted by hash, new rows reach the row_hash index in key order: far fewer pages touched
# than random inserts. A plain INSERT costs about half of ON CONFLICT's speculative one, so
# it goes first; if a concurrent range commits one of the same new rows first, the unique
# violation rolls back just this statement and it runs again, now seeing that row.
# The range is sorted (and deduplicated) before the probe, so it probes the index in key order.
_INSERT_NEW_ROWS = (
    "INSERT INTO dsa_core.row_store (row_hash, column_set_id, vals) "
    "SELECT h.row_hash, %s, h.vals "
    "FROM (SELECT DISTINCT ON (row_hash) row_hash, vals FROM {} ORDER BY row_hash) h "
    "WHERE NOT EXISTS (SELECT 1 FROM dsa_core.row_store r WHERE r.row_hash = h.row_hash)"
)
PLAIN_INSERT_ATTEMPTS = 3


def _insert_rows_of_new_leaves(
    conn: db.Conn, hashed_table: sql.Identifier, range_rows: int, column_set_id: int
) -> None:
    """Store the range's rows not stored yet, looking them up only in the leaves that
    tree.build stored anew (``_NEW_LEAVES``): every row of a leaf already stored is stored.

    A re-import that changed 1% of its rows stores about one leaf in ten anew, so it probes
    row_store's index for about a tenth of its rows, not all of them (bench/README.md). They
    are picked by pos, each new leaf's first to last (a hash join on integers: about half
    the time of matching their row hashes). When most leaves are new (a first import), the
    range probes all its rows, as before.
    """
    found = conn.execute(
        sql.SQL("SELECT coalesce(sum(row_count), 0)::bigint AS n FROM {}").format(_NEW_LEAVES)
    ).fetchone()
    candidates = int(found["n"]) if found else range_rows
    if candidates == 0:
        return
    source = hashed_table
    if 2 * candidates < range_rows:
        conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(_FRESH))
        conn.execute(
            sql.SQL(
                "CREATE TEMP TABLE {fresh} ON COMMIT DROP AS "
                "SELECT h.row_hash, h.vals FROM {hashed} h WHERE h.pos IN ("
                "SELECT generate_series(l.first_pos, l.last_pos) FROM {leaves} l)"
            ).format(fresh=_FRESH, hashed=hashed_table, leaves=_NEW_LEAVES)
        )
        source = _FRESH
    insert_new_rows(conn, source, column_set_id)


_ROW_STORE = sql.Identifier("dsa_core", "row_store")
_INSERT_ALL_ROWS = (
    "INSERT INTO dsa_core.row_store (row_hash, column_set_id, vals) "
    "SELECT DISTINCT ON (row_hash) row_hash, {}, vals FROM {} ORDER BY row_hash"
)


def insert_new_rows(conn: db.Conn, hashed_table: sql.Identifier, column_set_id: int) -> None:
    """Add the rows of ``hashed_table`` (row_hash, vals) that row_store lacks, once each: a
    first import's without looking each one up (db.inserted_unprobed)."""
    all_rows = sql.SQL(_INSERT_ALL_ROWS).format(sql.Literal(column_set_id), hashed_table)
    if db.inserted_unprobed(conn, hashed_table, _ROW_STORE, "row_hash", [all_rows]):
        return
    with db.probing_by_index(conn):  # the lookups of row_store's key (db.probing_by_index)
        _insert_plain_first(conn, hashed_table, column_set_id)


def _insert_plain_first(conn: db.Conn, hashed_table: sql.Identifier, column_set_id: int) -> None:
    for _ in range(PLAIN_INSERT_ATTEMPTS):
        try:
            with conn.transaction():  # a savepoint: only this statement is undone
                conn.execute(sql.SQL(_INSERT_NEW_ROWS).format(hashed_table), (column_set_id,))
            return
        except psycopg.errors.UniqueViolation:
            continue
    conn.execute(
        sql.SQL(_INSERT_NEW_ROWS + " ON CONFLICT (row_hash) DO NOTHING").format(hashed_table),
        (column_set_id,),
    )


def _explain(
    exc: psycopg.DataError,
    job: dict[str, Any],
    chunk: dict[str, Any],
    column_count: int,
    settings: Settings,
) -> MalformedFile:
    """Turn PostgreSQL's complaint into one about the user's file: which line, which byte."""
    params, cp = job["run_parameters"], job["checkpoint"]
    filename = params.get("filename") or params["key"]
    bucket, key = source_object(job)
    buf = _read(bucket, key, chunk["start_byte"], chunk["end_byte"], settings)
    found = csvsplit.find_bad_record(
        buf,
        base_offset=chunk["start_byte"],
        first_line=chunk["first_line"],
        column_count=column_count,
        delimiter=cp.get("delimiter") or ",",
        encoding=cp.get("encoding") or "utf-8",
    )
    detail = exc.diag.message_primary or str(exc)
    if found is not None:
        return MalformedFile(f"{filename}: {found.message}", file=filename, **found.details)
    return MalformedFile(
        f"{filename}: bytes {chunk['start_byte']:,}-{chunk['end_byte']:,} (from line "
        f"{chunk['first_line']:,}) could not be loaded: {detail}",
        file=filename,
        byte_offset=chunk["start_byte"],
        line=chunk["first_line"],
    )
