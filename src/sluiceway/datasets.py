"""Datasets and their history: names, refs, commits."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any

import psycopg
from pydantic import BaseModel, ConfigDict, Field

from .errors import InvalidRequest, NotFound
from .names import MAIN_REF

Conn = psycopg.Connection[dict[str, Any]]

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


def check_name(name: str) -> str:
    """A dataset name: 1-128 letters, digits, '.', '_' or '-', starting with a letter or digit."""
    if not _NAME.fullmatch(name or ""):
        raise InvalidRequest(
            f"Invalid dataset name {name!r}: use 1-128 letters, digits, '.', '_' or '-', "
            "starting with a letter or digit."
        )
    return name


class ColumnSchema(BaseModel):
    """One column of a commit: its name, the type all its values fit, and whether any is empty."""

    name: str
    type: str
    nullable: bool


class Dataset(BaseModel):
    # "schema" is also a (deprecated) BaseModel method: the field is schema_, named "schema"
    model_config = ConfigDict(
        validate_by_name=True, validate_by_alias=True, serialize_by_alias=True
    )

    dataset_id: int
    name: str
    owner: str
    description: str
    columns: list[str]
    head_commit_id: str | None
    row_count: int | None
    created_at: datetime
    schema_: list[ColumnSchema] | None = Field(
        default=None,
        alias="schema",
        description="main's columns with their inferred types (None before the first import, "
        "or for a commit made before types were recorded).",
    )
    rules: dict[str, Any] = Field(
        default_factory=dict, description="The validation rules every import is checked against."
    )


class Commit(BaseModel):
    commit_id: str
    parent_commit_id: str | None
    message: str
    author: str
    authored_at: datetime
    committed_at: datetime
    row_count: int
    columns: list[str]
    job_id: str | None
    kind: str = "replace"
    merge_parent_id: str | None = None
    key_columns: list[str] | None = None
    stats: dict[str, int] | None = None


_DATASETS = """
SELECT d.id AS dataset_id, d.name, d.owner, d.description, d.columns,
       r.commit_id AS head_commit_id, c.row_count, d.created_at, c.schema, d.rules
FROM dsa_core.datasets d
LEFT JOIN dsa_core.refs r ON r.dataset_id = d.id AND r.name = %s
LEFT JOIN dsa_core.commits c ON c.commit_id = r.commit_id
"""


def get(conn: Conn, owner: str, name: str) -> Dataset:
    row = conn.execute(
        _DATASETS + " WHERE d.owner = %s AND d.name = %s",
        (MAIN_REF, owner, check_name(name)),
    ).fetchone()
    if row is None:
        raise NotFound(f"No dataset {name!r}.")
    return Dataset.model_validate(row)


def list_datasets(conn: Conn, owner: str) -> list[Dataset]:
    rows = conn.execute(
        _DATASETS + " WHERE d.owner = %s ORDER BY d.name",
        (MAIN_REF, owner),
    ).fetchall()
    return [Dataset.model_validate(r) for r in rows]


_COMMIT_FIELDS = """commit_id, parent_commit_id, message, author, authored_at, committed_at,
               row_count, columns, job_id::text AS job_id, kind, merge_parent_id, key_columns,
               stats"""


def log(
    conn: Conn,
    owner: str,
    name: str,
    ref: str = MAIN_REF,
    limit: int = 100,
    *,
    all_commits: bool = False,
) -> list[Commit]:
    """The history reachable from ``ref`` (first parents), newest first; or every commit of
    the dataset, reachable or not (after a reset), with ``all_commits``."""
    dataset = get(conn, owner, name)
    if all_commits:
        rows = conn.execute(
            f"SELECT {_COMMIT_FIELDS} FROM dsa_core.commits WHERE dataset_id = %s "
            "ORDER BY committed_at DESC, commit_key DESC LIMIT %s",
            (dataset.dataset_id, limit),
        ).fetchall()
        return [Commit.model_validate(r) for r in rows]
    if not conn.execute(
        "SELECT 1 FROM dsa_core.refs WHERE dataset_id = %s AND name = %s",
        (dataset.dataset_id, ref),
    ).fetchone():
        raise NotFound(f"No ref {ref!r} in {name!r}.")
    rows = conn.execute(
        """
        WITH RECURSIVE chain AS (
            SELECT c.*, 1 AS depth FROM dsa_core.commits c
            JOIN dsa_core.refs r ON r.commit_id = c.commit_id
            WHERE r.dataset_id = %(d)s AND r.name = %(ref)s
            UNION ALL
            SELECT p.*, chain.depth + 1 FROM dsa_core.commits p
            JOIN chain ON p.commit_id = chain.parent_commit_id
            WHERE chain.depth < %(limit)s
        )
        SELECT commit_id, parent_commit_id, message, author, authored_at, committed_at,
               row_count, columns, job_id::text AS job_id, kind, merge_parent_id, key_columns,
               stats
        FROM chain ORDER BY depth
        """,
        {"d": dataset.dataset_id, "ref": ref, "limit": limit},
    ).fetchall()
    return [Commit.model_validate(r) for r in rows]


def resolve_commit(
    conn: Conn, owner: str, name: str, commit: str | None, as_of: datetime | None = None
) -> tuple[Dataset, Commit]:
    """A commit of the dataset by id (or unique prefix of 6+ characters), ref name, or time.

    Time travel: ``as_of`` (or a spec ``REF@TIME``, or just an ISO time for main) gives the
    commit the ref pointed to at that moment, from the ref log.
    """
    dataset = get(conn, owner, name)
    wanted = commit or MAIN_REF
    ref, at = _split_time(wanted)
    if as_of is not None:
        at = as_of
        ref = commit or MAIN_REF
    if at is not None:
        if at.tzinfo is None:
            at = at.replace(tzinfo=UTC)
        moved = conn.execute(
            "SELECT new_commit FROM dsa_core.ref_log WHERE dataset_id = %s AND name = %s "
            "AND moved_at <= %s ORDER BY moved_at DESC, id DESC LIMIT 1",
            (dataset.dataset_id, ref, at),
        ).fetchone()
        if moved is None or moved["new_commit"] is None:
            raise NotFound(f"Ref {ref!r} of {name!r} did not exist at {at.isoformat()}.")
        wanted = moved["new_commit"]
    row = conn.execute(
        f"""
        SELECT {_COMMIT_FIELDS}
        FROM dsa_core.commits c
        WHERE c.dataset_id = %(d)s AND (
              c.commit_id = (SELECT commit_id FROM dsa_core.refs WHERE dataset_id = %(d)s AND name = %(w)s)
           OR c.commit_id = %(w)s
           OR (length(%(w)s) >= 6 AND c.commit_id LIKE %(prefix)s))
        LIMIT 2
        """,
        {"d": dataset.dataset_id, "w": wanted, "prefix": _like_prefix(wanted)},
    ).fetchall()
    if not row:
        raise NotFound(f"Dataset {name!r} has no commit or ref {wanted!r}.")
    if len(row) > 1:
        raise InvalidRequest(
            f"{wanted!r} matches more than one commit of {name!r}; give more of the id."
        )
    return dataset, Commit.model_validate(row[0])


_TIME = re.compile(r"^\d{4}-\d{2}-\d{2}([T ][0-9:.]+)?(Z|[+-]\d{2}(:?\d{2})?)?$")


def _split_time(spec: str) -> tuple[str, datetime | None]:
    """``REF@TIME`` -> (REF, TIME); ``TIME`` -> (main, TIME); anything else -> (spec, None)."""
    ref, sep, when = spec.rpartition("@")
    if not sep:
        ref, when = MAIN_REF, spec
        if not _TIME.match(when):
            return spec, None
    try:
        return ref or MAIN_REF, datetime.fromisoformat(when.replace("Z", "+00:00"))
    except ValueError as exc:
        raise InvalidRequest(
            f"{when!r} is not a time; use ISO 8601, e.g. 2026-11-22T10:00:00Z."
        ) from exc


def _like_prefix(value: str) -> str:
    escaped = value.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return escaped + "%"
