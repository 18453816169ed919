"""Stage 3, finalize: make the commit, move the ref, refresh search; or record the failure.

State "Commit and move the ref" runs :func:`commit_import` in one transaction: the new
commit, its commit_rows, the ref moved by compare-and-swap, and the job marked completed
all become visible together, or none of them does. "Refresh the search summary" runs
:func:`refresh_search`; "Record the failure" runs :func:`fail_import`.
"""

from __future__ import annotations

import json
import logging
import uuid
from datetime import UTC, datetime
from typing import Any

from psycopg import sql
from psycopg.types.json import Jsonb

from . import db, export, faults, jobs, rejects, rules, schema, tree, versioning
from .errors import RulesBroken, code_of_name
from .names import MAIN_REF
from .plan import first_chunk_error, job_of_state, job_source, stop_if_a_range_failed
from .settings import Settings, get_settings

logger = logging.getLogger(__name__)


def commit_import(state: dict[str, Any], settings: Settings | None = None) -> dict[str, Any]:
    """Commit every loaded range of the job as one new commit on ``main``."""
    settings = settings or get_settings()
    plan, job_id, conn, job = job_of_state(state, settings)
    if job["status"] == "completed":  # a retry after a lost response
        done = jobs.get(conn, job_id)
        return {**plan.model_dump(), "commit": done.output_summary}
    params, checkpoint = job["run_parameters"], job["checkpoint"]
    owner_row = conn.execute(
        "SELECT owner FROM dsa_jobs.analysis_runs WHERE id = %s", (job_id,)
    ).fetchone()
    assert owner_row is not None
    owner = owner_row["owner"]
    columns: list[str] = checkpoint["columns"]

    options = params.get("options", {})
    mode: str = options.get("mode") or "replace"
    ref: str = options.get("branch") or MAIN_REF
    key_columns: list[str] | None = checkpoint.get("key_columns")

    inject = faults.take(conn, job_id, "commit", settings)
    db.room_for_temp_tables(conn)  # the seams' and a re-import's diff tables, in memory
    outcome = _settle_rejects(conn, job_id, params, checkpoint, settings)
    with conn.transaction():
        chunks = conn.execute(
            "SELECT chunk_no, status, row_count, list_hashes, list_rows, profile, "
            "rejected_count, rejected_key, reused_rows FROM dsa_jobs.import_chunks "
            "WHERE job_id = %s AND status IN ('resolved', 'loaded') ORDER BY chunk_no",
            (job_id,),
        ).fetchall()
        stop_if_a_range_failed(conn, job_id)
        unloaded = [c["chunk_no"] for c in chunks if c["status"] != "loaded"]
        if unloaded:
            raise RuntimeError(f"Ranges {unloaded[:10]} of job {job_id} were never loaded.")
        # Taking the dataset row's lock serialises commits to one dataset: history stays linear.
        dataset = conn.execute(
            """
            INSERT INTO dsa_core.datasets (owner, name, columns) VALUES (%s, %s, %s)
            ON CONFLICT (owner, name) DO UPDATE SET updated_at = now()
            RETURNING id, columns
            """,
            (owner, params["dataset"], Jsonb(columns)),
        ).fetchone()
        assert dataset is not None
        dataset_id = dataset["id"]
        parent = versioning.ref_target(conn, dataset_id, ref, lock=True)
        created_ref = parent is None and ref != MAIN_REF
        if created_ref:  # a new branch starts where main is
            parent = versioning.ref_target(conn, dataset_id, MAIN_REF, lock=False)
        parent_commit = versioning.commit_info(conn, parent) if parent else None
        parent_lists = tree.commit_lists(conn, parent) if parent else []
        parent_columns: list[str] = parent_commit["columns"] if parent_commit else []
        new_columns = parent_columns + [c for c in columns if c not in parent_columns]

        filename = params.get("filename", params["key"])
        ranges = [
            [
                tree.ListRef(bytes(h), int(n))
                for h, n in zip(c["list_hashes"] or [], c["list_rows"] or [], strict=True)
            ]
            for c in chunks
        ]
        _check_unique(conn, job_id, checkpoint, mode, parent_commit, filename)
        commit_schema = _schema_of_commit(
            checkpoint,
            chunks,
            mode,
            new_columns if mode != "replace" else columns,
            parent_commit,
            params["dataset"],
            filename,
        )
        # ranges loaded by blocks keep their leaves at the seams (tree.stitch)
        whole = any(c["reused_rows"] is not None for c in chunks)
        if mode == "replace":
            lists = tree.stitch(conn, ranges, leaves_whole=whole)
            new_columns = columns
        elif mode == "append":
            lists = tree.stitch(conn, [parent_lists, *ranges], leaves_whole=whole)
        else:
            assert key_columns
            lists = versioning.merge_keyed(
                conn, job_id, parent_commit, key_columns, upsert=mode == "upsert", filename=filename
            )
            if mode == "delete":
                new_columns = parent_columns

        def unchanged() -> dict[str, Any]:
            # Nothing changed: the job is recorded, but no empty commit is made.
            assert parent_commit is not None
            assert parent is not None
            summary = {
                "dataset": params["dataset"],
                "commit_id": parent,
                "parent_commit_id": parent_commit["parent_commit_id"],
                "ref": ref,
                "rows": parent_commit["row_count"],
                "bytes": params.get("size_bytes"),
                "columns": parent_columns,
                "mode": mode,
                "unchanged": True,
                **outcome,
                "message": f"{filename} changes nothing in {ref!r}; no commit was made.",
            }
            if created_ref:
                versioning.move_ref(
                    conn, dataset_id, ref, expected=None, new=parent, reason=f"import {job_id}"
                )
            _finish(conn, job_id, summary, dataset_id)
            return {**plan.model_dump(), "commit": summary}

        if parent_commit is not None and (
            tree.same_content(lists, parent_lists) and new_columns == parent_columns
        ):
            return unchanged()

        commit_id = uuid.uuid4().hex
        commit_key = int(checkpoint["commit_key"])
        total = sum(x.row_count for x in lists)
        message = options.get("message") or (
            f"{mode.capitalize()} from {filename} ({total:,} rows)"
            if mode != "replace"
            else f"Import {filename} ({total:,} rows)"
        )
        try:
            with conn.transaction():  # a savepoint: undone if the commit holds the parent's rows
                conn.execute(
                    """
                    INSERT INTO dsa_core.commits (commit_key, commit_id, dataset_id,
                        parent_commit_id, message, author, authored_at, row_count, columns,
                        job_id, kind, key_columns, schema)
                    VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)
                    """,
                    (
                        commit_key,
                        commit_id,
                        dataset_id,
                        parent,
                        message,
                        owner,
                        datetime.now(UTC),
                        total,
                        Jsonb(new_columns),
                        job_id,
                        mode,
                        key_columns,
                        Jsonb(schema.store(commit_schema)) if commit_schema is not None else None,
                    ),
                )
                tree.write_chunks(conn, commit_key, lists)
                stats = versioning.record_stats(conn, parent, commit_id)
                if (
                    parent is not None
                    and not any(stats.values())
                    and new_columns == parent_columns
                    and versioning.same_rows(conn, parent, commit_id)
                ):
                    raise _SameRows
        except _SameRows:
            # other lists, the same rows: a CSV's blocks follow its bytes (sluiceway.blocks),
            # so the same rows in other bytes (line endings, quoting) are other leaves
            return unchanged()
        versioning.move_ref(
            conn,
            dataset_id,
            ref,
            expected=None if created_ref else parent,
            new=commit_id,
            reason=f"import {job_id}",
        )
        seen = list(dataset["columns"]) + [c for c in columns if c not in dataset["columns"]]
        conn.execute(
            "UPDATE dsa_core.datasets SET columns = %s WHERE id = %s", (Jsonb(seen), dataset_id)
        )
        summary = {
            "dataset": params["dataset"],
            "commit_id": commit_id,
            "parent_commit_id": parent,
            "ref": ref,
            "rows": total,
            "bytes": params.get("size_bytes"),
            "columns": new_columns,
            "schema": schema.store(commit_schema) if commit_schema is not None else None,
            "mode": mode,
            "changes": stats,
            **outcome,
        }
        _finish(conn, job_id, summary, dataset_id)
        if inject:  # the commit, the ref and the job are all written: all must roll back
            raise faults.fail("commit")
    # The commit is durable: start the exports the dataset asks for of every new commit.
    exports = export.export_new_commit(conn, owner, params["dataset"], commit_id, settings)
    if exports:
        jobs.update(conn, job_id, progress={"commit_exports": exports})
    return {**plan.model_dump(), "commit": summary}


class _SameRows(Exception):
    """The new commit's rows are its parent's, in the same order."""


def _settle_rejects(
    conn: db.Conn,
    job_id: uuid.UUID,
    params: dict[str, Any],
    checkpoint: dict[str, Any],
    settings: Settings,
) -> dict[str, Any]:
    """Count the ranges' accepted and rejected rows against the tolerated errors and
    ``min_records``; join the rejected rows' report. Raises :class:`RulesBroken` (the failure
    path then writes the report, saying why) when the rules are broken."""
    found = rejects.totals(conn, job_id)
    effective = rules.Rules.model_validate(checkpoint.get("rules") or {})
    filename = params.get("filename", params["key"])
    records = found.accepted + found.rejected
    tolerated = effective.tolerance(records)
    if found.rejected > tolerated:
        first = rejects.describe(rejects.first_line(found.keys, settings))
        raise RulesBroken(
            f"{filename}: {found.rejected:,} of {records:,} records were rejected (tolerated: "
            f"{tolerated:,}); the first: {first}. Nothing was committed; every rejected row is "
            "in the job's report.",
            file=filename,
        )
    if effective.min_records is not None and found.accepted < effective.min_records:
        raise RulesBroken(
            f"{filename}: {found.accepted:,} records were accepted; the rules ask for at least "
            f"{effective.min_records:,} (min_records). Nothing was committed.",
            file=filename,
        )
    outcome: dict[str, Any] = {"accepted_rows": found.accepted, "rejected_rows": found.rejected}
    if found.rejected:
        outcome["report_key"] = rejects.write_report(
            job_id,
            params,
            found,
            {
                "job_id": str(job_id),
                "file": filename,
                "dataset": params["dataset"],
                "outcome": "committed",
                "records": records,
                "accepted": found.accepted,
                "rejected": found.rejected,
                "tolerated": tolerated,
            },
            settings,
        )
    jobs.update(conn, job_id, progress=outcome)
    return outcome


def _check_unique(
    conn: db.Conn,
    job_id: uuid.UUID,
    checkpoint: dict[str, Any],
    mode: str,
    parent_commit: dict[str, Any] | None,
    filename: str,
) -> None:
    """The rules' ``unique_key``: no two rows of the new commit share its values (the file's
    rows, and for an append the parent's too). Empty keys are not compared."""
    unique: list[str] | None = (checkpoint.get("rules") or {}).get("unique_key")
    if not unique or mode not in ("replace", "append"):
        return
    parent_rows = (
        versioning.keyed_rows(parent_commit, unique)
        if mode == "append" and parent_commit
        else sql.SQL("SELECT NULL::text AS logical_id WHERE false")
    )
    dups = conn.execute(
        sql.SQL(
            "SELECT logical_id, count(*) AS n FROM ("
            "SELECT logical_id FROM dsa_jobs.import_keyed_rows WHERE job_id = {job} "
            "UNION ALL SELECT logical_id FROM ({parent}) p) u "
            "WHERE logical_id IS NOT NULL GROUP BY logical_id HAVING count(*) > 1 "
            "ORDER BY n DESC, logical_id LIMIT 3"
        ).format(job=sql.Literal(str(job_id)), parent=parent_rows)
    ).fetchall()
    if dups:
        listed = ", ".join(f"{d['logical_id']!r} ({d['n']} times)" for d in dups)
        raise RulesBroken(
            f"{filename}: the unique key {', '.join(unique)} is not unique: {listed}. Nothing "
            "was committed.",
            file=filename,
        )


def _schema_of_commit(
    checkpoint: dict[str, Any],
    chunks: list[dict[str, Any]],
    mode: str,
    order: list[str],
    parent_commit: dict[str, Any] | None,
    dataset: str,
    filename: str,
) -> list[schema.Column] | None:
    """Fold the ranges' profiles into the file's schema, check it against the parent commit's
    by the dataset's ``schema_changes`` rule, and give the new commit's schema."""
    columns: list[str] = checkpoint["columns"]
    effective = rules.Rules.model_validate(checkpoint.get("rules") or {})
    declared = {n: (r.type, r.nullable) for n, r in (effective.columns or {}).items()}
    file_schema = schema.with_declared(
        schema.infer(columns, [c["profile"] for c in chunks]), declared
    )
    return schema.commit_schema(
        mode=mode,
        policy=effective.schema_changes or "allow",
        order=order,
        parent=schema.loaded(parent_commit.get("schema")) if parent_commit else None,
        has_parent=parent_commit is not None,
        file=file_schema,
        filename=filename,
        dataset=dataset,
    )


def _finish(conn: db.Conn, job_id: uuid.UUID, summary: dict[str, Any], dataset_id: int) -> None:
    conn.execute("DELETE FROM dsa_jobs.import_keyed_rows WHERE job_id = %s", (job_id,))
    jobs.update(conn, job_id, progress={"stage": "committed"}, checkpoint={"stage": "committed"})
    jobs.complete(conn, job_id, summary, dataset_id)


def discard_rows(conn: db.Conn, job_id: uuid.UUID) -> None:
    """Drop a failed import's scratch rows. Leaves and lists it stored are content-addressed
    and unreferenced: harmless, and what ``sluiceway gc`` removes."""
    conn.execute("DELETE FROM dsa_jobs.import_keyed_rows WHERE job_id = %s", (job_id,))


def refresh_search(state: dict[str, Any], settings: Settings | None = None) -> dict[str, Any]:
    """REFRESH MATERIALIZED VIEW CONCURRENTLY dsa_search.datasets_summary (readers never block)."""
    settings = settings or get_settings()
    db.shared_connection(settings).execute(
        "REFRESH MATERIALIZED VIEW CONCURRENTLY dsa_search.datasets_summary"
    )
    return state


def error_message(error: dict[str, Any] | None) -> str:
    """The human message inside a Step Functions Catch result ({"Error", "Cause"})."""
    if not error:
        return "The import failed for an unknown reason."
    cause = error.get("Cause") or ""
    try:
        parsed = json.loads(cause)
        message = parsed.get("errorMessage") if isinstance(parsed, dict) else None
    except (TypeError, ValueError):
        message = None
    name = error.get("Error") or "Error"
    return str(message or cause or name)


def fail_import(state: dict[str, Any], settings: Settings | None = None) -> dict[str, Any]:
    """Mark the job failed with the reason, and drop whatever it staged. ``main`` never moved."""
    settings = settings or get_settings()
    conn = db.shared_connection(settings)
    message = error_message(state.get("error"))
    code = code_of_name((state.get("error") or {}).get("Error"))
    job_id: uuid.UUID | None = None
    if state.get("job_id"):
        job_id = uuid.UUID(state["job_id"])
    else:
        detail = state.get("detail") or {}
        key = (detail.get("object") or {}).get("key")
        bucket = (detail.get("bucket") or {}).get("name")
        row = conn.execute(
            "SELECT job_id FROM dsa_jobs.uploads WHERE bucket = %s AND object_key = %s",
            (bucket, key),
        ).fetchone()
        job_id = row["job_id"] if row else None
    if job_id is not None:
        failed = first_chunk_error(conn, job_id)
        if failed is not None:
            message, code = failed
        # the report first: whoever sees the job failed can already read it
        report = _report_failure(conn, job_id, message, settings)
        with conn.transaction():
            if jobs.fail(conn, job_id, message, code) and report:
                jobs.update(conn, job_id, progress=report)
            discard_rows(conn, job_id)
    return {"job_id": str(job_id) if job_id else None, "error": message, "error_code": code}


def _report_failure(
    conn: db.Conn, job_id: uuid.UUID, message: str, settings: Settings
) -> dict[str, Any] | None:
    """A failed import that rejected rows still gets its report, which says why it failed;
    returns what the job's progress should say of it."""
    job = job_source(conn, job_id)
    if job["status"] not in ("pending", "running"):
        return None  # already ended: its report, if any, is written
    found = rejects.totals(conn, job_id)
    if not found.rejected:
        return None
    params = job["run_parameters"]
    try:
        key = rejects.write_report(
            job_id,
            params,
            found,
            {
                "job_id": str(job_id),
                "file": params.get("filename", params["key"]),
                "dataset": params["dataset"],
                "outcome": "failed",
                "reason": message,
                "records": found.accepted + found.rejected,
                "accepted": found.accepted,
                "rejected": found.rejected,
            },
            settings,
        )
    except Exception:  # the failure is recorded; a missing report must not hide it
        logger.exception("the rejected-rows report of failed job %s was not written", job_id)
        return None
    return {"report_key": key, "accepted_rows": found.accepted, "rejected_rows": found.rejected}
