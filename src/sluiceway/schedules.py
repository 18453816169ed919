"""Scheduled exports: a dataset carries schedules (``cron(...)`` or ``rate(...)``), each an
export request made again at every firing.

On AWS each schedule is an EventBridge Scheduler schedule whose target starts the export
state machine with ``{"schedule_id": ...}``; locally the stack's scheduler thread
(:func:`fire_due`) starts the same state machine with the same input when a schedule is due.
Either way "Plan row ranges" makes the firing's job (:func:`job_for_firing`), pinning what the
schedule's ref points to at that moment. Expressions use EventBridge Scheduler's syntax.
"""

from __future__ import annotations

import contextlib
import json
import re
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import boto3
from psycopg.types.json import Jsonb
from pydantic import BaseModel, Field

from . import datasets, db, export
from .errors import InvalidRequest, NotFound, StorageUnavailable
from .export import ExportRequest
from .settings import Settings, get_settings

_RATE = re.compile(r"^rate\(\s*(\d+)\s+(minute|minutes|hour|hours|day|days)\s*\)$")
_CRON = re.compile(r"^cron\((.+)\)$")
_UNITS = {"minute": 60, "hour": 3600, "day": 86400}
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


class CreateSchedule(BaseModel):
    name: str = Field(min_length=1, max_length=64)
    expression: str = Field(
        min_length=6, max_length=256, description="cron(m h dom mon dow year) or rate(N unit)."
    )
    export: ExportRequest = ExportRequest()
    enabled: bool = True


class Schedule(BaseModel):
    schedule_id: uuid.UUID
    dataset: str
    name: str
    expression: str
    export: dict[str, Any]
    enabled: bool
    next_fire_at: datetime | None
    last_fired_at: datetime | None
    last_job_id: uuid.UUID | None
    created_at: datetime


def _cron_fields(expression: str) -> str:
    """EventBridge's six cron fields as croniter's five: ``?`` is ``*``, SUN is 1 there, 0 here."""
    match = _CRON.match(expression.strip())
    fields = match.group(1).split() if match else []
    if len(fields) != 6:
        raise InvalidRequest(
            f"{expression!r} is not cron(minutes hours day-of-month month day-of-week year), "
            "e.g. cron(0 3 * * ? *)."
        )
    minute, hour, dom, month, dow, year = fields
    if year != "*":
        raise InvalidRequest(f"{expression!r}: only '*' is supported in the year field.")
    dow = re.sub(r"\d+", lambda m: str((int(m.group()) - 1) % 7), dow.replace("?", "*"))
    return " ".join([minute, hour, dom.replace("?", "*"), month, dow])


def next_fire(expression: str, after: datetime) -> datetime:
    """The first firing of ``expression`` after ``after`` (UTC)."""
    rate = _RATE.match(expression.strip())
    if rate:
        count, unit = int(rate.group(1)), rate.group(2).rstrip("s")
        if count < 1:
            raise InvalidRequest(f"{expression!r}: the rate must be at least 1 {unit}.")
        return after + timedelta(seconds=count * _UNITS[unit])
    from croniter import croniter

    fields = _cron_fields(expression)
    try:
        found: datetime = croniter(fields, after).get_next(datetime)
    except (ValueError, KeyError) as exc:
        raise InvalidRequest(f"{expression!r} is not a valid cron expression: {exc}") from exc
    return found


def check_expression(expression: str) -> str:
    if not (_RATE.match(expression.strip()) or _CRON.match(expression.strip())):
        raise InvalidRequest(
            f"{expression!r} is neither rate(N minutes|hours|days) nor cron(m h dom mon dow year)."
        )
    next_fire(expression, datetime.now(UTC))
    return expression.strip()


def _scheduler(settings: Settings) -> Any:
    return boto3.client("scheduler", region_name=settings.storage.region)


def create(
    conn: db.Conn, owner: str, name: str, body: CreateSchedule, settings: Settings | None = None
) -> Schedule:
    """Add a schedule to a dataset (its request is checked against main now)."""
    settings = settings or get_settings()
    if not _NAME.fullmatch(body.name):
        raise InvalidRequest(
            f"Invalid schedule name {body.name!r}: 1-64 letters, digits, '.', '_' or '-'."
        )
    expression = check_expression(body.expression)
    dataset, commit = datasets.resolve_commit(conn, owner, name, body.export.commit)
    export.check_request(conn, commit, body.export, settings)
    now = datetime.now(UTC)
    with conn.transaction():
        row = conn.execute(
            """
            INSERT INTO dsa_core.export_schedules
                (owner, dataset_id, name, expression, request, enabled, next_fire_at)
            VALUES (%s, %s, %s, %s, %s, %s, %s)
            ON CONFLICT (dataset_id, name) DO NOTHING
            RETURNING schedule_id
            """,
            (
                owner,
                dataset.dataset_id,
                body.name,
                expression,
                Jsonb(body.export.model_dump(mode="json", exclude_none=True)),
                body.enabled,
                next_fire(expression, now),
            ),
        ).fetchone()
        if row is None:
            raise InvalidRequest(f"{name!r} already has a schedule {body.name!r}; delete it first.")
        if settings.exports.scheduler_role_arn:  # on AWS: EventBridge Scheduler fires it
            try:
                _scheduler(settings).create_schedule(
                    Name=str(row["schedule_id"]),
                    GroupName=settings.exports.schedule_group,
                    ScheduleExpression=expression,
                    State="ENABLED" if body.enabled else "DISABLED",
                    FlexibleTimeWindow={"Mode": "OFF"},
                    Target={
                        "Arn": settings.export_state_machine_arn or "",
                        "RoleArn": settings.exports.scheduler_role_arn,
                        "Input": json.dumps({"schedule_id": str(row["schedule_id"])}),
                    },
                )
            except Exception as exc:  # the row rolls back with the transaction
                raise StorageUnavailable(f"EventBridge Scheduler refused it: {exc}") from exc
    return get(conn, owner, name, body.name)


_SELECT = """
SELECT s.schedule_id, d.name AS dataset, s.name, s.expression, s.request AS export, s.enabled,
       s.next_fire_at, s.last_fired_at, s.last_job_id, s.created_at
FROM dsa_core.export_schedules s JOIN dsa_core.datasets d ON d.id = s.dataset_id
"""


def list_schedules(conn: db.Conn, owner: str, name: str) -> list[Schedule]:
    dataset = datasets.get(conn, owner, name)
    rows = conn.execute(
        _SELECT + " WHERE s.dataset_id = %s AND s.owner = %s ORDER BY s.name",
        (dataset.dataset_id, owner),
    ).fetchall()
    return [Schedule.model_validate(r) for r in rows]


def get(conn: db.Conn, owner: str, name: str, schedule: str) -> Schedule:
    dataset = datasets.get(conn, owner, name)
    row = conn.execute(
        _SELECT + " WHERE s.dataset_id = %s AND s.owner = %s AND s.name = %s",
        (dataset.dataset_id, owner, schedule),
    ).fetchone()
    if row is None:
        raise NotFound(f"{name!r} has no schedule {schedule!r}.")
    return Schedule.model_validate(row)


def delete(
    conn: db.Conn, owner: str, name: str, schedule: str, settings: Settings | None = None
) -> None:
    settings = settings or get_settings()
    found = get(conn, owner, name, schedule)
    conn.execute(
        "DELETE FROM dsa_core.export_schedules WHERE schedule_id = %s", (found.schedule_id,)
    )
    if settings.exports.scheduler_role_arn:
        client = _scheduler(settings)
        with contextlib.suppress(client.exceptions.ResourceNotFoundException):
            client.delete_schedule(
                Name=str(found.schedule_id), GroupName=settings.exports.schedule_group
            )


def job_for_firing(conn: db.Conn, schedule_id: uuid.UUID, settings: Settings) -> uuid.UUID:
    """The export job of one firing: the schedule's request, its ref resolved now."""
    row = conn.execute(
        "SELECT s.owner, s.name AS schedule, s.request, d.name FROM dsa_core.export_schedules s "
        "JOIN dsa_core.datasets d ON d.id = s.dataset_id WHERE s.schedule_id = %s",
        (schedule_id,),
    ).fetchone()
    if row is None:
        raise NotFound(f"No schedule {schedule_id} (deleted since it fired?).")
    request = ExportRequest.model_validate(row["request"])
    job_id, _ = export.create_job(
        conn,
        row["owner"],
        row["name"],
        request,
        settings,
        origin={"schedule_id": str(schedule_id), "schedule": row["schedule"]},
    )
    conn.execute(
        "UPDATE dsa_core.export_schedules SET last_job_id = %s, last_fired_at = now() "
        "WHERE schedule_id = %s",
        (job_id, schedule_id),
    )
    return job_id


def fire_due(conn: db.Conn, settings: Settings, now: datetime | None = None) -> list[uuid.UUID]:
    """The local scheduler's tick: start the export state machine for every due schedule."""
    now = now or datetime.now(UTC)
    fired: list[uuid.UUID] = []
    with conn.transaction():
        due = conn.execute(
            "SELECT schedule_id, expression, next_fire_at FROM dsa_core.export_schedules "
            "WHERE enabled AND next_fire_at <= %s FOR UPDATE SKIP LOCKED",
            (now,),
        ).fetchall()
        for s in due:
            conn.execute(
                "UPDATE dsa_core.export_schedules SET next_fire_at = %s WHERE schedule_id = %s",
                (next_fire(s["expression"], now), s["schedule_id"]),
            )
            fired.append(s["schedule_id"])
    client = export.stepfunctions_client(settings)
    for schedule_id in fired:
        client.start_execution(
            stateMachineArn=settings.export_state_machine_arn,
            name=f"schedule-{schedule_id}-{int(now.timestamp())}",
            input=json.dumps({"schedule_id": str(schedule_id)}),
        )
    return fired
