"""CLI commands for history: log, diff, rows, branches, reset, revert, merge, gc.

Registered on :data:`sluiceway.cli.cli`; each is a thin client of the API's versioning routes.
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import quote, urlencode

import click
from rich.table import Table

from .cli import State, _emit, cli, common, out


def _path(dataset: str, tail: str = "", **query: Any) -> str:
    params = {k: v for k, v in query.items() if v is not None and v is not False}
    qs = f"?{urlencode(params)}" if params else ""
    return f"/datasets/{quote(dataset, safe='')}{tail}{qs}"


def _changes(stats: dict[str, int] | None) -> str:
    if not stats:
        return ""
    return f"+{stats['added']:,} -{stats['removed']:,} ~{stats['changed']:,}"


@cli.command()
@click.argument("dataset")
@click.option("--ref", default="main", show_default=True, help="Branch to follow.")
@click.option("--all", "all_commits", is_flag=True, help="Every commit, even those no ref reaches.")
@click.option("--limit", default=100, show_default=True)
@common
@click.pass_obj
def log(state: State, dataset: str, ref: str, all_commits: bool, limit: int) -> None:
    """The commit history of DATASET, newest first, with rows added/removed/changed."""
    with state.client() as client:
        commits = client.call(
            "GET", _path(dataset, "/commits", ref=ref, all=all_commits and "true", limit=limit)
        )["commits"]
    table = Table("commit", "parent", "kind", "rows", "author", "committed", "message")
    table.add_column("changes", no_wrap=True)
    for c in commits:
        table.add_row(
            c["commit_id"][:12],
            (c["parent_commit_id"] or "")[:12],
            c.get("kind", ""),
            f"{c['row_count']:,}",
            c["author"],
            c["committed_at"][:19],
            c["message"],
            _changes(c.get("stats")),
        )
    _emit(state, commits, table)


@cli.command()
@click.argument("dataset")
@click.argument("from_", metavar="[FROM]", required=False)
@click.argument("to", required=False, default="main")
@click.option("--limit", default=100, show_default=True, help="Rows to list (counts are exact).")
@common
@click.pass_obj
def diff(state: State, dataset: str, from_: str | None, to: str, limit: int) -> None:
    """Rows added, removed and changed from FROM to TO (commits, refs or REF@TIME).

    With no FROM, TO's own changes against its parent.
    """
    with state.client() as client:
        result = client.call("GET", _path(dataset, "/diff", to=to, limit=limit, **{"from": from_}))
    if state.json:
        click.echo(json.dumps(result))
        return
    frm = (result["from_commit"] or "nothing")[:12]
    out.print(
        f"{dataset}: {frm} -> {result['to_commit'][:12]}: [green]+{result['added']:,} added[/green], "
        f"[red]-{result['removed']:,} removed[/red], [yellow]~{result['changed']:,} changed[/yellow]"
    )
    table = Table("", "row", "columns", "before", "after")
    for r in result["rows"]:
        table.add_row(
            {"added": "+", "removed": "-", "changed": "~"}[r["op"]],
            r["logical_row_id"],
            ", ".join(r["changed_columns"] or []),
            json.dumps(r["before"], ensure_ascii=False)[:80] if r["before"] else "",
            json.dumps(r["after"], ensure_ascii=False)[:80] if r["after"] else "",
        )
    if result["rows"]:
        out.print(table)
    if result["truncated"]:
        out.print(f"(first {len(result['rows']):,} rows; --limit for more)")


@cli.command()
@click.argument("dataset")
@click.option("--commit", help="Commit id, ref, REF@TIME or an ISO time (default: main).")
@click.option("--offset", default=0, show_default=True)
@click.option("--limit", default=20, show_default=True)
@common
@click.pass_obj
def rows(state: State, dataset: str, commit: str | None, offset: int, limit: int) -> None:
    """Rows of DATASET at any commit, ref or time."""
    with state.client() as client:
        page = client.call(
            "GET", _path(dataset, "/rows", commit=commit, offset=offset, limit=limit)
        )
    table = Table("row", *page["columns"])
    for r in page["rows"]:
        table.add_row(r["logical_row_id"], *[str(r["data"].get(c, "")) for c in page["columns"]])
    _emit(state, page, table)


@cli.command()
@click.argument("dataset")
@click.argument("branch", required=False)
@click.option("--from", "start", help="Where it starts: commit, ref or time (default: main).")
@click.option("--delete", is_flag=True, help="Delete BRANCH instead.")
@common
@click.pass_obj
def branch(state: State, dataset: str, branch: str | None, start: str | None, delete: bool) -> None:
    """Create BRANCH of DATASET, delete it, or list the refs with no BRANCH."""
    with state.client() as client:
        if branch is None:
            refs = client.call("GET", _path(dataset, "/refs"))["refs"]
            table = Table("ref", "commit", "updated")
            for r in refs:
                table.add_row(r["name"], r["commit_id"][:12], r["updated_at"][:19])
            _emit(state, refs, table)
        elif delete:
            done = client.call("DELETE", _path(dataset, f"/refs/{quote(branch, safe='')}"))
            _emit(state, done, f"deleted {branch}")
        else:
            ref = client.call("POST", _path(dataset, "/refs"), {"name": branch, "start": start})
            _emit(state, ref, f"{branch} -> {ref['commit_id'][:12]}")


@cli.command()
@click.argument("dataset")
@click.option("--to", "to", required=True, help="Commit, ref or time to move the ref to.")
@click.option("--ref", default="main", show_default=True)
@common
@click.pass_obj
def reset(state: State, dataset: str, to: str, ref: str) -> None:
    """Move a ref of DATASET back (or forward); the commits it leaves stay in `log --all`."""
    with state.client() as client:
        moved = client.call("PUT", _path(dataset, f"/refs/{quote(ref, safe='')}"), {"to": to})
    _emit(state, moved, f"{ref} -> {moved['commit_id'][:12]}")


@cli.command()
@click.argument("dataset")
@click.argument("commit")
@click.option("--ref", default="main", show_default=True)
@common
@click.pass_obj
def revert(state: State, dataset: str, commit: str, ref: str) -> None:
    """A new commit on REF that undoes COMMIT."""
    with state.client() as client:
        made = client.call("POST", _path(dataset, "/revert"), {"commit": commit, "ref": ref})
    if made.get("unchanged"):
        _emit(state, made, "nothing to revert: no commit made")
    else:
        _emit(state, made, f"reverted: commit {made['commit_id'][:12]} {_changes(made['changes'])}")


@cli.command()
@click.argument("dataset")
@click.argument("source")
@click.option("--into", default="main", show_default=True)
@common
@click.pass_obj
def merge(state: State, dataset: str, source: str, into: str) -> None:
    """Merge branch SOURCE into INTO (fast-forward, or three-way; conflicts are refused)."""
    with state.client() as client:
        done = client.call("POST", _path(dataset, "/merge"), {"source": source, "into": into})
    _emit(state, done, f"{done['result']}: {into} -> {done['commit_id'][:12]}")


@cli.command()
@click.argument("dataset")
@click.option("--keep", type=int, help="Commits to keep behind each ref.")
@click.option("--keep-since", help="Keep commits made since this ISO time.")
@common
@click.pass_obj
def gc(state: State, dataset: str, keep: int | None, keep_since: str | None) -> None:
    """Drop DATASET's commits no ref keeps, and every row no commit uses."""
    with state.client() as client:
        done = client.call("POST", _path(dataset, "/gc"), {"keep": keep, "keep_since": keep_since})
    _emit(
        state,
        done,
        f"dropped {done['commits_dropped']} commit(s), {done['rows_deleted']:,} row(s), "
        f"{done['leaves_deleted']:,} leaves",
    )
