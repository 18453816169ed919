"""The sluiceway command line: a client of the HTTP API.

Without ``--api`` (or ``SLUICEWAY_API``) a command starts the embedded stack for its own
duration, so one command is enough; ``sluiceway up`` keeps one running for many.
"""

from __future__ import annotations

import json
import re
import signal
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import click
from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)
from rich.table import Table

from .client import ApiError, Client, write_atomically
from .errors import SluicewayError
from .settings import Settings

err = Console(stderr=True)
out = Console()

_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?i?b?)?\s*$", re.IGNORECASE)
_UNITS = {
    "": 1,
    "b": 1,
    "k": 1000,
    "kb": 1000,
    "kib": 1024,
    "m": 1000**2,
    "mb": 1000**2,
    "mib": 1024**2,
    "g": 1000**3,
    "gb": 1000**3,
    "gib": 1024**3,
    "t": 1000**4,
    "tb": 1000**4,
    "tib": 1024**4,
}


def parse_size(text: str) -> int:
    """'65536', '64KiB', '8MB', '1.5GiB' -> bytes."""
    m = _SIZE.match(text)
    unit = (m.group(2) or "").lower() if m else None
    if not m or unit not in _UNITS:
        raise click.BadParameter(f"{text!r} is not a size (try 65536, 64KiB, 8MiB).")
    return int(float(m.group(1)) * _UNITS[unit])


class State:
    def __init__(self, api: str | None, as_json: bool, token: str | None = None) -> None:
        self.api = api
        self.json = as_json
        self.token = token

    @contextmanager
    def client(self) -> Iterator[Client]:
        """A client of the given API, or of an embedded stack started for this command."""
        if self.api:
            yield Client(self.api, token=self.token)
            return
        from .local.stack import LocalStack

        if not self.json:
            err.print("[dim]starting the embedded stack (pass --api to use a running one)...[/dim]")
        with LocalStack(Settings()) as stack:
            yield Client(stack.api_url, token=stack.local_token)


def _emit(state: State, data: Any, human: str | Table) -> None:
    if state.json:
        click.echo(json.dumps(data, indent=None, default=str))
    else:
        out.print(human)


@click.group()
@click.option(
    "--api", envvar="SLUICEWAY_API", help="API base URL (default: start the embedded stack)."
)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output on stdout.")
@click.option("--token", envvar="SLUICEWAY_TOKEN", help="API token (not needed without --api).")
@click.pass_context
def cli(ctx: click.Context, api: str | None, as_json: bool, token: str | None) -> None:
    """Move massive datasets in and out of PostgreSQL through object storage."""
    ctx.obj = State(api, as_json, token)


def _state_option(*decls: str, attr: str, **kwargs: Any) -> Callable[[Any], Any]:
    """An option every subcommand also takes, setting ``attr`` of the shared :class:`State`."""

    def callback(ctx: click.Context, _: click.Parameter, value: Any) -> None:
        if value:
            setattr(ctx.find_object(State), attr, value)

    return click.option(*decls, expose_value=False, callback=callback, **kwargs)


_COMMON_OPTIONS = (
    _state_option(
        "--json", "as_json", attr="json", is_flag=True, help="Machine-readable output on stdout."
    ),
    _state_option(
        "--api", "api_url", attr="api", help="API base URL (default: start the embedded stack)."
    ),
    _state_option(
        "--token", "token_value", attr="token", help="API token (not needed without --api)."
    ),
)


def common(f: Any) -> Any:
    for option in _COMMON_OPTIONS:
        f = option(f)
    return f


@cli.command()
@click.option("--port", default=8000, show_default=True, help="API port on 127.0.0.1.")
def up(port: int) -> None:
    """Run the embedded stack until Ctrl-C: PostgreSQL, S3, Step Functions, the API."""
    from .local.stack import LocalStack

    def stop(*_: object) -> None:
        raise KeyboardInterrupt  # SIGTERM (kill, a service manager) stops cleanly, like Ctrl-C

    signal.signal(signal.SIGTERM, stop)
    with LocalStack(Settings(), api_port=port) as stack:
        click.echo(f"API        {stack.api_url}", err=True)
        click.echo(
            f"S3         {stack.s3_endpoint}  (bucket {stack.settings.storage.bucket})", err=True
        )
        click.echo(f"PostgreSQL {stack.database_url}", err=True)
        click.echo(f"Token      {stack.local_token}  (owner local; SLUICEWAY_TOKEN)", err=True)
        if stack.recovered:
            click.echo(
                f"Failed {len(stack.recovered)} job(s) a stopped stack left unfinished: "
                + ", ".join(str(j) for j in stack.recovered),
                err=True,
            )
        err.print("[dim]Ctrl-C stops everything.[/dim]")
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            err.print("stopping...")


def _progress(enabled: bool) -> Progress:
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TextColumn("{task.fields[rows]}"),
        TimeRemainingColumn(),
        console=err,
        disable=not enabled,
        transient=False,
    )


def run_import(
    client: Client,
    path: Path,
    dataset: str,
    chunk_size: int | None,
    message: str | None,
    show_progress: bool,
    extra_options: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Upload, wait for the import's job, and return a summary (shared by import and demo)."""
    options: dict[str, Any] = {k: v for k, v in (extra_options or {}).items() if v is not None}
    if chunk_size:
        options["chunk_bytes"] = chunk_size
    if message:
        options["message"] = message
    started = time.perf_counter()
    size = path.stat().st_size
    with _progress(show_progress) as bar:
        up_task = bar.add_task("upload", total=size or 1, rows="")
        created = client.upload_file(
            path, dataset, options, on_bytes=lambda n: bar.advance(up_task, n)
        )
        bar.update(up_task, completed=size or 1)
        imp_task = bar.add_task("import", total=size or 1, rows="")

        def show(job: dict[str, Any]) -> None:
            p = job.get("progress", {})
            bar.update(
                imp_task, completed=p.get("bytes_done", 0), rows=f"{p.get('rows_done', 0):,} rows"
            )

        job = client.wait_for_job(created["job_id"], show)
        if job["status"] == "completed":
            bar.update(imp_task, completed=size or 1)
    summary = job.get("output_summary") or {}
    return {
        "job_id": job["job_id"],
        "status": job["status"],
        "dataset": dataset,
        "commit_id": summary.get("commit_id"),
        "parent_commit_id": summary.get("parent_commit_id"),
        "rows": summary.get("rows"),
        "unchanged": bool(summary.get("unchanged")),
        "changes": summary.get("changes"),
        "bytes": size,
        "seconds": round(time.perf_counter() - started, 3),
        "error": job.get("error_message"),
        "error_code": job.get("error_code"),
        "accepted_rows": job.get("progress", {}).get("accepted_rows"),
        "rejected_rows": job.get("progress", {}).get("rejected_rows"),
        "report_key": job.get("progress", {}).get("report_key"),
        "report_url": job.get("report_url"),
    }


@cli.command("import")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--dataset", "-d", required=True, help="Dataset to import into (created if new).")
@click.option(
    "--chunk-size", help="Bytes per parallel range, e.g. 64MiB (default: sized for Lambda)."
)
@click.option("--message", "-m", help="Commit message.")
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["csv", "tsv", "jsonl", "json"], case_sensitive=False),
    help="File format (default: detected from the name and the first bytes; .gz/.zst inflated).",
)
@click.option("--delimiter", help="CSV delimiter: one character or 'tab' (default: sniffed).")
@click.option("--no-header", is_flag=True, help="The CSV has no header row (column_1, ...).")
@click.option("--encoding", help="utf-8 (default), latin-1, cp1252 or utf-16.")
@click.option(
    "--mode",
    type=click.Choice(["replace", "append", "upsert", "delete"]),
    default="replace",
    show_default=True,
    help="replace: exactly the file's rows; append: after the parent's; upsert/delete: by --key.",
)
@click.option(
    "--key", "keys", multiple=True, help="Key column(s) for upsert/delete (repeat, or a,b)."
)
@click.option("--branch", help="Commit to this ref (created from main if new).")
@click.option(
    "--rules",
    "rules_json",
    help="Validation rules of this import: JSON, or @FILE holding it (see `sluiceway rules`).",
)
@click.option("--max-errors", type=int, help="Rejected records tolerated (default 0).")
@click.option("--max-error-percent", type=float, help="Rejected records tolerated, in %.")
@common
@click.pass_obj
def import_(
    state: State,
    file: Path,
    dataset: str,
    chunk_size: str | None,
    message: str | None,
    fmt: str | None,
    delimiter: str | None,
    no_header: bool,
    encoding: str | None,
    mode: str,
    keys: tuple[str, ...],
    branch: str | None,
    rules_json: str | None,
    max_errors: int | None,
    max_error_percent: float | None,
) -> None:
    """Import FILE (CSV, TSV, JSON Lines or a JSON array; may be .gz/.zst) into a dataset as
    a new commit on main (or --branch)."""
    chunk = parse_size(chunk_size) if chunk_size else None
    key = [k.strip() for part in keys for k in part.split(",") if k.strip()]
    extra: dict[str, Any] = {
        "format": fmt,
        "delimiter": delimiter,
        "header": False if no_header else None,
        "encoding": encoding,
        "mode": mode,
        "key": key or None,
        "branch": branch,
    }
    given = parse_rules(rules_json) if rules_json else {}
    if max_errors is not None:
        given["max_errors"] = max_errors
    if max_error_percent is not None:
        given["max_error_percent"] = max_error_percent
    extra["rules"] = given or None
    with state.client() as client:
        result = run_import(
            client, file, dataset, chunk, message, show_progress=not state.json, extra_options=extra
        )
    if state.json:
        click.echo(json.dumps(result))
    elif result["status"] == "completed" and result["unchanged"]:
        out.print(f"[yellow]unchanged[/yellow]: {file.name} changes nothing; no commit was made")
    elif result["status"] == "completed":
        out.print(
            f"[green]imported[/green] {result['rows']:,} rows ({result['bytes']:,} bytes) into "
            f"[bold]{dataset}[/bold] in {result['seconds']:.2f} s\n"
            f"commit {result['commit_id']} (parent {result['parent_commit_id'] or 'none'}), job {result['job_id']}"
        )
    if result.get("rejected_rows"):
        err.print(
            f"[yellow]{result['rejected_rows']:,} rejected row(s)[/yellow]; report: "
            f"{result.get('report_url') or result.get('report_key')}"
        )
    if result["status"] != "completed":
        err.print(f"[red]import failed[/red] ({result['error_code']}): {result['error']}")
        sys.exit(1)


def parse_rules(text: str) -> dict[str, Any]:
    """Rules given as JSON text, or as ``@FILE`` holding it."""
    if text.startswith("@"):
        text = Path(text[1:]).read_text()
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise click.BadParameter(f"the rules are not JSON: {exc}") from exc
    if not isinstance(value, dict):
        raise click.BadParameter('the rules are a JSON object, e.g. {"min_records": 1}')
    return value


@cli.command("schema")
@click.argument("dataset")
@common
@click.pass_obj
def schema_(state: State, dataset: str) -> None:
    """The columns of DATASET's main commit with their inferred types."""
    with state.client() as client:
        found = client.call("GET", f"/datasets/{dataset}")
    columns = found.get("schema") or []
    table = Table("column", "type", "nullable")
    for c in columns:
        table.add_row(c["name"], c["type"], "yes" if c["nullable"] else "no")
    _emit(state, {"dataset": dataset, "schema": found.get("schema")}, table)


@cli.command("rules")
@click.argument("dataset")
@click.option("--set", "new_rules", help="Replace the rules: JSON, or @FILE holding it.")
@click.option("--clear", is_flag=True, help="Drop every rule of the dataset.")
@common
@click.pass_obj
def rules_(state: State, dataset: str, new_rules: str | None, clear: bool) -> None:
    """Show or set DATASET's validation rules, e.g. --set '{"required_columns": ["id"],
    "columns": {"id": {"type": "integer", "nullable": false}}, "max_error_percent": 1,
    "schema_changes": "add_columns"}'."""
    with state.client() as client:
        if clear:
            answer = client.call("DELETE", f"/datasets/{dataset}/rules")
        elif new_rules:
            answer = client.call("PUT", f"/datasets/{dataset}/rules", parse_rules(new_rules))
        else:
            answer = client.call("GET", f"/datasets/{dataset}/rules")
    _emit(state, answer, json.dumps(answer["rules"], indent=2))


def parse_where(conditions: tuple[str, ...]) -> dict[str, Any] | None:
    """``--where category=test``, ``value>=10``, ``value<100``: numbers compare as numbers."""
    found: dict[str, Any] = {}
    ops = {">=": "gte", "<=": "lte", ">": "gt", "<": "lt", "=": "eq"}
    for text in conditions:
        match = re.match(r"^(.+?)(>=|<=|>|<|=)(.*)$", text)
        if not match:
            raise click.BadParameter(f"{text!r}: use COLUMN=VALUE, COLUMN>=VALUE, COLUMN<VALUE ...")
        column, op, raw = match.groups()
        value: Any = raw
        if re.fullmatch(r"-?\d+(\.\d+)?", raw) and op != "=":
            value = float(raw) if "." in raw else int(raw)
        bounds = found.setdefault(column, {})
        bounds[ops[op]] = value
    # a plain equality is the column's value itself (string equality, as typed)
    return {c: (b["eq"] if list(b) == ["eq"] else b) for c, b in found.items()} or None


@cli.command()
@click.argument("dataset")
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["csv", "json", "jsonl", "parquet"]),
    default="csv",
    show_default=True,
)
@click.option("--out", "out_path", required=True, type=click.Path(dir_okay=False, path_type=Path))
@click.option("--commit", help="Commit id, ref, REF@TIME or a time (default: main).")
@click.option("--columns", help="Only these columns, in this order (comma-separated).")
@click.option(
    "--where",
    "where",
    multiple=True,
    help="Row filter, e.g. category=test or 'value>=10' (repeat).",
)
@click.option(
    "--compression", type=click.Choice(["none", "gzip"]), default="none", show_default=True
)
@click.option("--part-rows", type=int, help="Rows per part written in parallel.")
@common
@click.pass_obj
def export(
    state: State,
    dataset: str,
    fmt: str,
    out_path: Path,
    commit: str | None,
    columns: str | None,
    where: tuple[str, ...],
    compression: str,
    part_rows: int | None,
) -> None:
    """Export a commit of DATASET to a local file, in logical row order.

    The export state machine writes the commit's parts to object storage in parallel; they
    are then downloaded and joined into OUT.
    """
    request: dict[str, Any] = {"format": fmt, "commit": commit, "compression": compression}
    if columns:
        request["columns"] = [c.strip() for c in columns.split(",") if c.strip()]
    if where:
        request["filter"] = parse_where(where)
    if part_rows:
        request["part_rows"] = part_rows
    started = time.perf_counter()
    with state.client() as client, _progress(not state.json) as bar:
        task = bar.add_task("export", total=None, rows="")

        def show(status: dict[str, Any]) -> None:
            total = status.get("total_records")
            bar.update(
                task,
                total=total or None,
                completed=status.get("processed_records", 0),
                rows=f"{status.get('processed_records', 0):,} rows read",
            )

        status, urls = client.run_export(dataset, request, show)
        if urls is None:
            bar.stop()
            err.print(
                f"[red]export failed[/red] ({status.get('error_code')}): {status.get('error')}"
            )
            sys.exit(1)
        bar.update(task, completed=status.get("total_records") or 1)
        down = bar.add_task("download", total=urls["bytes"] or 1, rows=f"{urls['rows']:,} rows")
        written = write_atomically(
            out_path, lambda f: client.download_export(urls, f, lambda n: bar.advance(down, n))
        )
    data = {
        "job_id": status["job_id"],
        "dataset": dataset,
        "commit_id": status["commit_id"],
        "format": fmt,
        "compression": compression,
        "rows": urls["rows"],
        "bytes": urls["bytes"],
        "parts": len(urls["parts"]),
        "manifest_key": urls["manifest_key"],
        "seconds": round(time.perf_counter() - started, 3),
        "out": str(out_path),
        "written": written,
    }
    _emit(
        state,
        data,
        f"exported {data['rows']:,} rows of {dataset}@{data['commit_id'][:12]} "
        f"in {data['parts']} part(s) to {out_path} ({written:,} bytes)",
    )


@cli.group()
def jobs() -> None:
    """Imports and exports: status and progress."""


@jobs.command("list")
@common
@click.pass_obj
def jobs_list(state: State) -> None:
    """Recent jobs, newest first."""
    with state.client() as client:
        found = client.call("GET", "/jobs")["jobs"]
    table = Table("job", "type", "status", "dataset", "rows", "created")
    for j in found:
        table.add_row(
            j["job_id"],
            j["run_type"],
            j["status"],
            j["dataset"] or "",
            f"{j['progress'].get('rows_done', 0):,}",
            j["created_at"][:19],
        )
    _emit(state, found, table)


@jobs.command("show")
@click.argument("job_id")
@common
@click.pass_obj
def jobs_show(state: State, job_id: str) -> None:
    """One job in full."""
    with state.client() as client:
        job = client.call("GET", f"/jobs/{job_id}")
    _emit(state, job, json.dumps(job, indent=2))


@cli.group()
def uploads() -> None:
    """Uploads and where each is in its lifecycle (uploading ... fresh | failed)."""


@uploads.command("list")
@click.option(
    "--status",
    type=click.Choice(
        ["uploading", "uploaded", "validating", "processing", "fresh", "failed", "aborted"]
    ),
    help="Only uploads in this state.",
)
@click.option("--dataset", "-d", help="Only uploads into this dataset.")
@common
@click.pass_obj
def uploads_list(state: State, status: str | None, dataset: str | None) -> None:
    """Your uploads, newest first."""
    with state.client() as client:
        found = client.list_uploads(status, dataset)
    table = Table("upload", "status", "dataset", "file", "bytes", "attempts", "created", "error")
    for u in found:
        table.add_row(
            u["upload_id"],
            u["status"],
            u["dataset"],
            u["filename"],
            f"{u['size_bytes']:,}" if u["size_bytes"] is not None else "",
            str(u["attempts"]),
            u["created_at"][:19],
            (u["error_message"] or "")[:80],
        )
    _emit(state, found, table)


@uploads.command("retry")
@click.argument("upload_id")
@click.option("--wait/--no-wait", default=False, help="Wait for the new import to end.")
@common
@click.pass_obj
def uploads_retry(state: State, upload_id: str, wait: bool) -> None:
    """Run a failed upload's import again, on the same object, as a new job."""
    with state.client() as client:
        result = client.retry_upload(upload_id)
        if wait:
            job = client.wait_for_job(result["job_id"])
            result = {**result, "status": "fresh" if job["status"] == "completed" else "failed"}
            result["error_message"] = job["error_message"]
            result["error_code"] = job.get("error_code")
    _emit(state, result, f"upload {upload_id}: {result['status']} (job {result['job_id']})")
    if result["status"] == "failed":
        sys.exit(1)


@uploads.command("cleanup")
@click.option(
    "--older-than-hours",
    default=24.0,
    show_default=True,
    type=click.FloatRange(min=0),
    help="Abort multipart uploads still open after this many hours.",
)
@common
@click.pass_obj
def uploads_cleanup(state: State, older_than_hours: float) -> None:
    """Abort abandoned multipart uploads (imports, documents) and idle record sessions."""
    with state.client() as client:
        result = client.cleanup_uploads(older_than_hours)
    _emit(
        state,
        result,
        f"aborted {len(result['aborted_uploads'])} upload(s), "
        f"{len(result['aborted_documents'])} document upload(s) and "
        f"{len(result['aborted_sessions'])} record session(s) older than {older_than_hours:g} h",
    )


@cli.group()
def documents() -> None:
    """Documents: any file up to 1 TB, stored and downloaded, never imported."""


@documents.command("put")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--category", default="", help="A category to list by.")
@click.option("--description", default="", help="What the document is.")
@click.option("--content-type", default="application/octet-stream", show_default=True)
@common
@click.pass_obj
def documents_put(
    state: State, file: Path, category: str, description: str, content_type: str
) -> None:
    """Upload FILE as a document (presigned multipart, parts in parallel)."""
    size = file.stat().st_size
    with state.client() as client, _progress(not state.json) as bar:
        task = bar.add_task("upload", total=size or 1, rows="")
        doc = client.upload_document(
            file,
            category=category,
            description=description,
            content_type=content_type,
            on_bytes=lambda n: bar.advance(task, n),
        )
    _emit(state, doc, f"stored {doc['name']} ({doc['size_bytes']:,} bytes) as {doc['document_id']}")


@documents.command("get")
@click.argument("document_id")
@click.option(
    "--out",
    "out_path",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Where to write it (default: its name, in the current directory).",
)
@common
@click.pass_obj
def documents_get(state: State, document_id: str, out_path: Path | None) -> None:
    """Download a document; an interrupted download resumes where it stopped (HTTP Range)."""
    from .upload import safe_filename

    with state.client() as client:
        meta = client.call("GET", f"/documents/{document_id}")
        target = out_path or Path(safe_filename(meta["name"]))
        with _progress(not state.json) as bar:
            task = bar.add_task("download", total=meta["size_bytes"] or 1, rows="")
            done = client.download_document(
                document_id, target, on_bytes=lambda n: bar.advance(task, n)
            )
    done.pop("url", None)
    resumed = f" (resumed at byte {done['resumed_from']:,})" if done["resumed_from"] else ""
    _emit(state, done, f"wrote {target} ({done['size_bytes']:,} bytes){resumed}")


@documents.command("list")
@click.option("--category", help="Only this category.")
@common
@click.pass_obj
def documents_list(state: State, category: str | None) -> None:
    """Your documents, newest first."""
    query = f"?{urlencode({'category': category})}" if category else ""
    with state.client() as client:
        found = client.call("GET", f"/documents{query}")["documents"]
    table = Table("document", "name", "category", "bytes", "status", "created")
    for d in found:
        table.add_row(
            d["document_id"],
            d["name"],
            d["category"],
            f"{d['size_bytes']:,}",
            d["status"],
            d["created_at"][:19],
        )
    _emit(state, found, table)


@documents.command("rm")
@click.argument("document_id")
@common
@click.pass_obj
def documents_rm(state: State, document_id: str) -> None:
    """Delete a document (its object and its record)."""
    with state.client() as client:
        client.call("DELETE", f"/documents/{document_id}")
    _emit(state, {"deleted": document_id}, f"deleted {document_id}")


def _database_settings() -> Settings:
    """Settings with a database URL: DATABASE_URL, or the embedded PostgreSQL, started."""
    from .local.stack import start_embedded_postgres

    settings = Settings()
    if not settings.database_url:
        _, url = start_embedded_postgres(settings.home)
        settings = settings.model_copy(update={"database_url": url})
    return settings


@cli.group()
def token() -> None:
    """API tokens (stored hashed; shown once)."""


@token.command("create")
@click.option("--owner", required=True, help="Who the token speaks for.")
@click.option("--name", default="", help="A label, e.g. the machine or person it is for.")
def token_create(owner: str, name: str) -> None:
    """Issue a token; print it once."""
    from . import auth, db

    settings = _database_settings()
    db.migrate(settings)
    with db.connect(settings, autocommit=True) as conn:
        click.echo(auth.create_token(conn, owner, name))


@cli.command()
@click.option(
    "--older-than-hours",
    type=click.FloatRange(min=0),
    default=None,
    help="Abort uploads started this many hours ago or more "
    "(default SLUICEWAY_STORAGE__STALE_UPLOAD_HOURS, 24).",
)
@_COMMON_OPTIONS[0]
@click.pass_obj
def cleanup(state: State, older_than_hours: float | None) -> None:
    """Abort the multipart uploads jobs left open in S3 (export parts, staged copies, session
    assemblies) once their job has ended; a user's upload in progress is never touched.

    Talks to the database (DATABASE_URL, or the embedded PostgreSQL) and the S3 of the
    settings itself, for every owner. `sluiceway up` does this every
    SLUICEWAY_STORAGE__SWEEP_SECONDS; on AWS the bucket's lifecycle rule does it after 2 days.
    """
    from . import db, recovery
    from .errors import StackError

    settings = Settings()
    if not settings.storage_endpoint() and not (
        settings.database_url or settings.database_secret_arn
    ):
        raise StackError(
            "The embedded S3 lives only inside `sluiceway up`, which sweeps it itself every "
            "SLUICEWAY_STORAGE__SWEEP_SECONDS. To sweep it now, run this with "
            "AWS_ENDPOINT_URL_S3 and DATABASE_URL set to the S3 and PostgreSQL URLs it printed."
        )
    settings = _database_settings()
    with db.connect(settings, autocommit=True) as conn:
        swept = recovery.sweep(conn, settings, older_than_hours)
    hours = settings.storage.stale_upload_hours if older_than_hours is None else older_than_hours
    _emit(
        state,
        {"aborted": [u.model_dump(mode="json") for u in swept], "older_than_hours": hours},
        f"aborted {len(swept)} multipart upload(s) older than {hours:g} h"
        + "".join(f"\n  {u.key}" for u in swept),
    )


@cli.command()
def openapi() -> None:
    """Print the API's OpenAPI document (what docs/openapi.json holds)."""
    from .api import openapi_json

    click.echo(openapi_json())


@cli.command()
def migrate() -> None:
    """Apply pending database migrations (DATABASE_URL, or the embedded PostgreSQL)."""
    from . import db

    settings = _database_settings()
    applied = db.migrate(settings)
    err.print(f"applied {len(applied)} migration(s): {', '.join(applied) or 'none pending'}")


@cli.command()
@click.option("--rows", default=200_000, show_default=True, help="Rows in the generated dataset.")
@click.option("--chunk-size", default="2MiB", show_default=True, help="Bytes per parallel range.")
@common
@click.pass_obj
def demo(state: State, rows: int, chunk_size: str) -> None:
    """Generate a CSV, import it through the real pipeline, export it back, and compare."""
    import csv
    import tempfile

    from .sample import write_csv

    with tempfile.TemporaryDirectory() as tmp:
        src = write_csv(Path(tmp) / "demo.csv", rows)
        err.print(
            f"generated {src.stat().st_size:,} bytes, {rows:,} rows x 8 columns (quoted text, "
            "embedded commas, quotes and newlines)"
        )
        with state.client() as client:
            result = run_import(
                client, src, "demo", parse_size(chunk_size), "demo import", not state.json
            )
            if result["status"] != "completed":
                err.print(f"[red]import failed[/red] ({result['error_code']}): {result['error']}")
                sys.exit(1)
            export_started = time.perf_counter()
            status, urls = client.run_export("demo", {"format": "csv"})
            if urls is None:
                err.print(
                    f"[red]export failed[/red] ({status.get('error_code')}): {status.get('error')}"
                )
                sys.exit(1)
            back = Path(tmp) / "back.csv"
            write_atomically(back, lambda f: client.download_export(urls, f))
            exp = {"rows": urls["rows"], "seconds": time.perf_counter() - export_started}
            commits = client.call("GET", "/datasets/demo/commits")["commits"]
        with (
            src.open(newline="", encoding="utf-8") as a,
            back.open(newline="", encoding="utf-8") as b,
        ):
            same = list(csv.reader(a)) == list(csv.reader(b))
    summary = {
        **result,
        "export_rows": exp["rows"],
        "export_seconds": exp["seconds"],
        "round_trip_identical": same,
        "commits_in_history": len(commits),
    }
    _emit(
        state,
        summary,
        f"\n[bold]demo[/bold]: imported {result['rows']:,} rows in {result['seconds']:.2f} s "
        f"as commit {result['commit_id'][:12]} (parent {(result['parent_commit_id'] or 'none')[:12]}); "
        f"exported {exp['rows']:,} rows in {exp['seconds']:.2f} s; round trip identical: {same}; "
        f"{len(commits)} commit(s) in the history of 'demo'.",
    )
    if not same:
        sys.exit(1)


# registers log, diff, rows, branch, reset, revert, merge and gc on `cli`
from . import cli_history  # noqa: E402, F401


def main() -> None:
    try:
        cli(standalone_mode=True)
    except (SluicewayError, ApiError) as exc:
        err.print(f"[red]error[/red]: {exc.message}")
        sys.exit(2)


if __name__ == "__main__":
    main()
