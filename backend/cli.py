"""The `jsonsnap` command: parse options, call one library function, translate errors.

Library errors become click errors here and nowhere else: `BadInput` is a usage
error (exit 2), every other `JsonsnapError` a plain failure (exit 1). Neither
prints a traceback.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from typing import Any

import click
import orjson

from backend.codec import dumps_exact, parse_row_exact
from backend.config import Settings, format_timestamp, mask_url
from backend.db import make_engine
from backend.diff import describe_diff
from backend.errors import BadInput, JsonsnapError
from backend.export import ExportResult, export_snapshot
from backend.repo import SnapshotRepo, init_repo
from backend.restore import RestoreResult, describe_preview, restore_snapshot
from backend.schedule import cron_line, install, remove
from backend.snapshot import Snapshot, diff_snapshots, list_snapshots, resolve_snapshot
from backend.verify import verify_snapshot


class _Group(click.Group):
    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except BadInput as exc:
            # No context: the message alone, on one line, still with exit code 2.
            raise click.UsageError(str(exc)) from None
        except JsonsnapError as exc:
            raise click.ClickException(str(exc)) from None
        except BrokenPipeError:
            # `jsonsnap show ... | head`: the reader left, which is not an error.
            sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - for the interpreter's final flush
            sys.exit(0)
        except OSError as exc:
            raise click.ClickException(
                f"{exc.strerror or exc}: {exc.filename or ''}".rstrip(": ")
            ) from None


def _db_option(func: Callable[..., Any]) -> Callable[..., Any]:
    return click.option(
        "--db",
        "db",
        envvar="DATABASE_URL",
        metavar="URL",
        help="Database URL [env DATABASE_URL; default sqlite:///data/app.db].",
    )(func)


def _repo_option(func: Callable[..., Any]) -> Callable[..., Any]:
    return click.option(
        "--repo",
        "repo",
        envvar="JSONSNAP_REPO",
        metavar="PATH",
        help="Snapshot git repository [env JSONSNAP_REPO; default snapshots].",
    )(func)


def _lock_timeout_option(func: Callable[..., Any]) -> Callable[..., Any]:
    return click.option(
        "--lock-timeout",
        type=click.FloatRange(min=0),
        default=600,
        show_default=True,
        metavar="SECONDS",
        help="How long to wait for a running export or restore to finish.",
    )(func)


@click.group(cls=_Group)
@click.version_option(package_name="jsonsnap")
def main() -> None:
    """Keep a database's history in git as deterministic, sorted JSON."""


@main.command()
@_repo_option
def init(repo: str | None) -> None:
    """Create the snapshot git repository if it is missing."""
    path = Settings.resolve(repo=repo).repo_path
    existed = (path / ".git").exists()
    init_repo(path).close()
    click.echo(f"snapshot repository {'already exists' if existed else 'created'} at {path}")


@main.command()
@_db_option
@_repo_option
@click.option(
    "--schema", metavar="NAME", help="Schema to export (PostgreSQL); default: the default schema."
)
@click.option(
    "--table", "tables", multiple=True, metavar="T", help="Export only this table (repeatable)."
)
@click.option(
    "--exclude-table",
    "exclude_tables",
    multiple=True,
    metavar="T",
    help="Skip this table (repeatable).",
)
@click.option(
    "--exclude-column",
    "exclude_columns",
    multiple=True,
    metavar="TABLE.COLUMN",
    help="Leave this column out of the snapshot, e.g. for secrets (repeatable).",
)
@click.option("--timestamp", metavar="ISO8601", help="Snapshot time, for backfills; default now.")
@_lock_timeout_option
@click.option("--push", is_flag=True, help="Push to the remote afterwards (see `jsonsnap remote`).")
@click.option("--quiet", "-q", is_flag=True, help="No progress bars and no summary; errors only.")
def export(
    db: str | None,
    repo: str | None,
    schema: str | None,
    tables: tuple[str, ...],
    exclude_tables: tuple[str, ...],
    exclude_columns: tuple[str, ...],
    timestamp: str | None,
    lock_timeout: float,
    push: bool,
    quiet: bool,
) -> None:
    """Export every table into the snapshot repository; commit only if something changed."""
    settings = Settings.resolve(db=db, repo=repo)
    bars = _ProgressBars() if not quiet and sys.stderr.isatty() else None
    try:
        result = export_snapshot(
            make_engine(settings.database_url),
            settings.repo_path,
            schema=schema,
            tables=tables,
            exclude_tables=exclude_tables,
            exclude_columns=exclude_columns,
            timestamp=timestamp,
            lock_timeout=lock_timeout,
            progress=bars,
            push=push,
        )
    finally:
        if bars:
            bars.close()
    if not quiet:
        _report(result)
    if result.push_error:
        click.echo(
            f"warning: {result.push_error}; the snapshot is kept locally "
            "and the next push carries it",
            err=True,
        )


def _report(result: ExportResult) -> None:
    if result.commit is None:
        click.echo("no changes")
        return
    changes = "; ".join(f"{name} {c.describe()}" for name, c in result.summary.items())
    click.echo(
        f"committed {result.commit[:10]} snapshot {result.timestamp}: {changes or 'no row changes'}"
    )


class _ProgressBars:
    """One click progress bar per table, on stderr."""

    def __init__(self) -> None:
        self.table: str | None = None
        self.bar: Any = None
        self.done = 0

    def __call__(self, table: str, done: int, total: int) -> None:
        if table != self.table:
            self.close()
            self.table, self.done = table, 0
            self.bar = click.progressbar(length=total or 1, label=table, file=sys.stderr)
            self.bar.__enter__()
        self.bar.update(done - self.done)
        self.done = done

    def close(self) -> None:
        if self.bar is not None:
            self.bar.__exit__(None, None, None)
            self.bar = None


@main.command()
@_db_option
@click.option(
    "--materials",
    default=300,
    show_default=True,
    type=click.IntRange(min=1),
    help="How many materials.",
)
@click.option("--force", is_flag=True, help="Replace the demo tables even if they hold data.")
def demo(db: str | None, materials: int, force: bool) -> None:
    """Create the app's schema and fill it with deterministic demo data."""
    from backend.demo import create_demo  # noqa: PLC0415 - the ORM loads only for the demo

    settings = Settings.resolve(db=db)
    engine = make_engine(settings.database_url, create=True)
    count = create_demo(engine, materials=materials, force=force)
    click.echo(f"demo data written: {count} materials")


def _dumps(value: Any) -> str:
    return dumps_exact(value, orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS)


@main.command()
@_repo_option
@click.option("--table", metavar="T", help="Only the snapshots that changed this table.")
@click.option("--json", "as_json", is_flag=True, help="One JSON array, for scripts.")
def log(repo: str | None, table: str | None, as_json: bool) -> None:
    """List the snapshots, newest first, with the rows added, deleted and changed."""
    infos = list_snapshots(Settings.resolve(repo=repo).repo_path, table=table)
    if as_json:
        click.echo(_dumps([info.as_dict() for info in infos]))
        return
    for info in infos:
        stamp = format_timestamp(info.time)
        subject = info.subject.removeprefix(f"snapshot {stamp}: ")
        click.echo(f"{stamp}  {info.commit[:10]}  {subject}")


def _snapshot_spec(date: str | None, commit: str | None) -> str:
    if (date is None) == (commit is None):
        raise BadInput("give exactly one of --date and --commit")
    return date or commit or ""


@main.command()
@_repo_option
@click.option(
    "--date", metavar="D", help="YYYY-MM-DD (last snapshot that day) or an ISO 8601 time."
)
@click.option("--commit", metavar="C", help="A commit id or git revision.")
@click.option("--table", metavar="T", help="Print this table's rows.")
@click.option("--json", "as_json", is_flag=True, help="JSON output, for scripts.")
def show(
    repo: str | None, date: str | None, commit: str | None, table: str | None, as_json: bool
) -> None:
    """Print a past snapshot: its tables with row counts, or one table's rows."""
    with SnapshotRepo.open(Settings.resolve(repo=repo).repo_path) as snapshots:
        _show(resolve_snapshot(snapshots, _snapshot_spec(date, commit)), table, as_json)


def _show(snapshot: Snapshot, table: str | None, as_json: bool) -> None:
    if table is None:
        counts = {name: entry.rows for name, entry in sorted(snapshot.manifest.tables.items())}
        if as_json:
            click.echo(
                _dumps(
                    {
                        "commit": snapshot.commit,
                        "time": format_timestamp(snapshot.time),
                        "tables": counts,
                    }
                )
            )
            return
        click.echo(f"snapshot {snapshot.commit[:10]} {format_timestamp(snapshot.time)}")
        for name, count in counts.items():
            click.echo(f"{count:>10}  {name}")
        return
    # Parsed exactly, so a JSON column's 12.50 prints as 12.50; streamed, so a
    # large table never has to fit in memory.
    rows = (parse_row_exact(raw) for raw in snapshot.encoded_rows(snapshot.table(table)))
    if not as_json:
        for row in rows:
            click.echo(dumps_exact(row, orjson.OPT_SORT_KEYS))
        return
    count = 0
    for count, row in enumerate(rows, 1):
        click.echo(
            ("[" if count == 1 else ",") + "\n  " + _dumps(row).replace("\n", "\n  "), nl=False
        )
    click.echo("\n]" if count else "[]")


@main.command()
@_db_option
@_repo_option
@click.argument("old", metavar="FROM")
@click.argument("new", metavar="[TO]", default="HEAD")
@click.option("--table", "tables", multiple=True, metavar="T", help="Only this table (repeatable).")
@click.option("--json", "as_json", is_flag=True, help="JSON output, for scripts.")
def diff(
    db: str | None,
    repo: str | None,
    old: str,
    new: str,
    tables: tuple[str, ...],
    as_json: bool,
) -> None:
    """Row-level differences between two snapshots; `db` names the live database.

    FROM and TO are dates, ISO 8601 times, commits, or `db`; TO defaults to the
    newest snapshot. `jsonsnap diff HEAD db` is what changed since the last export.
    """
    settings = Settings.resolve(db=db, repo=repo)
    engine = make_engine(settings.database_url) if "db" in (old, new) else None
    result = diff_snapshots(settings.repo_path, old, new, engine=engine, tables=tables)
    if as_json:
        click.echo(_dumps(result.as_dict()))
        return
    click.echo(f"from {result.old} to {result.new}")
    for line in describe_diff(result.tables) or ["no differences"]:
        click.echo(line)


@main.command()
@_db_option
@_repo_option
@click.option(
    "--date", metavar="D", help="YYYY-MM-DD (last snapshot that day) or an ISO 8601 time."
)
@click.option("--commit", metavar="C", help="A commit id or git revision.")
@click.option(
    "--table", "tables", multiple=True, metavar="T", help="Restore only this table (repeatable)."
)
@click.option("--dry-run", is_flag=True, help="Show what would change, and stop.")
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")
@click.option("--create-tables", is_flag=True, help="Create tables missing from the database.")
@click.option(
    "--ignore-missing-columns",
    is_flag=True,
    help="Restore without snapshot columns the database lacks.",
)
@_lock_timeout_option
def restore(
    db: str | None,
    repo: str | None,
    date: str | None,
    commit: str | None,
    tables: tuple[str, ...],
    dry_run: bool,
    yes: bool,
    create_tables: bool,
    ignore_missing_columns: bool,
    lock_timeout: float,
) -> None:
    """Load a past snapshot back into the database, in one transaction.

    The current state is committed first, so every restore can be undone by
    another restore; the restored state is committed after.
    """
    settings = Settings.resolve(db=db, repo=repo)
    result = restore_snapshot(
        make_engine(settings.database_url, create=create_tables),
        settings.repo_path,
        _snapshot_spec(date, commit),
        tables=tables,
        dry_run=dry_run,
        confirm=lambda preview: _confirm(preview, yes),
        create_tables=create_tables,
        ignore_missing_columns=ignore_missing_columns,
        lock_timeout=lock_timeout,
    )
    if dry_run:
        click.echo("\n".join(describe_preview(result)))
        click.echo("dry run: nothing changed")
        return
    if not result.applied:
        raise click.ClickException("restore cancelled: nothing changed")
    loaded = ", ".join(f"{name} {count}" for name, count in result.rows.items())
    click.echo(f"restored rows: {loaded}")
    if result.safety_commit:
        click.echo(f"safety snapshot of the state before: {result.safety_commit[:10]}")
    if result.restore_commit:
        click.echo(f"recorded as {result.restore_commit[:10]}")
    if result.undo:
        click.echo(f"undo with: jsonsnap restore --commit {result.undo[:10]}")


def _confirm(result: RestoreResult, yes: bool) -> bool:
    click.echo("\n".join(describe_preview(result)))
    if yes:
        return True
    if not sys.stdin.isatty():
        raise BadInput("no terminal to confirm on: pass --yes to restore, or --dry-run to preview")
    return click.confirm("Restore the database to this snapshot?", default=False)


@main.group()
def remote() -> None:
    """The off-site copy: where `export --push` sends the snapshots."""


@remote.command("set")
@_repo_option
@click.argument("url")
def remote_set(repo: str | None, url: str) -> None:
    """Set the remote (git URL or path) that `export --push` pushes to."""
    with init_repo(Settings.resolve(repo=repo).repo_path) as snapshots:
        snapshots.set_remote(url)
    click.echo(f"remote set to {mask_url(url)}")


@main.command()
@_db_option
@_repo_option
@click.option("--no-db", is_flag=True, help="Check the repository only, not the database.")
@click.option("--json", "as_json", is_flag=True, help="JSON output, for scripts.")
def verify(db: str | None, repo: str | None, no_db: bool, as_json: bool) -> None:
    """Check HEAD against its manifest, run git fsck, and compare with the database.

    Exit codes: 0 all good, 3 the database drifted from HEAD, 4 the repository
    is corrupt (1 a failure such as an unreachable database, 2 bad input).
    """
    settings = Settings.resolve(db=db, repo=repo)
    engine = None if no_db else make_engine(settings.database_url)
    report = verify_snapshot(settings.repo_path, engine)
    if as_json:
        click.echo(_dumps(report.as_dict()))
    else:
        click.echo(f"snapshot {report.commit[:10] if report.commit else '(none)'}: {report.status}")
        for problem in report.problems:
            click.echo(f"  corrupt: {problem}")
        for name, change in report.drift.items():
            click.echo(f"  drift: {name} {change.describe()}")
    sys.exit(report.exit_code)


@main.command()
@click.argument("action", type=click.Choice(["print", "install", "remove"]))
@click.option("--at", default="02:00", show_default=True, metavar="HH:MM", help="Time of day.")
def schedule(action: str, at: str) -> None:
    """Print, install or remove the daily export's crontab line."""
    if action == "print":
        click.echo(cron_line(at))
    elif action == "install":
        click.echo(f"installed: {install(at)}")
    else:
        click.echo("removed" if remove() else "no jsonsnap line was installed")


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=8000, show_default=True, type=click.IntRange(1, 65535))
def serve(host: str, port: int) -> None:
    """Run the admin and materials API (needs the `api` extra: FastAPI and uvicorn)."""
    try:
        import uvicorn  # noqa: PLC0415 - optional extra, loaded only here

        from backend.main import app  # noqa: PLC0415
    except ImportError:
        raise click.ClickException(
            "the API needs FastAPI and uvicorn: pip install 'jsonsnap[api]'"
        ) from None
    uvicorn.run(app, host=host, port=port)
