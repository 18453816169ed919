"""Stage 3, finalize: make the commit, move the ref, refresh search; or record the failure.

State "Commit and move the ref" runs :func:`commit_import` in one transaction: the new
commit, its commit_rows, the ref moved by compare-and-swap, and the job marked completed
all become visible together, or none of them does. "Refresh the search summary" runs
:func:`refresh_search`; "Record the failure" runs :func:`fail_import`.
"""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from typing import Any

from psycopg.types.json import Jsonb

from . import db, jobs
from .errors import Conflict, MalformedFile
from .names import MAIN_REF
from .plan import first_chunk_error, job_of_state, job_source
from .settings import Settings, get_settings


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

    with conn.transaction():
        chunks = conn.execute(
            "SELECT chunk_no, status, row_count FROM dsa_jobs.import_chunks WHERE job_id = %s "
            "AND status IN ('resolved', 'loaded') ORDER BY chunk_no",
            (job_id,),
        ).fetchall()
        failed = first_chunk_error(conn, job_id)
        if failed:
            raise MalformedFile(failed)
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
        parent_row = conn.execute(
            "SELECT commit_id FROM dsa_core.refs WHERE dataset_id = %s AND name = %s FOR UPDATE",
            (dataset_id, MAIN_REF),
        ).fetchone()
        parent = parent_row["commit_id"] if parent_row else None
        total = sum(int(c["row_count"]) for c in chunks)
        commit_id = uuid.uuid4().hex
        authored_at = datetime.now(UTC)
        message = params.get("options", {}).get("message") or (
            f"Import {params.get('filename', params['key'])} ({total:,} rows)"
        )
        commit_key = int(checkpoint["commit_key"])
        conn.execute(
            """
            INSERT INTO dsa_core.commits (commit_key, commit_id, dataset_id, parent_commit_id,
                message, author, authored_at, row_count, columns, job_id)
            VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)
            """,
            (
                commit_key,
                commit_id,
                dataset_id,
                parent,
                message,
                owner,
                authored_at,
                total,
                Jsonb(columns),
                job_id,
            ),
        )
        with conn.cursor().copy(
            "COPY dsa_core.commit_chunks (commit_key, chunk_no, row_offset, row_count) FROM STDIN"
        ) as copy:
            offset = 0
            for c in chunks:
                copy.write_row((commit_key, c["chunk_no"], offset, c["row_count"]))
                offset += int(c["row_count"])
        _move_ref(conn, dataset_id, MAIN_REF, expected=parent, new=commit_id)
        seen = list(dataset["columns"]) + [c for c in columns if c not in dataset["columns"]]
        conn.execute(
            "UPDATE dsa_core.datasets SET columns = %s WHERE id = %s", (Jsonb(seen), dataset_id)
        )
        summary = {
            "dataset": params["dataset"],
            "commit_id": commit_id,
            "parent_commit_id": parent,
            "rows": total,
            "bytes": params.get("size_bytes"),
            "columns": columns,
        }
        jobs.update(
            conn, job_id, progress={"stage": "committed"}, checkpoint={"stage": "committed"}
        )
        jobs.complete(conn, job_id, summary, dataset_id)
    return {**plan.model_dump(), "commit": summary}


def _move_ref(conn: db.Conn, dataset_id: int, ref: str, *, expected: str | None, new: str) -> None:
    """Compare-and-swap a ref: it moves only if it still points where the commit's parent said."""
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
        raise Conflict(f"Ref {ref!r} moved while this import was committing; retry the import.")


def _discard_rows(conn: db.Conn, checkpoint: dict[str, Any] | None) -> None:
    """Delete the entries a failed import's ranges wrote for the commit it never made."""
    key = (checkpoint or {}).get("commit_key")
    if key is not None:
        conn.execute(
            "DELETE FROM dsa_core.commit_row_entries e WHERE e.commit_key = %s "
            "AND NOT EXISTS (SELECT 1 FROM dsa_core.commits c WHERE c.commit_key = %s)",
            (key, key),
        )


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
        message = first_chunk_error(conn, job_id) or message
        with conn.transaction():
            jobs.fail(conn, job_id, message)
            _discard_rows(conn, job_source(conn, job_id)["checkpoint"])
    return {"job_id": str(job_id) if job_id else None, "error": message}
