"""PostgreSQL access: connections and the one command that applies migrations."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from functools import lru_cache
from importlib import resources
from typing import Any
from urllib.parse import quote, urlsplit, urlunsplit

import psycopg
from psycopg import sql
from psycopg.rows import dict_row
from psycopg_pool import ConnectionPool, PoolTimeout

from .errors import DatabaseUnavailable
from .settings import Settings, get_settings

Conn = psycopg.Connection[dict[str, Any]]

# Keyed by (thread, URL): a Lambda container runs one invocation at a time, but the local
# stack serves the API and runs state-machine tasks on many threads of one process, and a
# connection's transaction must never take in another thread's statements.
_connections: dict[tuple[int, str], Conn] = {}
_connections_lock = threading.Lock()
# The local stack's process starts a thread per HTTP connection and per state-machine task;
# there a pool bounds the connections, and each thread gives its own back when its request
# or task ends (release_thread). On Lambda there is no pool: one connection per container.
_pools: dict[str, ConnectionPool[Conn]] = {}


def database_url(settings: Settings | None = None) -> str:
    settings = settings or get_settings()
    if not settings.database_url and settings.database_secret_arn:
        return _url_from_secret(settings.database_secret_arn, settings.database_host)
    if not settings.database_url:
        raise DatabaseUnavailable(
            "No database configured: set DATABASE_URL, or run through the embedded stack "
            "(`sluiceway up`, or any sluiceway command without --api)."
        )
    return settings.database_url


@lru_cache(maxsize=4)
def _url_from_secret(secret_arn: str, host: str | None) -> str:
    """A connection URL from an RDS-managed secret (fetched once per container)."""
    from aws_lambda_powertools.utilities.parameters import get_secret

    try:
        secret = json.loads(str(get_secret(secret_arn)))
    except Exception as exc:
        raise DatabaseUnavailable(f"Cannot read the database secret {secret_arn}: {exc}") from exc
    user, password = quote(secret["username"], safe=""), quote(secret["password"], safe="")
    where = f"{host or secret['host']}:{secret.get('port', 5432)}"
    return (
        f"postgresql://{user}:{password}@{where}/{secret.get('dbname', 'postgres')}?sslmode=require"
    )


def connect(settings: Settings | None = None, *, autocommit: bool = False) -> Conn:
    """A new connection whose rows come back as dicts."""
    settings = settings or get_settings()
    try:
        return psycopg.connect(
            database_url(settings),
            autocommit=autocommit,
            row_factory=dict_row,
            connect_timeout=settings.database.connect_timeout_seconds,
            application_name="sluiceway",
        )
    except psycopg.OperationalError as exc:
        raise DatabaseUnavailable(f"Cannot connect to PostgreSQL: {exc}".strip()) from exc


def shared_connection(settings: Settings | None = None) -> Conn:
    """One autocommit connection per thread and URL, reused across Lambda invocations."""
    url = database_url(settings)
    key = (threading.get_ident(), url)
    conn = _connections.get(key)
    if conn is None or conn.closed or conn.broken:
        pool = _pools.get(url)
        if pool is None:
            conn = connect(settings, autocommit=True)
        else:
            try:
                conn = pool.getconn()
            except PoolTimeout as exc:
                raise DatabaseUnavailable(
                    f"All {pool.max_size} database connections stayed busy for "
                    f"{pool.timeout:.0f} s; try again."
                ) from exc
        with _connections_lock:
            _connections[key] = conn
    return conn


def pool_connections(settings: Settings, max_size: int) -> None:
    """From now on, threads of this process take their connections from a pool of at most
    ``max_size`` (and wait for one when all are busy) and must :func:`release_thread`."""
    url = database_url(settings)
    if url not in _pools:
        _pools[url] = ConnectionPool(
            url,
            min_size=1,
            max_size=max_size,
            timeout=30,
            # a connection idle in the pool across a database restart is dead: find out on
            # checkout (one round trip), not in the middle of a request
            check=ConnectionPool.check_connection,
            kwargs={"autocommit": True, "row_factory": dict_row, "application_name": "sluiceway"},
            open=True,
        )


def release_thread() -> None:
    """Give the connections this thread took from a pool back (its request or task ended).

    Connections made without a pool stay, for the next invocation on this thread.
    """
    me = threading.get_ident()
    with _connections_lock:
        mine = [(key, conn) for key, conn in _connections.items() if key[0] == me]
        taken = [(key, conn) for key, conn in mine if key[1] in _pools]
        for key, _ in taken:
            del _connections[key]
    for key, conn in taken:
        _pools[key[1]].putconn(conn)  # rolls back what a failed request left open


def close_all() -> None:
    """Close every connection this process opened through :func:`shared_connection`."""
    with _connections_lock:
        for key, conn in _connections.items():
            if key[1] not in _pools:
                conn.close()
        _connections.clear()
        for pool in _pools.values():
            pool.close()
        _pools.clear()


# Local memory for a session's temporary tables (PostgreSQL's default: 8 MB). An import's range
# stages its rows in temp tables of ~100-200 MB, and a re-import's commit diffs ~280,000 leaves
# and ~240,000 rows in temp tables of its own: with 8 MB its pages are written out and read
# back (45 MB written and 85 MB read for a 1% re-import of 1M rows, bench/profile_import.py).
# Memory is taken only as a session uses it.
TEMP_BUFFERS = "256MB"


# Without these the planner answers a probe of row_store's or row_leaves' key (NOT EXISTS, a
# join, a semi-join) with a hash (or merge) join that reads the whole table, every dataset's
# rows, once per range: a range's cost would grow with everything ever stored (one range into
# 3.3M stored rows: 5-9 s against 2.5-3 s probing the index, bench/README.md).
# Probing the primary key costs O(range x log(store)). Sequential scans go too: when
# row_store's statistics say it is empty (ANALYZEd before the first import, or after gc swept
# every row) the planner's cheapest probe is a scan of row_store per row, and an insert's
# own rows lengthen every scan: quadratic, a 500,000-row range still running after ten
# minutes (tests/integration/test_load_plan.py). A range's temp tables have no index, so they
# are still read by a scan.
_PROBE_BY_INDEX = (
    "SET LOCAL enable_hashjoin = off",
    "SET LOCAL enable_mergejoin = off",
    "SET LOCAL enable_seqscan = off",
)
_PLAN_AS_USUAL = ("RESET enable_hashjoin", "RESET enable_mergejoin", "RESET enable_seqscan")


@contextmanager
def probing_by_index(conn: Conn) -> Iterator[None]:
    """Plan the statements inside as probes of an index, never a scan or a hash of a stored
    table. SET LOCAL: an error inside rolls the settings back with the transaction (or
    savepoint) it aborts; otherwise they are RESET on the way out, so the rest plans as usual
    (and so it does not nest: the inner one's RESET would end the outer one's too)."""
    for statement in _PROBE_BY_INDEX:
        conn.execute(statement)
    yield
    for statement in _PLAN_AS_USUAL:
        conn.execute(statement)


# A first import's keys are all new, and then a lookup of each in the stored table's key before
# its insert (NOT EXISTS, or ON CONFLICT's speculative insert) repeats what the key's unique
# check does anyway: a second descent of the B-tree for every row. So when none of the first
# UNPROBED_SAMPLE keys is stored, they go in without the lookup; one stored after all (one the
# sample missed, or one a concurrent range commits first) is a unique violation that undoes
# just that attempt, and the caller inserts the usual way. Inserted in key order, the first
# stored key of k is met after about 1/(k+1) of the work: the attempt costs little when it
# fails. store_growth's eight steps of row_store (715,000 rows each, into up to 5M stored,
# 7 Dec 2026): 15.3-16.0 s of inserts without the lookup against 21.5-22.4 s with it; a 10M
# import's leaves into row_leaves: 6.5 s against 11.4 s (bench/README.md).
UNPROBED_SAMPLE = 1000


def inserted_unprobed(
    conn: Conn,
    source: sql.Identifier,
    stored: sql.Identifier,
    key: str,
    inserts: Sequence[sql.Composed],
) -> bool:
    """Run ``inserts`` (each a plain INSERT, without a lookup of its own) in a savepoint if
    none of ``source``'s first UNPROBED_SAMPLE ``key`` values is in ``stored``'s (a table
    whose ``key`` is unique): whether they ran (False: nothing was written)."""
    with probing_by_index(conn):
        found = conn.execute(
            sql.SQL(
                "SELECT EXISTS (SELECT 1 FROM (SELECT {k} FROM {source} LIMIT {n}) s "
                "JOIN {stored} r ON r.{k} = s.{k}) AS found"
            ).format(
                k=sql.Identifier(key),
                source=source,
                stored=stored,
                n=sql.Literal(UNPROBED_SAMPLE),
            )
        ).fetchone()
    if found is None or found["found"]:
        return False
    try:
        with conn.transaction():  # a savepoint: a stored key undoes only this attempt
            for statement in inserts:
                conn.execute(statement)
    except psycopg.errors.UniqueViolation:
        return False
    return True


def room_for_temp_tables(conn: Conn) -> bool:
    """Give this session TEMP_BUFFERS for its temp tables; call before it creates any.

    PostgreSQL refuses to change temp_buffers once a session has used a temp table (unless the
    value stays the same), so a pooled connection that already served, say, an API diff keeps
    what it had: the error is caught in a savepoint and the caller goes on. Returns whether
    the session now has TEMP_BUFFERS.
    """
    try:
        with conn.transaction():
            conn.execute(f"SET temp_buffers = '{TEMP_BUFFERS}'")
    except psycopg.errors.InvalidParameterValue:
        return False
    return True


@contextmanager
def transaction(settings: Settings | None = None) -> Iterator[Conn]:
    """A shared connection inside one transaction."""
    conn = shared_connection(settings)
    with conn.transaction():
        yield conn


def _yoyo_url(url: str) -> str:
    parts = urlsplit(url)
    scheme = "postgresql+psycopg" if parts.scheme in ("postgres", "postgresql") else parts.scheme
    return urlunsplit((scheme, parts.netloc, parts.path, parts.query, parts.fragment))


def migrate(settings: Settings | None = None) -> list[str]:
    """Apply every pending migration; returns the ids applied. Safe to run concurrently."""
    from yoyo import get_backend, read_migrations

    backend = get_backend(
        _yoyo_url(database_url(settings)), migration_table="_sluiceway_migrations"
    )
    with resources.as_file(resources.files("sluiceway") / "migrations") as path:
        migrations = read_migrations(str(path))
        with backend.lock():
            pending = backend.to_apply(migrations)
            backend.apply_migrations(pending)
    return [m.id for m in pending]
