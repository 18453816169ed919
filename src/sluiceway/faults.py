"""Fault injection: make a pipeline step fail on purpose, so tests can prove recovery.

An import asks for faults in its options (``{"faults": {"load": 1}}``: the first load of a
range fails once; an export's ``{"faults": {"part": 1}}``: the first part written fails once
after uploading a piece). They act only where ``settings.allow_fault_injection`` is on (the test
stack); everywhere else they are ignored. Each fault is used up atomically in the database
before the step's transaction begins, so a retried step sees it gone; the step then fails at
its most awkward moment, after its work and before its commit.

A stall (``{"faults": {"stall_load": 1}}``) is the other kind: the step says so in the job's
checkpoint and waits, so a test can kill the stack or restart the database at a known point
without a sleep that hopes for a race. An export's ``stall_part`` waits after its part's rows
are written and its multipart upload is open (the upload id recorded), before it completes.
"""

from __future__ import annotations

import time
import uuid

from . import db
from .errors import DatabaseUnavailable
from .settings import Settings

POINTS = ("scan", "load", "commit", "part", "stall_load", "stall_part")


def take(conn: db.Conn, job_id: uuid.UUID, point: str, settings: Settings) -> bool:
    """True (and one fewer left) if the job asked for a fault at ``point`` and has one left."""
    if not settings.allow_fault_injection:
        return False
    row = conn.execute(
        """
        UPDATE dsa_jobs.analysis_runs
        SET run_parameters = jsonb_set(run_parameters, ARRAY['options', 'faults', %(p)s],
            to_jsonb((run_parameters #>> ARRAY['options', 'faults', %(p)s])::int - 1))
        WHERE id = %(id)s AND (run_parameters #>> ARRAY['options', 'faults', %(p)s])::int > 0
        RETURNING id
        """,
        {"p": point, "id": job_id},
    ).fetchone()
    return row is not None


def fail(point: str) -> DatabaseUnavailable:
    """The error an injected fault raises: one the state machine retries."""
    return DatabaseUnavailable(f"Injected fault at {point!r} (a test asked for it).")


def stall(
    conn: db.Conn, job_id: uuid.UUID, point: str, settings: Settings, *, taken: bool = False
) -> None:
    """If the job asked for a stall at ``point``: record ``checkpoint.stalled`` and wait,
    asking the database every 50 ms, until a test sets ``checkpoint.release`` (or kills the
    stack, or restarts the database: the next question then fails, as any step's would).
    ``taken``: the caller already took ``stall_<point>`` (to prepare the moment first)."""
    if not taken and not take(conn, job_id, f"stall_{point}", settings):
        return
    conn.execute(
        "UPDATE dsa_jobs.analysis_runs SET checkpoint = coalesce(checkpoint, '{}'::jsonb) || "
        "jsonb_build_object('stalled', %s::text) WHERE id = %s",
        (point, job_id),
    )
    while True:
        row = conn.execute(
            "SELECT checkpoint ? 'release' AS released FROM dsa_jobs.analysis_runs WHERE id = %s",
            (job_id,),
        ).fetchone()
        if row is None or row["released"]:
            return
        time.sleep(0.05)
