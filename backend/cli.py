"""The `jsonsnap` command: parse options, call one library function, translate errors.

Library errors become click errors here and nowhere else: `BadInput` is a usage
error (exit 2), every other `JsonsnapError` a plain failure (exit 1). Neither
prints a traceback.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

import click

from backend.config import Settings
from backend.db import make_engine
from backend.demo import create_demo
from backend.errors import BadInput, JsonsnapError
from backend.export import ExportResult, export_snapshot
from backend.repo import init_repo


class _Group(click.Group):
    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except BadInput as exc:
            raise click.UsageError(str(exc), ctx) from None
        except JsonsnapError as exc:
            raise click.ClickException(str(exc)) from None
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
    init_repo(path)
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
@click.option(
    "--lock-timeout",
    type=click.FloatRange(min=0),
    default=600,
    show_default=True,
    metavar="SECONDS",
    help="How long to wait for another export or restore to finish.",
)
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
        )
    finally:
        if bars:
            bars.close()
    if not quiet:
        _report(result)


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
    settings = Settings.resolve(db=db)
    count = create_demo(make_engine(settings.database_url), materials=materials, force=force)
    click.echo(f"demo data written: {count} materials")
