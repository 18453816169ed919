"""Datasets and their history: names, refs, commits."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any

import psycopg
from pydantic import BaseModel

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


class Dataset(BaseModel):
    dataset_id: int
    name: str
    owner: str
    description: str
    columns: list[str]
    head_commit_id: str | None
    row_count: int | None
    created_at: datetime


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


_DATASETS = """
SELECT d.id AS dataset_id, d.name, d.owner, d.description, d.columns,
       r.commit_id AS head_commit_id, c.row_count, d.created_at
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


def log(conn: Conn, owner: str, name: str, ref: str = MAIN_REF, limit: int = 100) -> list[Commit]:
    """The history reachable from ``ref``, newest first."""
    dataset = get(conn, owner, name)
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
               row_count, columns, job_id::text AS job_id
        FROM chain ORDER BY depth
        """,
        {"d": dataset.dataset_id, "ref": ref, "limit": limit},
    ).fetchall()
    return [Commit.model_validate(r) for r in rows]


def resolve_commit(conn: Conn, owner: str, name: str, commit: str | None) -> tuple[Dataset, Commit]:
    """A commit of the dataset by id (or unique prefix of 6+ characters) or ref name."""
    dataset = get(conn, owner, name)
    wanted = commit or MAIN_REF
    row = conn.execute(
        """
        SELECT c.commit_id, c.parent_commit_id, c.message, c.author, c.authored_at,
               c.committed_at, c.row_count, c.columns, c.job_id::text AS job_id
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


def _like_prefix(value: str) -> str:
    escaped = value.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return escaped + "%"
